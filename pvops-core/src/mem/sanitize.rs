//! A loader's memory map as given (unsorted, overlapping, empty entries) made into a
//! [`MemoryMap`] as Linux's `sanitize_e820_map` does, and a map with reservations cut out.

use super::{MemoryMap, MemoryMapError, RegionKind, Reservations};
use crate::addr::PhysAddr;

/// Most entries [`MemoryMap::sanitized`] takes from a firmware or loader map (Linux's
/// `E820_MAX_ENTRIES_ZEROPAGE`).
pub const MAX_RAW_ENTRIES: usize = 128;

/// One entry of a firmware or loader memory map, as given: maybe unsorted, maybe
/// overlapping others, maybe empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the loader says it is.
    pub kind: RegionKind,
}

impl MemoryMap {
    /// The map of `entries` sanitised as Linux's `sanitize_e820_map` does: sorted, empty
    /// entries dropped, a byte claimed by both a usable and a reserved entry reserved,
    /// touching regions of one kind merged. Refuses a wrapping entry, more than
    /// [`MAX_RAW_ENTRIES`] entries, or a result of more than [`super::MAX_REGIONS`] regions.
    pub fn sanitized(entries: &[RawRegion]) -> Result<MemoryMap, MemoryMapError> {
        if entries.len() > MAX_RAW_ENTRIES {
            return Err(MemoryMapError::TooManyRegions);
        }
        let mut points = [0u64; 2 * MAX_RAW_ENTRIES];
        let mut n = 0;
        for e in entries.iter().filter(|e| e.len != 0) {
            let end = e.start.checked_add(e.len).ok_or(MemoryMapError::Wraps {
                start: PhysAddr::new(e.start),
                len: e.len,
            })?;
            points[n] = e.start;
            points[n + 1] = end;
            n += 2;
        }
        let points = &mut points[..n];
        points.sort_unstable();
        let mut map = MemoryMap::new();
        for w in points.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            if lo == hi {
                continue;
            }
            let mut kind = None;
            for e in entries
                .iter()
                .filter(|e| e.len != 0 && e.start <= lo && hi <= e.start + e.len)
            {
                // The stronger claim wins: reserved over usable RAM.
                let rank = |k: RegionKind| match k {
                    RegionKind::Usable => 0,
                    RegionKind::Reserved => 1,
                };
                kind = Some(match kind {
                    Some(k) if rank(k) >= rank(e.kind) => k,
                    _ => e.kind,
                });
            }
            let Some(kind) = kind else { continue };
            match map.len.checked_sub(1).map(|i| &mut map.regions[i]) {
                Some(last) if last.kind == kind && last.end() == lo => last.len += hi - lo,
                _ => map.add(PhysAddr::new(lo), hi - lo, kind)?,
            }
        }
        Ok(map)
    }

    /// This map with `reserved` taken out of its usable regions (what the frame allocator may
    /// hand out). Reserved pieces are dropped, not listed.
    pub fn without(&self, reserved: &Reservations) -> Result<MemoryMap, MemoryMapError> {
        let mut out = MemoryMap::new();
        for r in self.usable() {
            let mut start = r.start.as_u64();
            let end = r.end();
            // Cut at each reservation, in address order (the list is kept sorted).
            for cut in reserved.iter() {
                let (cs, ce) = (cut.start.as_u64().max(start), cut.end.min(end));
                if cs >= ce {
                    continue;
                }
                if cs > start {
                    out.add(PhysAddr::new(start), cs - start, RegionKind::Usable)?;
                }
                start = ce;
            }
            if start < end {
                out.add(PhysAddr::new(start), end - start, RegionKind::Usable)?;
            }
        }
        Ok(out)
    }
}

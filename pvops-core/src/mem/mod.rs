//! The physical memory map: regions, sanitising a loader's map ([`MemoryMap::sanitized`]), and
//! the loader's data kept from the frame allocator ([`Reservations`], cut out of the map's usable
//! regions by [`MemoryMap::without`]). (The frame allocator is [`crate::frame_alloc`],
//! re-exported here.)

mod reservations;
mod sanitize;

pub use reservations::{Reservation, Reservations, ReserveError, MAX_RESERVATIONS};
pub use sanitize::{RawRegion, MAX_RAW_ENTRIES};

use crate::addr::{FrameRange, PhysAddr, PhysFrame, PAGE_SIZE};
use core::fmt;

pub use crate::frame_alloc::{AllocError, FrameAlloc, FrameAllocator, TABLE_BITMAP_FRAMES};

/// Most regions a [`MemoryMap`] holds (Linux's `E820_MAX_ENTRIES_ZEROPAGE`).
pub const MAX_REGIONS: usize = 128;

/// What a memory region is, as the machine's memory map says: RAM or not. (What the loader
/// put into RAM is not a kind of region: it is a [`Reservation`] of the boot information,
/// named for its `mem: reserved` line and cut out only of what the allocator may hand out.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM: the direct map covers it, and the allocator hands out what no reservation holds.
    Usable,
    /// Anything else (firmware, ACPI, MMIO holes).
    Reserved,
}

impl RegionKind {
    /// True for RAM: what the direct map covers.
    pub const fn is_ram(self) -> bool {
        matches!(self, RegionKind::Usable)
    }
    /// The word the banner prints.
    pub const fn name(self) -> &'static str {
        match self {
            RegionKind::Usable => "usable",
            RegionKind::Reserved => "reserved",
        }
    }
}

/// One region of pseudo-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: PhysAddr,
    /// Length in bytes (non-zero).
    pub len: u64,
    /// What it is.
    pub kind: RegionKind,
}

impl MemoryRegion {
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.start.as_u64() + self.len
    }
}

/// Why a memory map was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMapError {
    /// More than [`MAX_REGIONS`] entries.
    TooManyRegions,
    /// A region of length 0.
    EmptyRegion {
        /// Its start.
        start: PhysAddr,
    },
    /// `start + len` wraps past 2^64.
    Wraps {
        /// Its start.
        start: PhysAddr,
        /// Its length.
        len: u64,
    },
    /// Two regions overlap.
    Overlap {
        /// Start of the region already in the map.
        first: PhysAddr,
        /// Start of the region that overlaps it.
        second: PhysAddr,
    },
}

impl fmt::Display for MemoryMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRegions => write!(f, "memory map has more than {MAX_REGIONS} regions"),
            Self::EmptyRegion { start } => write!(f, "memory region at {start} has length 0"),
            Self::Wraps { start, len } => write!(f, "memory region {start}+{len:#x} wraps"),
            Self::Overlap { first, second } => {
                write!(f, "memory regions at {first} and {second} overlap")
            }
        }
    }
}

/// A validated memory map: no empty, wrapping or overlapping regions, kept sorted by start.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    regions: [MemoryRegion; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> MemoryMap {
        MemoryMap {
            regions: [MemoryRegion {
                start: PhysAddr::new(0),
                len: 0,
                kind: RegionKind::Reserved,
            }; MAX_REGIONS],
            len: 0,
        }
    }

    /// Adds a region, refusing empty, wrapping and overlapping ones.
    pub fn add(
        &mut self,
        start: PhysAddr,
        len: u64,
        kind: RegionKind,
    ) -> Result<(), MemoryMapError> {
        if len == 0 {
            return Err(MemoryMapError::EmptyRegion { start });
        }
        let end = start
            .as_u64()
            .checked_add(len)
            .ok_or(MemoryMapError::Wraps { start, len })?;
        if self.len == MAX_REGIONS {
            return Err(MemoryMapError::TooManyRegions);
        }
        if let Some(r) = self
            .regions()
            .iter()
            .find(|r| start.as_u64() < r.end() && r.start.as_u64() < end)
        {
            return Err(MemoryMapError::Overlap {
                first: r.start,
                second: start,
            });
        }
        let at = self
            .regions()
            .iter()
            .position(|r| r.start.as_u64() > start.as_u64())
            .unwrap_or(self.len);
        self.regions.copy_within(at..self.len, at + 1);
        self.regions[at] = MemoryRegion { start, len, kind };
        self.len += 1;
        Ok(())
    }

    /// The regions, sorted by start.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.len]
    }

    /// The usable regions.
    pub fn usable(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
    }

    /// Total usable bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.usable().map(|r| r.len).sum()
    }

    /// Total usable bytes below `limit`.
    pub fn usable_bytes_below(&self, limit: u64) -> u64 {
        self.usable()
            .map(|r| r.end().min(limit).saturating_sub(r.start.as_u64()))
            .sum()
    }

    /// RAM bytes below `limit`: what the direct map covers.
    pub fn ram_bytes_below(&self, limit: u64) -> u64 {
        self.ram()
            .map(|r| r.end().min(limit).saturating_sub(r.start.as_u64()))
            .sum()
    }

    /// The RAM regions, sorted by start.
    pub fn ram(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.regions().iter().filter(|r| r.kind.is_ram())
    }

    /// Whole RAM frames, clipped to `[0, limit)`, with adjacent regions joined: what the direct
    /// map covers (loader data included: reservations do not change the map). Memory beyond
    /// what a [`PhysFrame`] can number (frame 2^32 - 1 and up) is left out.
    pub fn ram_frames_below(&self, limit: u64) -> impl Iterator<Item = FrameRange> + '_ {
        let regions = self.regions();
        let mut i = 0;
        core::iter::from_fn(move || {
            while i < regions.len() && !regions[i].kind.is_ram() {
                i += 1;
            }
            let first = regions.get(i)?;
            let (start, mut end) = (first.start.as_u64(), first.end());
            i += 1;
            while i < regions.len() && regions[i].kind.is_ram() && regions[i].start.as_u64() == end
            {
                end = regions[i].end();
                i += 1;
            }
            Some((start, end))
        })
        .filter_map(move |(start, end)| {
            let s = start.div_ceil(PAGE_SIZE);
            let e = (end.min(limit) / PAGE_SIZE).min(u32::MAX as u64);
            (s < e).then_some(FrameRange {
                start: PhysFrame::new(s as u32),
                end: PhysFrame::new(e as u32),
            })
        })
    }

    /// Whole usable frames, clipped to `[0, limit)`, region by region: what the allocator may
    /// hand out. Memory beyond what a [`PhysFrame`] can number (frame 2^32 - 1 and up,
    /// 16 TiB) is left out.
    pub fn usable_frames_below(&self, limit: u64) -> impl Iterator<Item = FrameRange> + '_ {
        self.usable().filter_map(move |r| {
            let start = r.start.as_u64().div_ceil(PAGE_SIZE);
            let end = (r.end().min(limit) / PAGE_SIZE).min(u32::MAX as u64);
            (start < end).then_some(FrameRange {
                start: PhysFrame::new(start as u32),
                end: PhysFrame::new(end as u32),
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;

    /// The test map: usable RAM at 0..0x9f000 and 0x100000..0x800000 (also the frame
    /// allocator's tests' map).
    pub(crate) fn map() -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(PhysAddr::new(0x10_0000), 0x70_0000, RegionKind::Usable)
            .unwrap();
        m.add(PhysAddr::new(0), 0x9_f000, RegionKind::Usable)
            .unwrap();
        m
    }

    /// The map's regions as (start, end, kind).
    fn spans(m: &MemoryMap) -> std::vec::Vec<(u64, u64, RegionKind)> {
        m.regions()
            .iter()
            .map(|r| (r.start.as_u64(), r.end(), r.kind))
            .collect()
    }

    #[test]
    fn map_validation() {
        let mut m = map();
        assert_eq!(m.regions()[0].start, PhysAddr::new(0));
        assert_eq!(
            m.add(PhysAddr::new(0x20_0000), 0x1000, RegionKind::Reserved),
            Err(MemoryMapError::Overlap {
                first: PhysAddr::new(0x10_0000),
                second: PhysAddr::new(0x20_0000)
            })
        );
        assert_eq!(
            m.add(PhysAddr::new(u64::MAX - 1), 4, RegionKind::Usable),
            Err(MemoryMapError::Wraps {
                start: PhysAddr::new(u64::MAX - 1),
                len: 4
            })
        );
        assert_eq!(
            m.add(PhysAddr::new(0xa0000), 0, RegionKind::Usable),
            Err(MemoryMapError::EmptyRegion {
                start: PhysAddr::new(0xa0000)
            })
        );
        assert_eq!(m.usable_bytes_below(0x20_0000), 0x9_f000 + 0x10_0000);
    }

    /// Found by `cargo xtask fuzz` (memory_map): a usable region above 16 TiB had its frame
    /// numbers truncated to 32 bits, so the allocator handed out frames 0.. of low memory.
    #[test]
    fn frames_beyond_u32_are_left_out() {
        let mut m = MemoryMap::new();
        m.add(PhysAddr::new(1 << 44), 0x4000, RegionKind::Usable)
            .unwrap();
        m.add(
            PhysAddr::new((1 << 44) - 0x2000),
            0x2000,
            RegionKind::Usable,
        )
        .unwrap();
        let want = [FrameRange {
            start: PhysFrame::new(u32::MAX - 1),
            end: PhysFrame::new(u32::MAX),
        }];
        assert_eq!(
            m.usable_frames_below(u64::MAX)
                .collect::<std::vec::Vec<_>>(),
            want
        );
        assert_eq!(
            m.ram_frames_below(u64::MAX).collect::<std::vec::Vec<_>>(),
            want
        );
    }

    fn raw(start: u64, len: u64, kind: RegionKind) -> RawRegion {
        RawRegion { start, len, kind }
    }

    #[test]
    fn sanitize_like_linux() {
        use RegionKind::{Reserved as R, Usable as U};
        // Unsorted, overlapping, an empty entry, touching usable pieces, a reserved hole
        // inside usable RAM: the result is sorted, reserved wins, usable pieces merge.
        let m = MemoryMap::sanitized(&[
            raw(0x10_0000, 0x70_0000, U),
            raw(0, 0x9_fc00, U),
            raw(0x9_f000, 0x1000, R),
            raw(0x40_0000, 0x1000, R),
            raw(0x80_0000, 0x10_0000, U),
            raw(0x5000, 0, R),
            raw(0x20_0000, 0x10_0000, U),
        ])
        .unwrap();
        let got = spans(&m);
        assert_eq!(
            got,
            [
                (0, 0x9_f000, U),
                (0x9_f000, 0xa_0000, R),
                (0x10_0000, 0x40_0000, U),
                (0x40_0000, 0x40_1000, R),
                (0x40_1000, 0x90_0000, U),
            ]
        );
        assert_eq!(
            MemoryMap::sanitized(&[raw(u64::MAX - 1, 4, U)]).unwrap_err(),
            MemoryMapError::Wraps {
                start: PhysAddr::new(u64::MAX - 1),
                len: 4
            }
        );
        let many = [raw(0, 0x1000, U); MAX_RAW_ENTRIES + 1];
        assert_eq!(
            MemoryMap::sanitized(&many).unwrap_err(),
            MemoryMapError::TooManyRegions
        );
    }

    #[test]
    fn reservations_are_cut_out() {
        let m = map();
        let mut res = Reservations::new();
        res.add("module", PhysAddr::new(0x30_0800), 0x2000).unwrap();
        res.add("info", PhysAddr::new(0x9000), 0x74).unwrap();
        res.add("nothing", PhysAddr::new(0x9000), 0).unwrap();
        assert_eq!(res.len(), 2);
        let free = m.without(&res).unwrap();
        let frames: std::vec::Vec<FrameRange> = free.usable_frames_below(u64::MAX).collect();
        let f = |s, e| FrameRange {
            start: PhysFrame::new(s),
            end: PhysFrame::new(e),
        };
        // The partly reserved frames (0x9, 0x300, 0x302) are not handed out either.
        assert_eq!(
            frames,
            [f(0, 9), f(0xa, 0x9f), f(0x100, 0x300), f(0x303, 0x800)]
        );
        // The map itself is unchanged: the direct map covers the loader's data as any RAM.
        assert_eq!(spans(&m), spans(&map()));
        // A range straddling the end of RAM into a hole is cut where it is RAM; one in the
        // hole changes nothing.
        res.add("straddles", PhysAddr::new(0x9_e000), 0x4000)
            .unwrap();
        res.add("hole", PhysAddr::new(0xa_0000), 0x1000).unwrap();
        let free = m.without(&res).unwrap();
        use RegionKind::Usable;
        assert_eq!(
            spans(&free),
            [
                (0, 0x9000, Usable),
                (0x9074, 0x9_e000, Usable),
                (0x10_0000, 0x30_0800, Usable),
                (0x30_2800, 0x80_0000, Usable),
            ]
        );
        assert_eq!(
            res.add("wraps", PhysAddr::new(u64::MAX), 2),
            Err(ReserveError::Wraps {
                what: "wraps",
                start: PhysAddr::new(u64::MAX)
            })
        );
    }
}

//! Shared pieces of the fuzz targets: the input formats and the checks every parse result must
//! pass (beyond "no panic"), so a parser that accepts something inconsistent is a crash too.
//!
//! Input formats (all little-endian; `cargo xtask fuzz --capture` writes seeds in them):
//! - `multiboot`, `hvm_start_info`: the address handed over (`mbi`, `start_info`) as `u32`,
//!   then segments of physical memory `addr:u32 len:u16 bytes[len]`
//!   (a last segment shorter than `len` keeps what is there). Reads are answered as the real
//!   boot answers them: the bytes from the address on, fewer where its segment ends, `None`
//!   when no segment holds the address.
//! - `start_info`: `si_va:u32 esp:u32 image_end_pfn:u32`, then the 1112 bytes of start_info
//!   (zero-padded when shorter).
//! - `memory_map`: `first_free_pfn:u32`, then entries `start:u64 len:u64 op:u8`; `op & 3`:
//!   0 add reserved, 1 add usable, 2 add boot data, 3 `reserve` the range (mark boot data).
//! - `cmdline`: the command line's bytes.

use backend_xen::{XenCounters, XenOptions};
use pvops_core::addr::{FrameRange, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::mem::{FrameAllocator, MemoryMap, RegionKind, Reservations};
use pvops_core::options::{BootOptions, IoremapWalk, OptionErrorKind};
use pvops_core::paging::{EntrySlot, Level, PageTableEntry};
use pvops_core::{MemoryLayout, MmuOps};

/// Reads a little-endian u32 at the start of `b`, if there are 4 bytes.
pub fn u32_le(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

/// A physical-memory image made of segments (the `multiboot` input format).
pub struct PhysSegments<'a> {
    /// The address the loader handed over (multiboot: ebx).
    pub entry: u32,
    segments: Vec<(u32, &'a [u8])>,
}

impl<'a> PhysSegments<'a> {
    /// Decodes the format; `None` when the input is shorter than its header.
    pub fn decode(data: &'a [u8]) -> Option<Self> {
        let entry = u32_le(data)?;
        let mut rest = &data[4..];
        let mut segments = Vec::new();
        while rest.len() >= 6 {
            let addr = u32_le(rest)?;
            let len = u16::from_le_bytes([rest[4], rest[5]]) as usize;
            let body = &rest[6..];
            let take = len.min(body.len());
            segments.push((addr, &body[..take]));
            rest = &body[take..];
        }
        Some(PhysSegments { entry, segments })
    }

    /// [`PhysSegments::read`] for readers of 64-bit physical addresses (nothing above 4 GiB).
    pub fn read64(&self, addr: u64, len: usize) -> Option<&'a [u8]> {
        self.read(u32::try_from(addr).ok()?, len)
    }

    /// The bytes from `addr` on, at most `len`, from the segment that holds the most of them
    /// (fewer where it ends, as a real reader stops where mapped memory ends); `None` when no
    /// segment holds `addr`.
    pub fn read(&self, addr: u32, len: usize) -> Option<&'a [u8]> {
        let rest = self
            .segments
            .iter()
            .filter_map(|&(base, bytes)| {
                let off = addr.checked_sub(base)? as usize;
                bytes.get(off..).filter(|r| !r.is_empty())
            })
            .max_by_key(|r| r.len())?;
        Some(&rest[..len.min(rest.len())])
    }
}

/// The invariants [`MemoryMap`] promises, and that everything derived from it stays inside it.
pub fn check_map(map: &MemoryMap) {
    let regions = map.regions();
    for r in regions {
        assert!(r.len > 0, "empty region {r:?}");
        assert!(
            r.start.as_u64().checked_add(r.len).is_some(),
            "wrapping region {r:?}"
        );
    }
    for w in regions.windows(2) {
        assert!(
            w[0].end() <= w[1].start.as_u64(),
            "unsorted or overlapping: {w:?}"
        );
    }
    let usable: u64 = map.usable().map(|r| r.len).sum();
    assert_eq!(map.usable_bytes(), usable);
    let ram: u64 = map.ram().map(|r| r.len).sum();
    for limit in [0, 0x10_0000, 896 << 20, 1 << 32, u64::MAX] {
        assert!(map.ram_bytes_below(limit) <= ram);
        for f in map.ram_frames_below(limit) {
            let (start, end) = (
                f.start.number() as u64 * PAGE_SIZE,
                f.end.number() as u64 * PAGE_SIZE,
            );
            assert!(
                start < end && end <= limit,
                "ram frames {f:?}, limit {limit:#x}"
            );
            // Adjacent RAM regions are joined: every page must lie in some RAM region.
            let mut at = start;
            while at < end {
                let r = map
                    .ram()
                    .find(|r| r.start.as_u64() <= at && at < r.end())
                    .unwrap_or_else(|| panic!("ram frames {f:?} leave RAM at {at:#x}"));
                at = r.end().min(end);
            }
        }
        let below = map.usable_bytes_below(limit);
        assert!(below <= usable);
        for f in map.usable_frames_below(limit) {
            let (start, end) = (
                f.start.number() as u64 * PAGE_SIZE,
                f.end.number() as u64 * PAGE_SIZE,
            );
            assert!(start < end, "empty frame range {f:?}");
            assert!(end <= limit, "frames {f:?} beyond the limit {limit:#x}");
            assert!(
                map.usable()
                    .any(|r| r.start.as_u64() <= start && end <= r.end()),
                "frames {f:?} are not inside a usable region of {regions:?}"
            );
        }
    }
}

/// The frame allocator over `map` hands out only usable frames at or above `first_free`, each
/// once.
pub fn check_allocator(map: &MemoryMap, first_free: PhysFrame) {
    let mut alloc = Box::new(FrameAllocator::empty());
    alloc.reset(
        map,
        first_free,
        PhysFrame::new(u32::MAX),
        pvops_core::addr::FrameRange::EMPTY,
    );
    let mut seen = Vec::new();
    for _ in 0..64 {
        let Ok(f) = alloc.alloc() else { break };
        let addr = f.number() as u64 * PAGE_SIZE;
        assert!(f >= first_free, "frame {f} below first_free {first_free}");
        assert!(
            map.regions().iter().any(|r| r.kind == RegionKind::Usable
                && r.start.as_u64() <= addr
                && addr + PAGE_SIZE <= r.end()),
            "allocator handed out frame {f}, not usable in {:?}",
            map.regions()
        );
        assert!(!seen.contains(&f), "frame {f} handed out twice");
        seen.push(f);
    }
}

/// A backend that has nothing but the Xen backend's options, so [`BootOptions::parse`] runs the
/// core's switch parser and `XenOptions::apply` (the real code behind `XenMmu::set_option`)
/// without a hypervisor. Every page-table operation is unreachable from `parse`.
#[derive(Default)]
pub struct XenOptionsOnly(pub XenOptions);

impl MmuOps for XenOptionsOnly {
    pvops_core::direct_mmu_hooks!();

    type Error = core::convert::Infallible;
    type Counters = XenCounters;
    const NAME: &'static str = "xen-options";
    const READ_ONLY_PAGE_TABLES: bool = true;
    fn layout(&self) -> MemoryLayout {
        unreachable!("options only")
    }
    fn phys_to_machine(&self, _: PhysFrame) -> Option<MachineFrame> {
        None
    }
    fn machine_to_phys(&self, _: MachineFrame) -> Option<PhysFrame> {
        None
    }
    fn read_cr3(&self) -> PhysFrame {
        PhysFrame::new(0)
    }
    unsafe fn write_cr3(&mut self, _: PhysFrame) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn set_pte(&mut self, _: EntrySlot, _: PageTableEntry) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn set_pmd(&mut self, _: EntrySlot, _: PageTableEntry) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn set_pud(&mut self, _: EntrySlot, _: PageTableEntry) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn pte_clear(&mut self, _: EntrySlot) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn set_pte_atomic(
        &mut self,
        _: EntrySlot,
        _: PageTableEntry,
    ) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn pmd_clear(&mut self, _: EntrySlot) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    unsafe fn pud_clear(&mut self, _: EntrySlot) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    fn flush_tlb_single(&mut self, _: VirtAddr) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    fn flush_tlb_all(&mut self) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    fn pagetable_setup_start(&mut self, _: PhysFrame) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    fn pagetable_setup_done(&mut self, _: PhysFrame) -> Result<FrameRange, Self::Error> {
        unreachable!("options only")
    }
    fn alloc_pt(&mut self, _: PhysFrame, _: Level) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    fn release_pt(&mut self, _: PhysFrame, _: Level) -> Result<(), Self::Error> {
        unreachable!("options only")
    }
    fn counters(&self) -> XenCounters {
        XenCounters::default()
    }
    fn set_option(&mut self, key: &str, value: Option<&str>) -> Result<(), OptionErrorKind> {
        self.0.apply(key, value)
    }
}

/// `BootOptions::parse` on `cmdline` with the Xen backend's options: a refused word is one of
/// the line's `pvops.*` words and is refused the same way on its own; what is accepted is what
/// the line's last `pvops.batch=` says.
pub fn check_options(cmdline: &str) {
    let mut backend = XenOptionsOnly::default();
    match BootOptions::parse(cmdline, &mut backend) {
        Err(e) => {
            assert!(
                e.word.starts_with("pvops."),
                "refused a foreign word {:?}",
                e.word
            );
            assert!(cmdline.split_ascii_whitespace().any(|w| w == e.word));
            let alone = BootOptions::parse(e.word, &mut XenOptionsOnly::default());
            assert_eq!(
                alone.map(|_| ()),
                Err(e),
                "the word alone is refused otherwise"
            );
        }
        Ok(o) => {
            let batch = cmdline
                .split_ascii_whitespace()
                .filter_map(|w| w.strip_prefix("pvops.batch="))
                .next_back()
                .map_or(0, |v| v.parse().expect("accepted"));
            assert_eq!(backend.0.batch, batch);
            let canonical = match o.early_ioremap {
                IoremapWalk::Cr3 => "pvops.early_ioremap=cr3",
                IoremapWalk::Swapper => "pvops.early_ioremap=swapper",
            };
            assert_eq!(
                BootOptions::parse(canonical, &mut XenOptionsOnly::default()),
                Ok(o)
            );
        }
    }
}

/// What `map.without(reserved)` must have given (`free`): only usable memory of `map`, none of
/// it reserved, and every usable byte no reservation holds (overlapping reservations counted
/// once).
pub fn check_without(map: &MemoryMap, reserved: &Reservations, free: &MemoryMap) {
    check_map(free);
    for f in free.regions() {
        assert_eq!(f.kind, RegionKind::Usable, "{f:?} in the free map");
        assert!(
            map.usable()
                .any(|u| u.start.as_u64() <= f.start.as_u64() && f.end() <= u.end()),
            "{f:?} is not usable in {:?}",
            map.regions()
        );
        for r in reserved.iter() {
            assert!(
                f.end() <= r.start.as_u64() || r.end <= f.start.as_u64(),
                "{r:?} still usable in {f:?}"
            );
        }
    }
    // The reservations' union (the list is sorted by start), then its overlap with usable RAM.
    let mut union: Vec<(u64, u64)> = Vec::new();
    for r in reserved.iter() {
        match union.last_mut() {
            Some(last) if r.start.as_u64() <= last.1 => last.1 = last.1.max(r.end),
            _ => union.push((r.start.as_u64(), r.end)),
        }
    }
    let cut: u64 = map
        .usable()
        .map(|u| {
            union
                .iter()
                .map(|&(s, e)| e.min(u.end()).saturating_sub(s.max(u.start.as_u64())))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(free.usable_bytes(), map.usable_bytes() - cut);
}

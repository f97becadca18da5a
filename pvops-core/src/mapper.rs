//! Walking and changing a page table through the ops trait, with a `#[must_use]` TLB flush.

use crate::addr::{EntryIndex, MachineFrame, PdptIndex, PhysFrame, VirtAddr, PAGE_SIZE};
use crate::mem::{AllocError, FrameAllocator};
use crate::ops::{MmuOps, Platform};
use crate::paging::{EntrySlot, Level, PageTableEntry, PteFlags, PDPT_FLAGS, TABLE_FLAGS};
use core::fmt;

/// Why a walk or mapping change failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError<E> {
    /// A table frame needed could not be allocated.
    Alloc(AllocError),
    /// The backend refused an operation (e.g. Xen returned an error).
    Backend(E),
    /// A table frame is not reachable through any current mapping.
    Unreachable(PhysFrame),
    /// An entry names a machine frame the kernel does not own (no m2p translation).
    ForeignFrame(MachineFrame),
    /// The address is covered by a 2 MiB page; pvops maps 4 KiB pages only.
    HugePage(VirtAddr),
    /// The page is already mapped.
    AlreadyMapped(VirtAddr),
    /// The page (or a table above it) is not mapped.
    NotMapped(VirtAddr),
    /// A pseudo-physical frame has no machine frame (outside the p2m list).
    NoMachineFrame(PhysFrame),
    /// The PDPT entry for the address is empty in the live table: bare hardware would not see
    /// a new one before a cr3 reload (the kernel's root has all four from the start).
    LivePdptEntry(VirtAddr),
    /// A present entry names an address beyond what a [`MachineFrame`] numbers.
    BadEntry(PageTableEntry),
}

impl<E: fmt::Display> fmt::Display for MapError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Alloc(e) => write!(f, "{e}"),
            Self::Backend(e) => write!(f, "{e}"),
            Self::Unreachable(fr) => write!(f, "table pfn {fr} is not mapped"),
            Self::ForeignFrame(m) => write!(f, "entry names foreign mfn {m}"),
            Self::HugePage(v) => write!(f, "{v} is inside a 2 MiB page"),
            Self::AlreadyMapped(v) => write!(f, "{v} is already mapped"),
            Self::NotMapped(v) => write!(f, "{v} is not mapped"),
            Self::NoMachineFrame(p) => write!(f, "pfn {p} has no machine frame"),
            Self::LivePdptEntry(v) => write!(f, "{v}: no PDPT entry in the live table"),
            Self::BadEntry(e) => write!(f, "entry {e:?} names an address beyond 16 TiB"),
        }
    }
}

impl<E> From<AllocError> for MapError<E> {
    fn from(e: AllocError) -> Self {
        MapError::Alloc(e)
    }
}

/// A TLB flush owed after a mapping change. Dropping it without calling
/// [`TlbFlush::flush`] or [`TlbFlush::ignore`] is a bug the compiler warns about.
#[must_use = "a changed mapping stays stale in the TLB until it is flushed"]
#[derive(Debug)]
pub struct TlbFlush(VirtAddr);

impl TlbFlush {
    /// Creates a flush token for `va` (for backends and mapping code outside this module).
    pub fn new(va: VirtAddr) -> TlbFlush {
        TlbFlush(va)
    }
    /// The page the flush is for.
    pub fn addr(&self) -> VirtAddr {
        self.0
    }
    /// Flushes the page's TLB entry.
    pub fn flush<B: MmuOps>(self, backend: &mut B) -> Result<(), B::Error> {
        backend.flush_tlb_single(self.0)
    }
    /// Skips the flush (a full flush or a cr3 load follows).
    pub fn ignore(self) {}
}

/// Reads entry `index` of table `table` (an [`EntryIndex`] is below 512: the read stays in
/// the frame; a PDPT index converts with `.into()`).
pub fn read_entry<P: Platform>(
    p: &P,
    table: PhysFrame,
    index: impl Into<EntryIndex>,
) -> Result<PageTableEntry, MapError<P::Error>> {
    let ptr = p.frame_ptr(table).ok_or(MapError::Unreachable(table))?;
    let index = index.into().get();
    // SAFETY: frame_ptr promises 4096 readable bytes; an EntryIndex is < 512, so the read
    // stays inside.
    let bits = unsafe { core::ptr::read_volatile((ptr as *const u64).add(index)) };
    Ok(PageTableEntry::from_bits(bits))
}

/// Zeroes a frame through its current mapping (before it becomes a table). The safe way to
/// get a zeroed table is [`new_table`], which zeroes only the frame it has just allocated.
///
/// ```compile_fail,E0133
/// // A safe caller cannot zero a frame it does not own (issue 11): this needs `unsafe`.
/// fn zero_any<P: pvops_core::Platform>(p: &P, f: pvops_core::addr::PhysFrame) {
///     let _ = pvops_core::mapper::zero_frame(p, f);
/// }
/// ```
///
/// # Safety
/// The caller owns `frame`: nothing else uses it or relies on its contents (it was just
/// handed out by the frame allocator and is not a live page table, nor kernel code, data or
/// stack, nor memory another agent writes).
pub unsafe fn zero_frame<P: Platform>(p: &P, frame: PhysFrame) -> Result<(), MapError<P::Error>> {
    let ptr = p.frame_ptr(frame).ok_or(MapError::Unreachable(frame))?;
    // SAFETY: frame_ptr promises 4096 writable bytes; the caller owns the frame.
    unsafe { core::ptr::write_bytes(ptr, 0, PAGE_SIZE as usize) };
    Ok(())
}

/// The pseudo-physical table named by a present entry.
pub fn next_table<P: Platform>(p: &P, e: PageTableEntry) -> Result<PhysFrame, MapError<P::Error>> {
    let mfn = e.frame().ok_or(MapError::BadEntry(e))?;
    p.machine_to_phys(mfn).ok_or(MapError::ForeignFrame(mfn))
}

/// Allocates, zeroes and announces a new table of `level`; returns it and the entry that links it.
pub fn new_table<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    level: Level,
) -> Result<(PhysFrame, PageTableEntry), MapError<P::Error>> {
    let frame = alloc.alloc_table()?;
    let linked = (|| {
        // SAFETY: the allocator has just handed `frame` out; nothing else uses it.
        unsafe { zero_frame(p, frame) }?;
        let mfn = p
            .phys_to_machine(frame)
            .ok_or(MapError::NoMachineFrame(frame))?;
        p.alloc_pt(frame, level).map_err(MapError::Backend)?;
        let flags = if level == Level::L2 {
            PDPT_FLAGS
        } else {
            TABLE_FLAGS
        };
        Ok(PageTableEntry::new(mfn, flags))
    })();
    match linked {
        Ok(entry) => Ok((frame, entry)),
        Err(e) => {
            let _ = alloc.free(frame);
            Err(e)
        }
    }
}

/// A new, not yet live, root table (PDPT) with all four L2s linked, as Linux PAE builds
/// them: a PDPT entry of a live table cannot change without a cr3 reload on bare hardware,
/// so a root made here never needs a new one once it is live.
pub fn new_root<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
) -> Result<PhysFrame, MapError<P::Error>> {
    let mut lazy = crate::ops::LazyMmu::enter(p);
    let (root, _) = new_table(&mut *lazy, alloc, Level::L3)?;
    for i in PdptIndex::all() {
        let (_, link) = new_table(&mut *lazy, alloc, Level::L2)?;
        let slot = EntrySlot::pdpt(root, i);
        // SAFETY: the root is not live; this links a fresh, zeroed, announced L2.
        unsafe { lazy.set_pud(slot, link) }.map_err(MapError::Backend)?;
    }
    lazy.finish().map_err(MapError::Backend)?;
    Ok(root)
}

/// Finds the L1 slot that maps `va` in the table rooted at `root`, creating missing L2/L1
/// tables when `create` is set.
pub fn l1_slot<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    root: PhysFrame,
    va: VirtAddr,
    create: bool,
) -> Result<EntrySlot, MapError<P::Error>> {
    let l3 = EntrySlot::pdpt(root, va.l3_index());
    let mut l3e = read_entry(p, root, va.l3_index())?;
    if !l3e.is_present() {
        if !create {
            return Err(MapError::NotMapped(va));
        }
        if root == p.read_cr3() {
            return Err(MapError::LivePdptEntry(va));
        }
        let (_, entry) = new_table(p, alloc, Level::L2)?;
        // SAFETY: links a fresh, zeroed, announced L2; nothing mapped changes.
        unsafe { p.set_pud(l3, entry) }.map_err(MapError::Backend)?;
        l3e = entry;
    }
    let l2 = next_table(p, l3e)?;
    let mut l2e = read_entry(p, l2, va.l2_index())?;
    if l2e.is_present() && l2e.flags().contains(PteFlags::HUGE) {
        return Err(MapError::HugePage(va));
    }
    if !l2e.is_present() {
        if !create {
            return Err(MapError::NotMapped(va));
        }
        let (_, entry) = new_table(p, alloc, Level::L1)?;
        let slot = EntrySlot::new(l2, va.l2_index());
        // SAFETY: links a fresh, zeroed, announced L1; nothing mapped changes.
        unsafe { p.set_pmd(slot, entry) }.map_err(MapError::Backend)?;
        l2e = entry;
    }
    Ok(EntrySlot::new(next_table(p, l2e)?, va.l1_index()))
}

/// Maps the page at `va` to `frame` in the table rooted at `root`.
///
/// # Safety
/// `va` must not be in use by anything the kernel relies on (see [`MmuOps`]).
pub unsafe fn map_page<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    root: PhysFrame,
    va: VirtAddr,
    frame: MachineFrame,
    flags: PteFlags,
) -> Result<TlbFlush, MapError<P::Error>> {
    let slot = l1_slot(p, alloc, root, va, true)?;
    if read_entry(p, slot.table(), slot.index())?.is_present() {
        return Err(MapError::AlreadyMapped(va));
    }
    // SAFETY: the caller owns `va`; the slot is an L1 entry found by the walk.
    unsafe { p.set_pte(slot, PageTableEntry::new(frame, flags)) }.map_err(MapError::Backend)?;
    Ok(TlbFlush(va.page_base()))
}

/// Unmaps the page at `va`, returning the machine frame it mapped.
///
/// # Safety
/// Nothing may use `va` any more.
pub unsafe fn unmap_page<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<(MachineFrame, TlbFlush), MapError<P::Error>> {
    let slot = l1_slot(p, alloc, root, va, false)?;
    let old = read_entry(p, slot.table(), slot.index())?;
    if !old.is_present() {
        return Err(MapError::NotMapped(va));
    }
    // SAFETY: the caller gave up `va`.
    unsafe { p.pte_clear(slot) }.map_err(MapError::Backend)?;
    let frame = old.frame().ok_or(MapError::BadEntry(old))?;
    Ok((frame, TlbFlush(va.page_base())))
}

/// Translates `va` through the table rooted at `root` (software walk).
pub fn translate<P: Platform>(
    p: &P,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<PageTableEntry, MapError<P::Error>> {
    let l3e = read_entry(p, root, va.l3_index())?;
    if !l3e.is_present() {
        return Err(MapError::NotMapped(va));
    }
    let l2e = read_entry(p, next_table(p, l3e)?, va.l2_index())?;
    if !l2e.is_present() {
        return Err(MapError::NotMapped(va));
    }
    if l2e.flags().contains(PteFlags::HUGE) {
        return Ok(l2e);
    }
    let l1e = read_entry(p, next_table(p, l2e)?, va.l1_index())?;
    if !l1e.is_present() {
        return Err(MapError::NotMapped(va));
    }
    Ok(l1e)
}

/// What [`map_linear`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearMap {
    /// L1 entries written.
    pub ptes: u32,
    /// L1 tables linked (new or found).
    pub tables: u32,
}

/// Most bytes one [`map_linear`] call covers: the 512 L1 tables of one 1 GiB L2 span.
pub const LINEAR_MAX_BYTES: u64 = (crate::paging::ENTRIES as u64) * crate::paging::L2_SPAN as u64;

/// Maps every frame of `ranges` at `base + pa` with 4 KiB pages in the table rooted at `root`
/// (whose L3 entries for the span must be present), with `flags(frame)`.
///
/// All L1 tables are allocated (or found) before any page is mapped, so a frame that becomes a
/// page table is never mapped writable first (Xen); then every PTE is written in lazy mode
/// and never read back (a queued write is not in memory yet). Frames at or above
/// [`LINEAR_MAX_BYTES`] are skipped.
pub fn map_linear<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    root: PhysFrame,
    base: VirtAddr,
    ranges: &[crate::addr::FrameRange],
    flags: impl Fn(PhysFrame, &FrameAllocator) -> PteFlags,
) -> Result<LinearMap, MapError<P::Error>> {
    const CHUNK_FRAMES: u32 = crate::paging::L2_SPAN / PAGE_SIZE as u32;
    let chunks = crate::paging::ENTRIES;
    let mut l1s = [None::<PhysFrame>; crate::paging::ENTRIES];
    for r in ranges {
        let last = r.end.number().div_ceil(CHUNK_FRAMES).min(chunks as u32);
        for c in (r.start.number() / CHUNK_FRAMES)..last {
            l1s[c as usize] = Some(PhysFrame::new(0));
        }
    }
    let mut lazy = crate::ops::LazyMmu::enter(p);
    let mut done = LinearMap::default();
    for (chunk, t) in l1s.iter_mut().enumerate() {
        if t.is_none() {
            continue;
        }
        let va = VirtAddr::new(
            base.as_u32()
                .wrapping_add(chunk as u32 * crate::paging::L2_SPAN),
        );
        let l3e = read_entry(&*lazy, root, va.l3_index())?;
        if !l3e.is_present() {
            return Err(MapError::NotMapped(va));
        }
        let l2 = next_table(&*lazy, l3e)?;
        let existing = read_entry(&*lazy, l2, va.l2_index())?;
        let frame = if existing.is_present() {
            if existing.flags().contains(PteFlags::HUGE) {
                return Err(MapError::HugePage(va));
            }
            next_table(&*lazy, existing)?
        } else {
            let (l1, link) = new_table(&mut *lazy, alloc, Level::L1)?;
            let slot = EntrySlot::new(l2, va.l2_index());
            // SAFETY: links a fresh, zeroed, announced L1 where nothing was mapped.
            unsafe { lazy.set_pmd(slot, link) }.map_err(MapError::Backend)?;
            l1
        };
        *t = Some(frame);
        done.tables += 1;
    }
    for r in ranges {
        for f in r.iter() {
            let Some(Some(l1)) = l1s.get((f.number() / CHUNK_FRAMES) as usize).copied() else {
                continue;
            };
            let va = VirtAddr::new(base.as_u32().wrapping_add(f.number() << 12));
            let mfn = lazy.phys_to_machine(f).ok_or(MapError::NoMachineFrame(f))?;
            let slot = EntrySlot::new(l1, va.l1_index());
            // SAFETY: the caller owns the span; the slot is in an L1 found or made above.
            unsafe { lazy.set_pte(slot, PageTableEntry::new(mfn, flags(f, alloc))) }
                .map_err(MapError::Backend)?;
            done.ptes += 1;
        }
    }
    lazy.finish().map_err(MapError::Backend)?;
    Ok(done)
}

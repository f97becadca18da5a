//! Changing a page table through the ops trait: single pages with a `#[must_use]` TLB flush
//! (map, unmap, remap), batched ranges (map, unmap, protect), new tables and roots, and the
//! one helper that retires an empty table.
//! Every read goes through [`crate::walk`] and sees the writes queued in lazy mode.
//! (About 600 lines as one file on purpose: every routine here changes tables through the
//! same private helpers, and a kernel author reads them side by side.)

use crate::addr::{EntryIndex, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use crate::frame_alloc::{AllocError, FrameAlloc};
use crate::ops::LazyMmu;
use crate::ops::{MmuOps, Platform};
use crate::paging::{EntrySlot, Level, PageTableEntry, PteFlags, ENTRIES, PDPT_FLAGS, TABLE_FLAGS};
use crate::walk::{self, TableRead, Walked};
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
    /// A table still maps something: it cannot be retired.
    TableInUse {
        /// The table.
        table: PhysFrame,
        /// The first present entry.
        index: EntryIndex,
    },
    /// A present entry names an address beyond what a [`MachineFrame`] numbers.
    BadEntry(PageTableEntry),
    /// A range that wraps past 4 GiB or covers no page.
    BadRange {
        /// Its start.
        va: VirtAddr,
        /// Its length in pages.
        pages: usize,
    },
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
            Self::TableInUse { table, index } => {
                write!(f, "table pfn {table} still maps entry {index}")
            }
            Self::BadEntry(e) => write!(f, "entry {e:?} names an address beyond 16 TiB"),
            Self::BadRange { va, pages } => {
                write!(f, "range of {pages} pages at {va} is empty or wraps")
            }
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

/// A TLB flush owed after [`unmap_range`]: one full flush above [`RANGE_FLUSH_PAGES`]
/// pages, one `invlpg` per page up to it (queued with the updates in lazy mode: one
/// batched hypercall under Xen).
#[must_use = "unmapped pages stay stale in the TLB until they are flushed"]
#[derive(Debug)]
pub struct TlbFlushRange {
    start: VirtAddr,
    pages: usize,
}

/// Most pages [`TlbFlushRange::flush`] flushes one by one (Linux's
/// `tlb_single_page_flush_ceiling` is 33); above it flushes the whole TLB.
pub const RANGE_FLUSH_PAGES: usize = 32;

impl TlbFlushRange {
    /// The first page and the number of pages the flush is for.
    pub fn range(&self) -> (VirtAddr, usize) {
        (self.start, self.pages)
    }
    /// Flushes the range.
    pub fn flush<B: MmuOps>(self, backend: &mut B) -> Result<(), B::Error> {
        if self.pages > RANGE_FLUSH_PAGES {
            return backend.flush_tlb_all();
        }
        for i in 0..self.pages {
            backend.flush_tlb_single(self.start.wrapping_add((i as u32) << 12))?;
        }
        Ok(())
    }
    /// Skips the flush (a full flush or a cr3 load follows).
    pub fn ignore(self) {}
}

/// A whole-TLB flush owed after entries of the live root lost rights (e.g. the source of a
/// copy-on-write [`crate::space::AddressSpaces::duplicate`]); [`TlbFlushAll::is_needed`] is
/// false when no live entry changed, and then [`TlbFlushAll::flush`] does nothing.
#[must_use = "write-protected pages stay writable in the TLB until it is flushed"]
#[derive(Debug)]
pub struct TlbFlushAll {
    needed: bool,
}

impl TlbFlushAll {
    /// A flush token; `needed` says whether a live entry changed.
    pub fn new(needed: bool) -> TlbFlushAll {
        TlbFlushAll { needed }
    }
    /// Whether a live entry changed (the flush does something).
    pub fn is_needed(&self) -> bool {
        self.needed
    }
    /// Flushes the whole TLB if a live entry changed.
    pub fn flush<B: MmuOps>(self, backend: &mut B) -> Result<(), B::Error> {
        if self.needed {
            backend.flush_tlb_all()
        } else {
            Ok(())
        }
    }
    /// Skips the flush (a cr3 load follows).
    pub fn ignore(self) {}
}

/// The tables of a [`Platform`] as the walker reads them: through [`Platform::frame_ptr`],
/// with the writes queued in lazy mode ([`MmuOps::queued_entry`]) taking precedence.
pub struct Tables<'a, P: Platform>(pub &'a P);

impl<P: Platform> TableRead for Tables<'_, P> {
    type Error = MapError<P::Error>;
    fn entry(&self, slot: EntrySlot) -> Result<PageTableEntry, Self::Error> {
        read_entry(self.0, slot.table(), slot.index())
    }
    fn table(&self, entry: PageTableEntry) -> Result<PhysFrame, Self::Error> {
        next_table(self.0, entry)
    }
}

/// Reads entry `index` of table `table` (an [`EntryIndex`] is below 512: the read stays in
/// the frame; a PDPT index converts with `.into()`): the value a write queued in lazy mode
/// will give it, else what memory holds.
pub fn read_entry<P: Platform>(
    p: &P,
    table: PhysFrame,
    index: impl Into<EntryIndex>,
) -> Result<PageTableEntry, MapError<P::Error>> {
    let index = index.into();
    if let Some(e) = p.queued_entry(EntrySlot::new(table, index)) {
        return Ok(e);
    }
    let ptr = p.frame_ptr(table).ok_or(MapError::Unreachable(table))?;
    // SAFETY: frame_ptr promises 4096 readable bytes; an EntryIndex is < 512, so the read
    // stays inside.
    let bits = unsafe { core::ptr::read_volatile((ptr as *const u64).add(index.get())) };
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

/// The slot `i` entries after `first` in the same table.
fn slot_after<E>(first: EntrySlot, i: usize, va: VirtAddr) -> Result<EntrySlot, MapError<E>> {
    EntryIndex::new(first.index().get() + i)
        .map(|x| EntrySlot::new(first.table(), x))
        .ok_or(MapError::BadRange { va, pages: i + 1 })
}

/// Allocates, zeroes and announces a new table of `level`; returns it and the entry that links it.
pub fn new_table<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
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
pub fn new_root<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
) -> Result<PhysFrame, MapError<P::Error>> {
    let mut lazy = LazyMmu::enter(p);
    let (root, _) = new_table(&mut *lazy, alloc, Level::L3)?;
    for i in crate::addr::PdptIndex::all() {
        let (_, link) = new_table(&mut *lazy, alloc, Level::L2)?;
        let slot = EntrySlot::pdpt(root, i);
        // SAFETY: the root is not live; this links a fresh, zeroed, announced L2.
        unsafe { lazy.set_pud(slot, link) }.map_err(MapError::Backend)?;
    }
    lazy.finish().map_err(MapError::Backend)?;
    Ok(root)
}

/// Walks the table rooted at `root` for `va` with the one walker, reading through the
/// backend (queued lazy writes included).
pub fn walk<P: Platform>(
    p: &P,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<Walked, MapError<P::Error>> {
    walk::walk_to(&Tables(p), root, va)
}

/// Finds the L1 slot that maps `va` in the table rooted at `root`, creating missing L2/L1
/// tables when `create` is set.
pub fn l1_slot<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
    root: PhysFrame,
    va: VirtAddr,
    create: bool,
) -> Result<EntrySlot, MapError<P::Error>> {
    // At most two tables are missing (an L2, then an L1): each pass links one and walks
    // again, reading the link even if lazy mode still queues it.
    for _ in 0..3 {
        let w = walk(p, root, va)?;
        match w.level {
            Level::L1 => return Ok(w.slot),
            Level::L2 if w.is_huge() => return Err(MapError::HugePage(va)),
            _ if w.entry.is_present() => return Err(MapError::HugePage(va)),
            _ if !create => return Err(MapError::NotMapped(va)),
            Level::L3 => {
                if root == p.read_cr3() {
                    return Err(MapError::LivePdptEntry(va));
                }
                let (_, entry) = new_table(p, alloc, Level::L2)?;
                // SAFETY: links a fresh, zeroed, announced L2; nothing mapped changes.
                unsafe { p.set_pud(w.slot, entry) }.map_err(MapError::Backend)?;
            }
            Level::L2 => {
                let (_, entry) = new_table(p, alloc, Level::L1)?;
                // SAFETY: links a fresh, zeroed, announced L1; nothing mapped changes.
                unsafe { p.set_pmd(w.slot, entry) }.map_err(MapError::Backend)?;
            }
        }
    }
    Err(MapError::NotMapped(va))
}

/// Maps the page at `va` to `frame` in the table rooted at `root`.
///
/// # Safety
/// `va` must not be in use by anything the kernel relies on (see [`MmuOps`]).
pub unsafe fn map_page<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
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

/// The walk to the 4 KiB page mapped at `va` and the frame it maps; a 2 MiB page or an
/// unmapped `va` is an error.
fn mapped_page<P: Platform>(
    p: &P,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<(Walked, MachineFrame), MapError<P::Error>> {
    let w = walk(p, root, va)?;
    if !w.is_page() {
        return Err(match w.is_huge() {
            true => MapError::HugePage(va),
            false => MapError::NotMapped(va),
        });
    }
    let frame = w.entry.frame().ok_or(MapError::BadEntry(w.entry))?;
    Ok((w, frame))
}

/// Unmaps the page at `va`, returning the machine frame it mapped.
///
/// # Safety
/// Nothing may use `va` any more.
pub unsafe fn unmap_page<P: Platform>(
    p: &mut P,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<(MachineFrame, TlbFlush), MapError<P::Error>> {
    let (w, frame) = mapped_page(p, root, va)?;
    // SAFETY: the caller gave up `va`.
    unsafe { p.pte_clear(w.slot) }.map_err(MapError::Backend)?;
    Ok((frame, TlbFlush(va.page_base())))
}

/// Replaces the mapping of the mapped page at `va` in the table rooted at `root` with
/// `frame` and `flags`, in one 64-bit store ([`MmuOps::set_pte_atomic`]; under Xen one
/// `mmu_update`, batched in lazy mode): what a fault handler does to break copy-on-write
/// (give the writer its own copy) or to upgrade a page's rights. Returns the frame it mapped
/// and the flush owed.
///
/// # Safety
/// Nothing may rely on the old mapping any more, and the new one must not expose anything
/// the kernel relies on.
pub unsafe fn remap_page<P: Platform>(
    p: &mut P,
    root: PhysFrame,
    va: VirtAddr,
    frame: MachineFrame,
    flags: PteFlags,
) -> Result<(MachineFrame, TlbFlush), MapError<P::Error>> {
    let (w, old) = mapped_page(p, root, va)?;
    let new = PageTableEntry::new(frame, flags | PteFlags::PRESENT);
    // SAFETY: the caller gave up the old mapping and vouches for the new one; the slot is an
    // L1 entry found by the walk.
    unsafe { p.set_pte_atomic(w.slot, new) }.map_err(MapError::Backend)?;
    Ok((old, TlbFlush(va.page_base())))
}

/// Gives `pages` mapped pages from `va` (page aligned) in the table rooted at `root` the
/// rights `flags`, each keeping its frame (Linux's `mprotect` of present pages), in one lazy
/// section: under Xen the changed entries go out in batched `mmu_update`s. A chunk (the
/// pages of one L1) with an unmapped page is refused before any of its pages changes
/// ([`MapError::NotMapped`]; chunks before it keep their new rights). Entries that already
/// have `flags` are not written. Returns the flush owed.
///
/// # Safety
/// The new rights must not expose anything the kernel relies on (e.g. `USER` on kernel
/// pages, `WRITABLE` on a page the kernel keeps read-only for a reason).
pub unsafe fn protect_range<P: Platform>(
    p: &mut P,
    root: PhysFrame,
    va: VirtAddr,
    pages: usize,
    flags: PteFlags,
) -> Result<TlbFlushRange, MapError<P::Error>> {
    check_range(va, pages)?;
    let flags = flags | PteFlags::PRESENT;
    let mut lazy = LazyMmu::enter(p);
    for (_, at, n) in chunks(va, pages) {
        let chunk = mapped_chunk(&*lazy, root, at, n)?;
        for i in 0..n {
            let s = slot_after(chunk, i, at)?;
            let e = read_entry(&*lazy, s.table(), s.index())?;
            if e.flags() == flags {
                continue;
            }
            // SAFETY: the same frame with the rights the caller vouches for.
            unsafe { lazy.set_pte_atomic(s, e.with_flags(flags)) }.map_err(MapError::Backend)?;
        }
    }
    lazy.finish().map_err(MapError::Backend)?;
    Ok(TlbFlushRange { start: va, pages })
}

/// Translates `va` through the table rooted at `root` (software walk; queued lazy writes
/// included): the L1 entry, or the L2 entry of a 2 MiB page.
pub fn translate<P: Platform>(
    p: &P,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<PageTableEntry, MapError<P::Error>> {
    let w = walk(p, root, va)?;
    if w.is_page() || w.is_huge() {
        Ok(w.entry)
    } else {
        Err(MapError::NotMapped(va))
    }
}

/// The pages of `[va, va + pages)` chunk by chunk, each inside one L1 table:
/// `(first page index, first va, pages in the chunk)`.
fn chunks(va: VirtAddr, pages: usize) -> impl Iterator<Item = (usize, VirtAddr, usize)> {
    let mut done = 0;
    core::iter::from_fn(move || {
        if done >= pages {
            return None;
        }
        let at = va.wrapping_add((done as u32) << 12);
        let n = (ENTRIES - at.l1_index().get()).min(pages - done);
        let chunk = (done, at, n);
        done += n;
        Some(chunk)
    })
}

/// The L1 slot of the first of `n` pages from `at` (all in one L1), once each of them is
/// found mapped; otherwise the first that is not ([`MapError::NotMapped`], or
/// [`MapError::HugePage`] under a 2 MiB page).
fn mapped_chunk<P: Platform>(
    p: &P,
    root: PhysFrame,
    at: VirtAddr,
    n: usize,
) -> Result<EntrySlot, MapError<P::Error>> {
    let w = walk::walk_to(&Tables(p), root, at)?;
    if w.level != Level::L1 {
        return Err(match w.is_huge() {
            true => MapError::HugePage(at),
            false => MapError::NotMapped(at),
        });
    }
    for i in 0..n {
        let s = slot_after(w.slot, i, at)?;
        let e = read_entry(p, s.table(), s.index())?;
        if !e.is_present() {
            return Err(MapError::NotMapped(at.wrapping_add((i as u32) << 12)));
        }
        e.frame().ok_or(MapError::BadEntry(e))?;
    }
    Ok(w.slot)
}

fn check_range<E>(va: VirtAddr, pages: usize) -> Result<(), MapError<E>> {
    let end = (va.as_u32() as u64) + ((pages as u64) << 12);
    if pages == 0 || va.page_offset() != 0 || end > 1 << 32 {
        return Err(MapError::BadRange { va, pages });
    }
    Ok(())
}

/// Maps `pages` pages from `va` (page aligned) in the table rooted at `root`, page `i` to
/// `frame(i)` with `flags`, in one lazy section (nested in the caller's if one is open): under
/// Xen, N pages of a fresh area cost ceil(N/1024) batched `mmu_update`s plus the L1 tables'
/// links, each new L1 filled while it is still private (plain stores) and linked after.
/// Every page must be unmapped; a chunk with a mapped page is refused before any of its
/// pages is written ([`MapError::AlreadyMapped`]; chunks before it stay mapped). No TLB
/// flush is owed: the pages were not present.
///
/// # Safety
/// The range must not be in use by anything the kernel relies on.
pub unsafe fn map_range<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
    root: PhysFrame,
    va: VirtAddr,
    pages: usize,
    flags: PteFlags,
    mut frame: impl FnMut(usize) -> MachineFrame,
) -> Result<(), MapError<P::Error>> {
    check_range(va, pages)?;
    let mut lazy = LazyMmu::enter(p);
    for (first, at, n) in chunks(va, pages) {
        let w = walk::walk_down_to(&Tables(&*lazy), root, at, Level::L2)?;
        if w.level == Level::L2 && !w.entry.is_present() {
            // A fresh L1: filled before it is linked, so nothing reads a half-made table.
            let (l1, link) = new_table(&mut *lazy, alloc, Level::L1)?;
            let first_slot = EntrySlot::new(l1, at.l1_index());
            for i in 0..n {
                let slot = slot_after(first_slot, i, at)?;
                let e = PageTableEntry::new(frame(first + i), flags);
                // SAFETY: a private, announced L1 not linked anywhere yet.
                unsafe { lazy.set_pte(slot, e) }.map_err(MapError::Backend)?;
            }
            // SAFETY: links the L1 just filled where nothing was mapped.
            unsafe { lazy.set_pmd(w.slot, link) }.map_err(MapError::Backend)?;
            continue;
        }
        let slot = l1_slot(&mut *lazy, alloc, root, at, true)?;
        for i in 0..n {
            let s = slot_after(slot, i, at)?;
            if read_entry(&*lazy, s.table(), s.index())?.is_present() {
                return Err(MapError::AlreadyMapped(at.wrapping_add((i as u32) << 12)));
            }
        }
        for i in 0..n {
            let s = slot_after(slot, i, at)?;
            let e = PageTableEntry::new(frame(first + i), flags);
            // SAFETY: the caller owns the range; the entry was not present.
            unsafe { lazy.set_pte(s, e) }.map_err(MapError::Backend)?;
        }
    }
    lazy.finish().map_err(MapError::Backend)
}

/// Unmaps `pages` mapped pages from `va` in the table rooted at `root`, in one lazy section;
/// `unmapped(i, frame)` hears what page `i` mapped. A chunk with an unmapped page is refused
/// before any of its pages is cleared. The L1 tables stay (retire them with
/// [`retire_table`]). Returns the flush owed: flush it inside the same lazy section and the
/// clears and the flush go out together (one multicall under Xen).
///
/// # Safety
/// Nothing may use the range any more.
pub unsafe fn unmap_range<P: Platform>(
    p: &mut P,
    root: PhysFrame,
    va: VirtAddr,
    pages: usize,
    mut unmapped: impl FnMut(usize, MachineFrame),
) -> Result<TlbFlushRange, MapError<P::Error>> {
    check_range(va, pages)?;
    let mut lazy = LazyMmu::enter(p);
    for (first, at, n) in chunks(va, pages) {
        let chunk = mapped_chunk(&*lazy, root, at, n)?;
        for i in 0..n {
            let s = slot_after(chunk, i, at)?;
            let old = read_entry(&*lazy, s.table(), s.index())?;
            // SAFETY: the caller gave up the range.
            unsafe { lazy.pte_clear(s) }.map_err(MapError::Backend)?;
            if let Some(f) = old.frame() {
                unmapped(first + i, f);
            }
        }
    }
    lazy.finish().map_err(MapError::Backend)?;
    Ok(TlbFlushRange { start: va, pages })
}

/// Retires the empty table of `level` ([`Level::L1`] or [`Level::L2`]) that the table
/// rooted at `root` uses for `va`: unlinks it, flushes the TLB (the paging-structure
/// caches may hold the link), gives it back to the backend ([`MmuOps::release_pt`]: under
/// Xen it is mapped writable again) and to the allocator. This order is the one Xen
/// accepts. Refuses a table that still maps something ([`MapError::TableInUse`]) and an
/// L2 of the live root (bare hardware would not see the PDPT change before a cr3 reload).
/// Returns the table's frame.
pub fn retire_table<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
    root: PhysFrame,
    va: VirtAddr,
    level: Level,
) -> Result<PhysFrame, MapError<P::Error>> {
    let parent = match level {
        Level::L1 => Level::L2,
        _ => Level::L3,
    };
    if parent == Level::L3 && root == p.read_cr3() {
        return Err(MapError::LivePdptEntry(va));
    }
    let w = walk::walk_down_to(&Tables(&*p), root, va, parent)?;
    if w.level != parent || !w.entry.is_present() {
        return Err(MapError::NotMapped(va));
    }
    if w.is_huge() {
        return Err(MapError::HugePage(va));
    }
    let table = next_table(p, w.entry)?;
    for i in EntryIndex::all() {
        if read_entry(p, table, i)?.is_present() {
            return Err(MapError::TableInUse { table, index: i });
        }
    }
    // One lazy section: under Xen the unlink, the flush and the remap go out as one batch,
    // in this order.
    let mut lazy = LazyMmu::enter(p);
    // SAFETY: the table maps nothing: unlinking it changes no mapping.
    let unlinked = unsafe {
        match parent {
            Level::L2 => lazy.pmd_clear(w.slot),
            _ => lazy.pud_clear(w.slot),
        }
    };
    unlinked.map_err(MapError::Backend)?;
    lazy.flush_tlb_all().map_err(MapError::Backend)?;
    lazy.release_pt(table, level).map_err(MapError::Backend)?;
    lazy.finish().map_err(MapError::Backend)?;
    alloc.free(table)?;
    Ok(table)
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
pub const LINEAR_MAX_BYTES: u64 = (ENTRIES as u64) * crate::paging::L2_SPAN as u64;

/// Maps every frame of `ranges` at `base + pa` with 4 KiB pages and `flags` in the table
/// rooted at `root` (whose L3 entries for the span must be present). A backend that keeps
/// page tables read-only (Xen) maps the page-table frames among them read-only itself.
///
/// All L1 tables are allocated (or found) before any page is mapped; then every PTE is
/// written in lazy mode. Frames at or above [`LINEAR_MAX_BYTES`] are skipped.
pub fn map_linear<P: Platform, A: FrameAlloc + ?Sized>(
    p: &mut P,
    alloc: &mut A,
    root: PhysFrame,
    base: VirtAddr,
    ranges: &[crate::addr::FrameRange],
    flags: PteFlags,
) -> Result<LinearMap, MapError<P::Error>> {
    const CHUNK_FRAMES: u32 = crate::paging::L2_SPAN / PAGE_SIZE as u32;
    let mut l1s = [None::<PhysFrame>; ENTRIES];
    for r in ranges {
        let last = r.end.number().div_ceil(CHUNK_FRAMES).min(ENTRIES as u32);
        for c in (r.start.number() / CHUNK_FRAMES)..last {
            l1s[c as usize] = Some(PhysFrame::new(0));
        }
    }
    let mut lazy = LazyMmu::enter(p);
    let mut done = LinearMap::default();
    for (chunk, t) in l1s.iter_mut().enumerate() {
        if t.is_none() {
            continue;
        }
        let va = base.wrapping_add(chunk as u32 * crate::paging::L2_SPAN);
        let w = walk::walk_down_to(&Tables(&*lazy), root, va, Level::L2)?;
        if w.level != Level::L2 {
            return Err(MapError::NotMapped(va));
        }
        if w.is_huge() {
            return Err(MapError::HugePage(va));
        }
        let frame = if w.entry.is_present() {
            next_table(&*lazy, w.entry)?
        } else {
            let (l1, link) = new_table(&mut *lazy, alloc, Level::L1)?;
            // SAFETY: links a fresh, zeroed, announced L1 where nothing was mapped.
            unsafe { lazy.set_pmd(w.slot, link) }.map_err(MapError::Backend)?;
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
            let va = base.wrapping_add(f.number() << 12);
            let mfn = lazy.phys_to_machine(f).ok_or(MapError::NoMachineFrame(f))?;
            let slot = EntrySlot::new(l1, va.l1_index());
            // SAFETY: the caller owns the span; the slot is in an L1 found or made above.
            unsafe { lazy.set_pte(slot, PageTableEntry::new(mfn, flags)) }
                .map_err(MapError::Backend)?;
            done.ptes += 1;
        }
    }
    lazy.finish().map_err(MapError::Backend)?;
    Ok(done)
}

//! The Xen PV `MmuOps`: page-table writes through `mmu_update` (batched in lazy mode, see
//! `batch.rs`), page-table frames read-only in every mapping (the backend's invariant, kept by
//! `alloc_pt`/`release_pt` and `set_pte`), pins separate from the NEW_BASEPTR switch, and the
//! unpin of `start_info.pt_base` at the first switch.

mod batch;
mod error;
mod tables;

use tables::{set_bit, Store};

pub use error::{XenError, XenOp};

use crate::abi::{mmuext, Errno, MachphysMapping, MmuUpdate, MmuextOp, VIRT_BASE};
use crate::counters::XenCounters;
use crate::hypervisor::{BackendLog, Hypervisor};
use crate::options::XenOptions;
use crate::start_info::XenBootFacts;
use pvops_core::addr::{FrameRange, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::ops::{MemoryLayout, MmuOps, PageFault, Platform};
use pvops_core::options::OptionErrorKind;
use pvops_core::paging::{EntrySlot, Level, PageTableEntry, PteFlags};

/// Most page-table updates one `mmu_update` carries in lazy mode.
pub const QUEUE_CAPACITY: usize = 1024;
const MIB: u32 = 1024 * 1024;

/// mmuext operations (flushes) queued in lazy mode.
const EXT_QUEUE_CAPACITY: usize = 32;
/// Frames whose "detached table" and "page table" states are tracked (1 GiB: any 32-bit
/// lowmem).
const DETACHED_FRAMES: usize = 1 << 18;
/// Buckets of [`XenMmu`]'s machine-frame filter for page tables (a power of two).
const TABLE_BUCKETS: usize = 1 << 13;
/// Most roots pinned at once (the kernel's, its address spaces', Xen's bootstrap table).
pub const MAX_PINNED: usize = 32;

/// The Xen PV backend, generic over the hypercall layer.
pub struct XenMmu<H: Hypervisor + BackendLog> {
    hv: H,
    layout: MemoryLayout,
    nr_pages: u32,
    start_info: PhysFrame,
    cr3: PhysFrame,
    pt_base: PhysFrame,
    bootstrap: FrameRange,
    reach: PhysFrame,
    /// The options in force; they can change until the first page table is announced.
    options: XenOptions,
    configurable: bool,
    skip_unpin: bool,
    batch: usize,
    lazy: bool,
    queue: [MmuUpdate; QUEUE_CAPACITY],
    queued: usize,
    ext_queue: [MmuextOp; EXT_QUEUE_CAPACITY],
    ext_queued: usize,
    /// Page-table frames announced with `alloc_pt` that no live table reaches yet: ordinary
    /// writable memory, written with plain stores (as Linux writes unpinned tables), made
    /// read-only when they go live (linked into a live table, or installed by write_cr3).
    detached: [u64; DETACHED_FRAMES / 64],
    /// Plain stores into detached tables (off with `pvops.batch=1`: every write a hypercall).
    direct_stores: bool,
    /// Every page-table frame (announced with `alloc_pt`, or Xen's bootstrap table): never
    /// mapped writable anywhere.
    tables: [u64; DETACHED_FRAMES / 64],
    /// How many page-table frames have a machine frame in each bucket (`mfn % TABLE_BUCKETS`;
    /// saturating: a full bucket stays full). `set_pte` asks the M2P whether a writable
    /// mapping targets a table only when its bucket is not empty: the direct map writes one
    /// PTE per frame of RAM and almost none of them lands in a bucket a table uses.
    table_buckets: [u8; TABLE_BUCKETS],
    /// The kernel's root while it is being built (from `pagetable_setup_start` until it goes
    /// live): its direct map must keep page tables read-only too.
    pending: Option<PhysFrame>,
    /// True until the first `write_cr3`: the CPU runs on Xen's bootstrap table.
    on_bootstrap: bool,
    /// The roots pinned now.
    pinned: [PhysFrame; MAX_PINNED],
    npinned: usize,
    /// An error of a flush nobody could report (a dropped `LazyMmu`), for the next operation.
    deferred: Option<XenError>,
    stats: XenCounters,
}

/// The guest's layout below the hypervisor hole at `v_start`: the early_ioremap window in
/// the 2 MiB below the (2 MiB aligned) hole, the scratch area below it, lowmem from
/// `VIRT_BASE` up to the scratch area. A hole too low for that is refused, not wrapped.
pub fn layout_below_hole(v_start: u32) -> Result<MemoryLayout, XenError> {
    let too_low = XenError::HoleTooLow { v_start };
    let hole = v_start & !(2 * MIB - 1);
    let window = hole.checked_sub(2 * MIB).ok_or(too_low)?;
    let scratch = window.checked_sub(2 * MIB).ok_or(too_low)?;
    let lowmem = scratch
        .checked_sub(VIRT_BASE)
        .filter(|l| *l > 0)
        .ok_or(too_low)?;
    Ok(MemoryLayout {
        page_offset: VirtAddr::new(VIRT_BASE),
        lowmem_limit: lowmem as u64,
        ioremap_window: VirtAddr::new(window),
        scratch_area: VirtAddr::new(scratch),
        lowmem_formula: "hole start (XENMEM_machphys_mapping) - 2 MiB early_ioremap window - 2 MiB scratch - 0xC0000000",
        hypervisor_start: Some(VirtAddr::new(v_start)),
    })
}

impl<H: Hypervisor + BackendLog> XenMmu<H> {
    /// Sets up the backend on Xen's bootstrap table (`read_cr3` = `pt_base` until the switch).
    /// Asks Xen where the hypervisor hole starts (`XENMEM_machphys_mapping`) and places the
    /// early_ioremap window and the scratch area right below it.
    ///
    /// `XenMmu` is large (about 88 KiB: the update queue and the frame bitmaps), and this
    /// returns it by value: fine on a host. A kernel's `XenMmu` is not made here but set up in
    /// place, in a static of backend-xen's entry: an unoptimised build copies a by-value
    /// `XenMmu` several times through the stack (this function's frame and its caller's were
    /// 266 + 272 KiB in a debug guest-demo, more than the 256 KiB boot stack: Xen killed the
    /// domain without a word).
    pub fn new(hv: H, facts: &XenBootFacts<'_>, opts: &XenOptions) -> Result<Self, XenError> {
        let mut mmu = Self::empty(hv);
        mmu.set_up(facts, opts)?;
        Ok(mmu)
    }

    /// A backend over `hv` that knows no domain yet (no frame, nothing pinned), as a
    /// constant: the initialiser of a static `XenMmu`, which [`XenMmu::init`] then sets up
    /// in place (what backend-xen's entry does).
    pub const fn empty(hv: H) -> Self {
        XenMmu {
            hv,
            layout: MemoryLayout {
                page_offset: VirtAddr::new(VIRT_BASE),
                lowmem_limit: 0,
                ioremap_window: VirtAddr::new(0),
                scratch_area: VirtAddr::new(0),
                lowmem_formula: "",
                hypervisor_start: None,
            },
            nr_pages: 0,
            start_info: PhysFrame::new(0),
            cr3: PhysFrame::new(0),
            pt_base: PhysFrame::new(0),
            bootstrap: FrameRange::EMPTY,
            reach: PhysFrame::new(0),
            options: XenOptions::DEFAULT,
            configurable: true,
            skip_unpin: false,
            batch: QUEUE_CAPACITY,
            lazy: false,
            queue: [MmuUpdate { ptr: 0, val: 0 }; QUEUE_CAPACITY],
            queued: 0,
            ext_queue: [MmuextOp {
                cmd: 0,
                arg1: 0,
                arg2: 0,
            }; EXT_QUEUE_CAPACITY],
            ext_queued: 0,
            detached: [0; DETACHED_FRAMES / 64],
            direct_stores: true,
            tables: [0; DETACHED_FRAMES / 64],
            table_buckets: [0; TABLE_BUCKETS],
            pending: None,
            on_bootstrap: true,
            pinned: [PhysFrame::new(0); MAX_PINNED],
            npinned: 0,
            deferred: None,
            stats: XenCounters::ZERO,
        }
    }

    /// [`XenMmu::new`] in place: `self` (an [`XenMmu::empty`], or a backend to start over)
    /// becomes the backend for the domain `facts` describes, over `hv`, every field set
    /// anew, without a `XenMmu` value passing through the stack.
    pub fn init(
        &mut self,
        hv: H,
        facts: &XenBootFacts<'_>,
        opts: &XenOptions,
    ) -> Result<(), XenError> {
        self.hv = hv;
        self.set_up(facts, opts)
    }

    /// Every field but `hv` for the domain `facts` describes, assigned one by one (large
    /// arrays filled in place), as [`XenMmu::empty`] left them or from any earlier state.
    fn set_up(&mut self, facts: &XenBootFacts<'_>, opts: &XenOptions) -> Result<(), XenError> {
        let mut mm = MachphysMapping::default();
        let ret = self.hv.machphys_mapping(&mut mm);
        if let Some(errno) = Errno::from_ret(ret) {
            return Err(XenError::Hypercall {
                op: XenOp::MachphysMapping,
                errno,
                index: 0,
                arg: 0,
            });
        }
        self.layout = layout_below_hole(mm.v_start)?;
        self.nr_pages = facts.nr_pages;
        self.start_info = facts.start_info;
        self.cr3 = facts.pt_base;
        self.pt_base = facts.pt_base;
        self.bootstrap = facts.bootstrap_tables;
        self.reach = PhysFrame::new(facts.nr_pages);
        self.configurable = true;
        self.lazy = false;
        self.queued = 0;
        self.ext_queued = 0;
        self.detached.fill(0);
        self.tables.fill(0);
        self.table_buckets.fill(0);
        self.pending = None;
        self.on_bootstrap = true;
        self.deferred = None;
        self.stats = XenCounters::ZERO;
        // The domain builder pinned pt_base; its frames are page tables.
        self.pinned[0] = facts.pt_base;
        self.npinned = 1;
        for f in facts.bootstrap_tables.iter() {
            self.mark_table(f, true);
        }
        self.configure(*opts);
        self.reach = self.measure_reach();
        Ok(())
    }

    /// Frames reachable now (through Xen's bootstrap mapping before the switch).
    pub fn reach(&self) -> PhysFrame {
        self.reach
    }
    /// Hypercall counters.
    pub fn stats(&self) -> XenCounters {
        self.stats
    }
    fn configure(&mut self, opts: XenOptions) {
        self.options = opts;
        self.skip_unpin = opts.skip_unpin();
        self.batch = match opts.batch {
            0 => QUEUE_CAPACITY,
            n => (n as usize).min(QUEUE_CAPACITY),
        };
        self.direct_stores = opts.batch != 1;
    }
    /// The options in force.
    pub fn options(&self) -> XenOptions {
        self.options
    }
    /// Most page-table updates per `mmu_update` in lazy mode.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// start_info's frame (as the domain builder placed it).
    pub fn start_info(&self) -> PhysFrame {
        self.start_info
    }
    /// The hypercall layer, to read (p2m, m2p; the host model's state in tests).
    pub fn hypervisor(&self) -> &H {
        &self.hv
    }
    /// The hypercall layer, for raw hypercalls behind the backend's back (Xen conformance
    /// cases; fault injection in the host model).
    ///
    /// # Safety
    /// A raw hypercall bypasses every check and all bookkeeping of `XenMmu`: the caller must
    /// not queue work through the backend meanwhile (no lazy mode) and must leave every
    /// table, pin, type and mapping of the kernel as it found them.
    pub unsafe fn hypervisor_mut(&mut self) -> &mut H {
        &mut self.hv
    }
    /// Gives the hypercall layer back.
    pub fn into_hypervisor(self) -> H {
        self.hv
    }
}

impl<H: Hypervisor + BackendLog> XenMmu<H> {
    /// Makes every detached frame of the tree rooted at `root` read-only, queued (issued with
    /// the pin or the switch that follows).
    fn attach_root(&mut self, root: PhysFrame) -> Result<(), XenError> {
        let was_lazy = self.lazy;
        self.lazy = true;
        let attached = self.attach(root, Level::L3);
        self.lazy = was_lazy;
        attached
    }

    /// The backend's invariant: a page-table frame is never mapped writable, in any table
    /// (live or being built), whatever the caller asked.
    /// The M2P lookup runs only for a frame whose filter bucket holds a table.
    #[inline]
    fn never_writable_table(&self, entry: PageTableEntry) -> PageTableEntry {
        let table = entry.flags().contains(PteFlags::WRITABLE)
            && entry.is_present()
            && entry.frame().is_some_and(|m| {
                self.table_buckets[bucket(m)] != 0
                    && self.to_phys(m).is_some_and(|f| self.is_table(f))
            });
        match table {
            true => entry.with_flags(entry.flags() - PteFlags::WRITABLE),
            false => entry,
        }
    }
}

/// The filter bucket of a machine frame.
fn bucket(mfn: MachineFrame) -> usize {
    mfn.number() as usize % TABLE_BUCKETS
}

impl<H: Hypervisor + BackendLog> XenMmu<H> {
    /// Records that `pfn` is (or no longer is) a page-table frame: the bitmap by pseudo-physical
    /// frame and the machine-frame filter of `never_writable_table`. A frame without a machine
    /// frame saturates every bucket (the filter then never skips the lookup).
    fn mark_table(&mut self, pfn: PhysFrame, on: bool) {
        let was = self.is_table(pfn);
        set_bit(&mut self.tables, pfn, on);
        if was == self.is_table(pfn) {
            return;
        }
        match self.hv.p2m(pfn) {
            Some(mfn) => {
                let count = &mut self.table_buckets[bucket(mfn)];
                *count = match (on, *count) {
                    (_, u8::MAX) => u8::MAX,
                    (true, c) => c + 1,
                    (false, c) => c.saturating_sub(1),
                };
            }
            None => self.table_buckets = [u8::MAX; TABLE_BUCKETS],
        }
    }
}

impl<H: Hypervisor + BackendLog> MmuOps for XenMmu<H> {
    type Error = XenError;
    type Counters = XenCounters;
    const NAME: &'static str = "xen";
    const READ_ONLY_PAGE_TABLES: bool = true;

    fn layout(&self) -> MemoryLayout {
        self.layout
    }
    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame> {
        self.hv.p2m(frame)
    }
    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame> {
        self.to_phys(frame)
    }
    fn read_cr3(&self) -> PhysFrame {
        self.cr3
    }
    unsafe fn write_cr3(&mut self, root: PhysFrame) -> Result<(), XenError> {
        // Every frame of the new table goes read-only (queued), then NEW_BASEPTR (Xen
        // validates an unpinned table on the spot) and, leaving Xen's bootstrap table, the
        // unpin of pt_base in the same batch: Linux 2b5407811db7 unpins right after its cr3
        // write, or the frames keep their page-table types and cannot be reused. No pin
        // here: that is `pin_root`, once per root.
        self.attach_root(root)?;
        let mfn = self.mfn(root)?.number();
        let pt_mfn = self.mfn(self.pt_base)?.number();
        // Only the first switch leaves Xen's bootstrap table: pt_base's frame may be reused
        // later, even as the root of an address space (whose switches must not unpin it).
        let leaving_bootstrap = self.on_bootstrap && self.is_pinned(self.pt_base);
        let unpin = leaving_bootstrap && !self.skip_unpin;
        self.queue_ext(MmuextOp {
            cmd: mmuext::NEW_BASEPTR,
            arg1: mfn,
            arg2: 0,
        })?;
        if unpin {
            self.queue_ext(MmuextOp {
                cmd: mmuext::UNPIN_TABLE,
                arg1: pt_mfn,
                arg2: 0,
            })?;
        }
        self.flush_queue()?;
        let old = self.cr3;
        self.cr3 = root;
        self.on_bootstrap = false;
        if self.pending == Some(root) {
            self.pending = None;
        }
        self.reach = PhysFrame::new(
            self.nr_pages
                .min((self.layout.lowmem_limit / PAGE_SIZE) as u32),
        );
        if unpin {
            self.set_pinned(self.pt_base, false);
            self.hv.log(format_args!(
                "xen: NEW_BASEPTR mfn={mfn:#x} (pfn {root}) + UNPIN_TABLE pt_base pfn {old} (mfn {pt_mfn:#x}): ok"
            ));
        } else if leaving_bootstrap {
            self.hv.log(format_args!(
                "xen: NEW_BASEPTR mfn={mfn:#x} (pfn {root}): ok; pt_base pfn {} stays pinned (pvops.skip_unpin)",
                self.pt_base
            ));
        }
        Ok(())
    }
    fn pin_root(&mut self, root: PhysFrame) -> Result<(), XenError> {
        if self.is_pinned(root) {
            return Err(XenError::AlreadyPinned { pfn: root });
        }
        if self.npinned == MAX_PINNED {
            return Err(XenError::TooManyPinned { pfn: root });
        }
        // Read-only first (queued), then the pin, in one batch (a multicall when both).
        self.attach_root(root)?;
        let mfn = self.mfn(root)?.number();
        self.queue_ext(MmuextOp {
            cmd: mmuext::PIN_L3_TABLE,
            arg1: mfn,
            arg2: 0,
        })?;
        self.flush_queue()?;
        self.set_pinned(root, true);
        if self.cr3 == self.pt_base {
            self.hv.log(format_args!(
                "xen: PIN_L3_TABLE mfn={mfn:#x} (pfn {root}): ok"
            ));
        }
        Ok(())
    }
    fn unpin_root(&mut self, root: PhysFrame) -> Result<(), XenError> {
        if !self.is_pinned(root) {
            return Err(XenError::NotPinned { pfn: root });
        }
        if root == self.cr3 {
            return Err(XenError::LiveRoot { pfn: root });
        }
        let mfn = self.mfn(root)?.number();
        self.mmuext(&[MmuextOp {
            cmd: mmuext::UNPIN_TABLE,
            arg1: mfn,
            arg2: 0,
        }])?;
        self.set_pinned(root, false);
        Ok(())
    }
    #[inline]
    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), XenError> {
        let entry = self.never_writable_table(entry);
        self.store(slot, entry, Store::Split)
    }
    unsafe fn set_pte_atomic(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), XenError> {
        let entry = self.never_writable_table(entry);
        self.store(slot, entry, Store::Whole)
    }
    unsafe fn set_pmd(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), XenError> {
        self.link(slot, entry, Level::L1)
    }
    unsafe fn set_pud(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), XenError> {
        self.link(slot, entry, Level::L2)
    }
    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), XenError> {
        self.store(slot, PageTableEntry::EMPTY, Store::Clear)
    }
    unsafe fn pmd_clear(&mut self, slot: EntrySlot) -> Result<(), XenError> {
        self.store(slot, PageTableEntry::EMPTY, Store::Clear)
    }
    unsafe fn pud_clear(&mut self, slot: EntrySlot) -> Result<(), XenError> {
        self.store(slot, PageTableEntry::EMPTY, Store::Clear)?;
        if slot.table() == self.cr3 {
            // What bare metal does with a cr3 reload: no translation through the cleared
            // entry survives.
            self.flush_tlb_all()?;
        }
        Ok(())
    }
    fn flush_tlb_single(&mut self, va: VirtAddr) -> Result<(), XenError> {
        self.flush_op(MmuextOp {
            cmd: mmuext::INVLPG_LOCAL,
            arg1: va.as_u32(),
            arg2: 0,
        })
    }
    fn flush_tlb_all(&mut self) -> Result<(), XenError> {
        self.flush_op(MmuextOp {
            cmd: mmuext::TLB_FLUSH_LOCAL,
            arg1: 0,
            arg2: 0,
        })
    }
    fn pagetable_setup_start(&mut self, root: PhysFrame) -> Result<(), XenError> {
        self.pending = Some(root);
        self.hv.log(format_args!(
            "xen: building the kernel table at pfn {root} beside Xen's at pt_base pfn {} (pinned by the domain builder)",
            self.pt_base
        ));
        Ok(())
    }
    fn pagetable_setup_done(&mut self, _root: PhysFrame) -> Result<FrameRange, XenError> {
        // pt_base was unpinned by write_cr3; its frames are ordinary memory again only if
        // nothing pins it any more: making them writable is where Xen says EBUSY otherwise.
        let frames = self.bootstrap;
        let was_lazy = self.lazy;
        self.lazy = true;
        let mut result = Ok(());
        for f in frames.iter() {
            self.mark_table(f, false);
            result = self.set_writable(f, true);
            if result.is_err() {
                break;
            }
        }
        // Read-only -> writable: a stale read-only TLB entry could fault spuriously.
        if result.is_ok() {
            result = self.flush_op(MmuextOp {
                cmd: mmuext::TLB_FLUSH_LOCAL,
                arg1: 0,
                arg2: 0,
            });
        }
        if result.is_ok() {
            result = self.flush_queue();
        }
        self.queued = 0;
        self.lazy = was_lazy;
        result?;
        self.hv.log(format_args!(
            "xen: bootstrap frames pfn {}..{} ({}) mapped writable again",
            frames.start,
            frames.end,
            frames.len()
        ));
        Ok(frames)
    }
    fn alloc_pt(&mut self, frame: PhysFrame, _level: Level) -> Result<(), XenError> {
        self.configurable = false;
        self.mark_table(frame, true);
        // The kernel's root being built may map the frame writable already (its direct map
        // was written before the frame became a table): read-only there now.
        if let Some(root) = self.pending.filter(|r| *r != self.cr3) {
            self.patch_direct_map(root, frame, false)?;
        }
        // A new table is detached (plain writable memory in the live table) until it goes
        // live; with pvops.batch=1, or beyond the tracked range, it is read-only from the
        // start.
        if self.direct_stores && self.set_detached(frame, true) {
            return Ok(());
        }
        self.set_writable(frame, false)
    }
    fn release_pt(&mut self, frame: PhysFrame, _level: Level) -> Result<(), XenError> {
        self.mark_table(frame, false);
        if let Some(root) = self.pending.filter(|r| *r != self.cr3) {
            self.patch_direct_map(root, frame, true)?;
        }
        if self.is_detached(frame) {
            self.set_detached(frame, false);
            return Ok(());
        }
        self.set_writable(frame, true)?;
        // Read-only -> writable: flush the page (a stale read-only entry faults spuriously).
        self.flush_op(MmuextOp {
            cmd: mmuext::INVLPG_LOCAL,
            arg1: VIRT_BASE.wrapping_add(frame.number() << 12),
            arg2: 0,
        })
    }
    /// `pvops.batch=N` and (with the `bug-skip-unpin` feature) `pvops.skip_unpin`, before
    /// the first page table is announced.
    fn set_option(&mut self, key: &str, value: Option<&str>) -> Result<(), OptionErrorKind> {
        let mut o = self.options;
        o.apply(key, value)?;
        if !self.configurable {
            return Err(OptionErrorKind::TooLate);
        }
        self.configure(o);
        Ok(())
    }
    fn counters(&self) -> XenCounters {
        self.stats
    }
    fn enter_lazy_mmu(&mut self) {
        self.lazy = true;
    }
    fn is_lazy(&self) -> bool {
        self.lazy
    }
    fn queued_entry(&self, slot: EntrySlot) -> Option<PageTableEntry> {
        self.queued_value(slot)
    }
    fn defer_error(&mut self, e: XenError) {
        self.deferred.get_or_insert(e);
    }
    fn flush_lazy_mmu(&mut self) -> Result<(), XenError> {
        self.flush_queue()
    }
    fn leave_lazy_mmu(&mut self) -> Result<(), XenError> {
        let r = self.flush_lazy_mmu();
        self.lazy = false;
        r
    }
}

impl<H: Hypervisor + BackendLog> Platform for XenMmu<H> {
    fn frame_ptr(&self, frame: PhysFrame) -> Option<*mut u8> {
        (frame < self.reach).then(|| self.hv.frame_ptr(frame))
    }
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.hv.read_virt(va, buf) }
    }
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.hv.write_virt(va, data) }
    }
    fn cycles(&self) -> u64 {
        self.hv.cycles()
    }
    fn not_running_ns(&self) -> Option<u64> {
        self.hv.not_running_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_xens_hole_and_of_holes_too_low() {
        // Xen 4.17's 32-bit PV hole (the M2P at 0xF5800000).
        let l = layout_below_hole(0xF580_0000).unwrap();
        assert_eq!(l.ioremap_window, VirtAddr::new(0xF560_0000));
        assert_eq!(l.scratch_area, VirtAddr::new(0xF540_0000));
        assert_eq!(l.lowmem_limit, 0x3540_0000);
        // A hole at or below VIRT_BASE + 4 MiB leaves nothing: refused, not wrapped.
        for v_start in [0, 0x10_0000, 0x3F_FFFF, VIRT_BASE, VIRT_BASE + 0x40_0000] {
            assert_eq!(
                layout_below_hole(v_start).unwrap_err(),
                XenError::HoleTooLow { v_start }
            );
        }
        assert!(layout_below_hole(VIRT_BASE + 0x60_0000).is_ok());
    }
}

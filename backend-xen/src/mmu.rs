//! The Xen PV `MmuOps`: page-table writes through `mmu_update` (batched in lazy mode),
//! page-table frames read-only in every mapping, pin + NEW_BASEPTR, and the unpin of
//! `start_info.pt_base` after the switch.

use crate::abi::{
    mmuext, Errno, MachphysMapping, MmuUpdate, MmuextOp, MMU_NORMAL_PT_UPDATE, VIRT_BASE,
};
use crate::counters::XenCounters;
use crate::hypervisor::{BackendLog, Hypervisor};
use crate::options::XenOptions;
use crate::start_info::XenBootFacts;
use core::fmt;
use pvops_core::addr::{EntryIndex, FrameRange, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::ops::{MemoryLayout, MmuOps, PageFault, Platform};
use pvops_core::options::OptionErrorKind;
use pvops_core::pae;
use pvops_core::paging::{
    EntrySlot, Level, PageTableEntry, PteFlags, ENTRIES, KERNEL_RO, KERNEL_RW, PDPT_ENTRIES,
};

/// How a primitive stores into a table that is not live yet (see [`pvops_core::pae`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// `set_pte`: high half, then low half.
    Split,
    /// `set_pte_atomic`, `set_pmd`, `set_pud`: one 64-bit store.
    Whole,
    /// The clears: low half first.
    Clear,
}

/// Most page-table updates one `mmu_update` carries in lazy mode.
pub const QUEUE_CAPACITY: usize = 1024;
const MIB: u32 = 1024 * 1024;

/// The hypercall (or sub-operation) that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenOp {
    /// `mmu_update`.
    MmuUpdate,
    /// `mmuext_op` with this command.
    MmuextOp(u32),
    /// `memory_op(XENMEM_machphys_mapping)`.
    MachphysMapping,
}

impl fmt::Display for XenOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenOp::MmuUpdate => f.write_str("mmu_update"),
            XenOp::MmuextOp(cmd) => f.write_str(match *cmd {
                mmuext::PIN_L1_TABLE => "mmuext_op(PIN_L1_TABLE)",
                mmuext::PIN_L2_TABLE => "mmuext_op(PIN_L2_TABLE)",
                mmuext::PIN_L3_TABLE => "mmuext_op(PIN_L3_TABLE)",
                mmuext::UNPIN_TABLE => "mmuext_op(UNPIN_TABLE)",
                mmuext::NEW_BASEPTR => "mmuext_op(NEW_BASEPTR)",
                mmuext::TLB_FLUSH_LOCAL => "mmuext_op(TLB_FLUSH_LOCAL)",
                mmuext::INVLPG_LOCAL => "mmuext_op(INVLPG_LOCAL)",
                _ => "mmuext_op",
            }),
            XenOp::MachphysMapping => f.write_str("memory_op(XENMEM_machphys_mapping)"),
        }
    }
}

/// An error of the Xen backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenError {
    /// Xen refused a hypercall.
    Hypercall {
        /// Which.
        op: XenOp,
        /// The errno Xen returned.
        errno: Errno,
        /// Index of the failing entry in the batch (Xen reports how many succeeded).
        index: u32,
        /// The failing entry's main argument (ptr of an mmu_update, mfn of an mmuext_op).
        arg: u64,
    },
    /// A frame that must be reachable is not mapped in the live table.
    NotMapped {
        /// The virtual address.
        va: VirtAddr,
    },
    /// A pfn outside the p2m list.
    NoMachineFrame {
        /// The pfn.
        pfn: PhysFrame,
    },
    /// The hypervisor hole (`XENMEM_machphys_mapping`) starts too low to leave the
    /// early_ioremap window, the scratch area and any lowmem above `VIRT_BASE`.
    HoleTooLow {
        /// The hole's start as Xen reported it.
        v_start: u32,
    },
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenError::Hypercall {
                op,
                errno,
                index,
                arg,
            } => {
                write!(f, "xen {errno}: {op}[{index}] arg={arg:#x}")
            }
            XenError::NotMapped { va } => {
                write!(f, "xen backend: {va} is not mapped in the live table")
            }
            XenError::NoMachineFrame { pfn } => {
                write!(f, "xen backend: pfn {pfn} is not in the p2m list")
            }
            XenError::HoleTooLow { v_start } => write!(
                f,
                "xen backend: hypervisor hole at {v_start:#x} leaves no lowmem above {VIRT_BASE:#x}"
            ),
        }
    }
}

/// mmuext operations (flushes) queued in lazy mode.
const EXT_QUEUE_CAPACITY: usize = 32;
/// Frames whose "detached table" state is tracked (1 GiB: any 32-bit lowmem).
const DETACHED_FRAMES: usize = 1 << 18;

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
    pt_base_pinned: bool,
    /// Page-table frames announced with `alloc_pt` that no live table reaches yet: ordinary
    /// writable memory, written with plain stores (as Linux writes unpinned tables), made
    /// read-only when they go live (linked into a live table, or installed by write_cr3).
    detached: [u64; DETACHED_FRAMES / 64],
    /// Plain stores into detached tables (off with `pvops.batch=1`: every write a hypercall).
    direct_stores: bool,
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
    })
}

impl<H: Hypervisor + BackendLog> XenMmu<H> {
    /// Sets up the backend on Xen's bootstrap table (`read_cr3` = `pt_base` until the switch).
    /// Asks Xen where the hypervisor hole starts (`XENMEM_machphys_mapping`) and places the
    /// early_ioremap window and the scratch area right below it.
    pub fn new(mut hv: H, facts: &XenBootFacts<'_>, opts: &XenOptions) -> Result<Self, XenError> {
        let mut mm = MachphysMapping::default();
        let ret = hv.machphys_mapping(&mut mm);
        if let Some(errno) = Errno::from_ret(ret) {
            return Err(XenError::Hypercall {
                op: XenOp::MachphysMapping,
                errno,
                index: 0,
                arg: 0,
            });
        }
        let layout = layout_below_hole(mm.v_start)?;
        let mut mmu = XenMmu {
            hv,
            layout,
            nr_pages: facts.nr_pages,
            start_info: facts.start_info,
            cr3: facts.pt_base,
            pt_base: facts.pt_base,
            bootstrap: facts.bootstrap_tables,
            reach: PhysFrame::new(facts.nr_pages),
            options: *opts,
            configurable: true,
            skip_unpin: false,
            batch: QUEUE_CAPACITY,
            lazy: false,
            queue: [MmuUpdate::default(); QUEUE_CAPACITY],
            queued: 0,
            ext_queue: [MmuextOp::default(); EXT_QUEUE_CAPACITY],
            ext_queued: 0,
            pt_base_pinned: true,
            detached: [0; DETACHED_FRAMES / 64],
            direct_stores: true,
            stats: XenCounters::default(),
        };
        mmu.configure(*opts);
        mmu.reach = mmu.measure_reach();
        Ok(mmu)
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

    /// How far the live table maps the 1:1 region from VIRT_BASE, page by page.
    fn measure_reach(&self) -> PhysFrame {
        let mut pfn = 0;
        while pfn < self.nr_pages {
            let va = VirtAddr::new(VIRT_BASE + pfn * PAGE_SIZE as u32);
            if self.live_entry(va).is_err() {
                break;
            }
            pfn += 1;
        }
        PhysFrame::new(pfn)
    }

    fn read(
        &self,
        table: PhysFrame,
        index: impl Into<EntryIndex>,
    ) -> Result<PageTableEntry, XenError> {
        if table >= self.reach {
            return Err(XenError::NotMapped {
                va: VirtAddr::new(VIRT_BASE.wrapping_add(table.number() << 12)),
            });
        }
        let p = self.hv.frame_ptr(table) as *const u64;
        // SAFETY: page-table frames are below `reach` (mapped, at least read-only) and an
        // EntryIndex is < 512.
        Ok(PageTableEntry::from_bits(unsafe {
            core::ptr::read_volatile(p.add(index.into().get()))
        }))
    }

    fn to_phys(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        let pfn = self.hv.m2p(mfn)?;
        (pfn.number() < self.nr_pages && self.hv.p2m(pfn) == Some(mfn)).then_some(pfn)
    }

    /// The live L1 slot and entry mapping `va` (4 KiB pages only: a PV guest has no others).
    fn live_entry(&self, va: VirtAddr) -> Result<(EntrySlot, PageTableEntry), XenError> {
        let nm = XenError::NotMapped { va };
        let l3e = self.read(self.cr3, va.l3_index())?;
        let l2 = l3e
            .is_present()
            .then(|| l3e.frame().and_then(|m| self.to_phys(m)))
            .flatten()
            .ok_or(nm)?;
        let l2e = self.read(l2, va.l2_index())?;
        if !l2e.is_present() || l2e.flags().contains(PteFlags::HUGE) {
            return Err(nm);
        }
        let l1 = l2e.frame().and_then(|m| self.to_phys(m)).ok_or(nm)?;
        let l1e = self.read(l1, va.l1_index())?;
        if !l1e.is_present() {
            return Err(nm);
        }
        Ok((EntrySlot::new(l1, va.l1_index()), l1e))
    }

    fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, XenError> {
        self.hv.p2m(pfn).ok_or(XenError::NoMachineFrame { pfn })
    }

    #[inline]
    fn is_detached(&self, pfn: PhysFrame) -> bool {
        let i = pfn.number() as usize;
        i < DETACHED_FRAMES && self.detached[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_detached(&mut self, pfn: PhysFrame, on: bool) -> bool {
        let i = pfn.number() as usize;
        if i >= DETACHED_FRAMES {
            return false;
        }
        let bit = 1u64 << (i % 64);
        if on {
            self.detached[i / 64] |= bit;
        } else {
            self.detached[i / 64] &= !bit;
        }
        true
    }

    /// Writes one entry: a store of the primitive's kind ([`Store`]) into a detached table
    /// (Xen does not check tables that are not typed as page tables yet), an `mmu_update`
    /// into anything live (Xen writes the entry whole, so every primitive keeps its
    /// guarantee). Inlined: the direct map takes the plain-store path once per PTE, and as a
    /// call (its error written through memory) it cost about 80 cycles per PTE more than the
    /// stores themselves (guest-demo's store-phase profile: `set_pte` against `raw_store`).
    #[inline]
    fn store(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
        how: Store,
    ) -> Result<(), XenError> {
        if self.is_detached(slot.table()) && slot.table() < self.reach {
            let p = self.hv.frame_ptr(slot.table()) as *mut u64;
            // SAFETY: a detached table frame is ours, reachable (checked), mapped writable and
            // page aligned; an EntryIndex is < 512.
            unsafe {
                let e = p.add(slot.index().get());
                match how {
                    Store::Split => pae::store_split(e, entry),
                    Store::Whole => pae::store_whole(e, entry),
                    Store::Clear => pae::clear(e),
                }
            }
            return Ok(());
        }
        self.update(slot, entry)
    }

    /// A detached table (and the detached tables it links, for an L2 or L3) goes live: every
    /// such frame is made read-only in the live address space, before Xen validates it.
    fn attach(&mut self, table: PhysFrame, level: Level) -> Result<(), XenError> {
        if !self.is_detached(table) {
            return Ok(());
        }
        if level != Level::L1 {
            let count = if level == Level::L3 {
                PDPT_ENTRIES
            } else {
                ENTRIES
            };
            let child = if level == Level::L3 {
                Level::L2
            } else {
                Level::L1
            };
            for i in EntryIndex::all().take(count) {
                let e = self.read(table, i)?;
                if e.is_present() {
                    if let Some(c) = e.frame().and_then(|m| self.to_phys(m)) {
                        self.attach(c, child)?;
                    }
                }
            }
        }
        self.set_detached(table, false);
        self.set_writable(table, false)
    }

    /// A link into `slot.table`: if that table is live and the linked table detached, the
    /// linked table goes live first.
    fn link(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
        child: Level,
    ) -> Result<(), XenError> {
        if entry.is_present() && !self.is_detached(slot.table()) {
            if let Some(c) = entry.frame().and_then(|m| self.to_phys(m)) {
                let was_lazy = self.lazy;
                self.lazy = true;
                let r = self.attach(c, child);
                self.lazy = was_lazy;
                r?;
            }
        }
        self.store(slot, entry, Store::Whole)
    }

    /// Queues (or, outside lazy mode, issues) one checked page-table write.
    fn update(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), XenError> {
        let ptr = self.mfn(slot.table())?.start().as_u64() + slot.byte_offset();
        self.queue[self.queued] = MmuUpdate {
            ptr: ptr | MMU_NORMAL_PT_UPDATE,
            val: entry.bits(),
        };
        self.queued += 1;
        if !self.lazy || self.queued >= self.batch {
            return self.flush_queue();
        }
        Ok(())
    }

    /// Issues what lazy mode queued: the page-table updates as one `mmu_update`, the flushes
    /// as one `mmuext_op`, or both together as one `multicall` when both are pending.
    fn flush_queue(&mut self) -> Result<(), XenError> {
        let (n, m) = (self.queued, self.ext_queued);
        self.queued = 0;
        self.ext_queued = 0;
        match (n, m) {
            (0, 0) => Ok(()),
            (_, 0) => {
                let mut done = 0;
                self.stats.mmu_update_calls += 1;
                // SAFETY: the queue holds only requests XenMmu's checks built (machine
                // addresses of tables it tracks, page-table frames never mapped writable).
                let ret = unsafe { self.hv.mmu_update(&self.queue[..n], &mut done) };
                self.stats.mmu_update_entries += (done as u64).min(n as u64);
                self.mmu_result(ret, done, n)
            }
            (0, _) => {
                let ops = self.ext_queue;
                self.issue_mmuext(&ops[..m])
            }
            _ => {
                let (mut done, mut ops_done) = (0, 0);
                // SAFETY: as above; the flushes are the backend's own invlpgs and full flushes.
                let r = unsafe {
                    self.hv.mmu_then_mmuext(
                        &self.queue[..n],
                        &mut done,
                        &self.ext_queue[..m],
                        &mut ops_done,
                    )
                };
                if r.counts_as_multicall {
                    self.stats.multicall_calls += 1;
                } else {
                    self.stats.mmu_update_calls += 1;
                    self.stats.mmuext_calls += 1;
                }
                self.stats.mmu_update_entries += (done as u64).min(n as u64);
                self.stats.mmuext_ops += m as u64;
                self.mmu_result(r.mmu_update, done, n)?;
                self.ext_result(r.mmuext_op, ops_done, &self.ext_queue[..m])
            }
        }
    }

    fn mmu_result(&self, ret: i32, done: u32, n: usize) -> Result<(), XenError> {
        match Errno::from_ret(ret) {
            None => Ok(()),
            Some(errno) => {
                let index = done.min(n as u32 - 1);
                Err(XenError::Hypercall {
                    op: XenOp::MmuUpdate,
                    errno,
                    index,
                    arg: self.queue[index as usize].ptr,
                })
            }
        }
    }

    fn ext_result(&self, ret: i32, done: u32, ops: &[MmuextOp]) -> Result<(), XenError> {
        match Errno::from_ret(ret) {
            None => Ok(()),
            Some(errno) => {
                let i = done.min(ops.len() as u32 - 1);
                let op = ops[i as usize];
                Err(XenError::Hypercall {
                    op: XenOp::MmuextOp(op.cmd),
                    errno,
                    index: i,
                    arg: op.arg1 as u64,
                })
            }
        }
    }

    /// Issues mmuext operations as one hypercall, after anything queued.
    fn mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), XenError> {
        self.flush_queue()?;
        self.issue_mmuext(ops)
    }

    fn issue_mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), XenError> {
        let mut done = 0;
        self.stats.mmuext_calls += 1;
        self.stats.mmuext_ops += ops.len() as u64;
        // SAFETY: every mmuext op XenMmu builds (pin/unpin of tables it made read-only, a new
        // base pointer of a pinned root, flushes) is one of its checked operations.
        let ret = unsafe { self.hv.mmuext_op(ops, &mut done) };
        self.ext_result(ret, done, ops)
    }

    /// A TLB flush: issued now, or queued with the page-table updates in lazy mode.
    fn flush_op(&mut self, op: MmuextOp) -> Result<(), XenError> {
        if !self.lazy {
            return self.mmuext(&[op]);
        }
        if self.ext_queued == EXT_QUEUE_CAPACITY {
            self.flush_queue()?;
        }
        self.ext_queue[self.ext_queued] = op;
        self.ext_queued += 1;
        Ok(())
    }

    /// Maps `pfn` read-only or writable in the live 1:1 region (value computed, not read
    /// back, so queued updates of the same entry cannot be lost).
    fn set_writable(&mut self, pfn: PhysFrame, writable: bool) -> Result<(), XenError> {
        let va = VirtAddr::new(VIRT_BASE + pfn.number() * PAGE_SIZE as u32);
        let (slot, _) = self.live_entry(va)?;
        let flags = if writable { KERNEL_RW } else { KERNEL_RO };
        let mfn = self.mfn(pfn)?;
        self.update(slot, PageTableEntry::new(mfn, flags))
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
        // Every frame of the new table goes read-only now (one batch), and the table maps
        // page-table frames read-only, so Xen can validate it. Then pin, switch, and (leaving
        // Xen's bootstrap table) unpin pt_base, in ONE mmuext_op: Linux 2b5407811db7 unpins
        // right after its cr3 write, or the frames keep their page-table types and cannot be
        // reused.
        let was_lazy = self.lazy;
        self.lazy = true;
        let attached = self
            .attach(root, Level::L3)
            .and_then(|()| self.flush_queue());
        self.lazy = was_lazy;
        attached?;
        let mfn = self.mfn(root)?.number();
        let pt_mfn = self.mfn(self.pt_base)?.number();
        let leaving_bootstrap = self.cr3 == self.pt_base && self.pt_base_pinned;
        let unpin = leaving_bootstrap && !self.skip_unpin;
        let ops = [
            MmuextOp {
                cmd: mmuext::PIN_L3_TABLE,
                arg1: mfn,
                arg2: 0,
            },
            MmuextOp {
                cmd: mmuext::NEW_BASEPTR,
                arg1: mfn,
                arg2: 0,
            },
            MmuextOp {
                cmd: mmuext::UNPIN_TABLE,
                arg1: pt_mfn,
                arg2: 0,
            },
        ];
        self.mmuext(&ops[..if unpin { 3 } else { 2 }])?;
        let old = self.cr3;
        self.cr3 = root;
        self.reach = PhysFrame::new(
            self.nr_pages
                .min((self.layout.lowmem_limit / PAGE_SIZE) as u32),
        );
        if unpin {
            self.pt_base_pinned = false;
            self.hv.log(format_args!(
                "xen: one mmuext_op: PIN_L3_TABLE + NEW_BASEPTR mfn={mfn:#x} (pfn {root}) + UNPIN_TABLE pt_base pfn {old} (mfn {pt_mfn:#x}): ok"
            ));
        } else {
            self.hv.log(format_args!(
                "xen: one mmuext_op: PIN_L3_TABLE + NEW_BASEPTR mfn={mfn:#x} (pfn {root}): ok; pt_base pfn {} stays pinned{}",
                self.pt_base,
                if self.skip_unpin { " (pvops.skip_unpin)" } else { "" }
            ));
        }
        Ok(())
    }
    #[inline]
    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), XenError> {
        self.store(slot, entry, Store::Split)
    }
    unsafe fn set_pte_atomic(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), XenError> {
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
            result = self.set_writable(f, true);
            if result.is_err() {
                break;
            }
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
        // A new table is detached (plain writable memory) until it goes live; with
        // pvops.batch=1, or beyond the tracked range, it is read-only from the start.
        if self.direct_stores && self.set_detached(frame, true) {
            return Ok(());
        }
        self.set_writable(frame, false)
    }
    fn release_pt(&mut self, frame: PhysFrame, _level: Level) -> Result<(), XenError> {
        if self.is_detached(frame) {
            self.set_detached(frame, false);
            return Ok(());
        }
        self.set_writable(frame, true)
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

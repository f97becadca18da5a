//! Property tests: random sequences of mapping operations against the model of Xen's rules
//! (the real `XenMmu` on `XenModel`) and against the simulated native machine (`SimMachine`),
//! with the invariants checked after every step.
//!
//! Each case boots a fresh machine through the real generic boot path, with every page-table
//! write recorded on the way (a forwarding [`Rec`] wrapper around the backend), then runs
//! 8..=40 operations of [`Op`]: `map_page` of a fresh frame at a page of the scratch area,
//! `unmap_page`, `early_ioremap` of frames the kernel owns and never allocates (image,
//! loader structures; 1 B..64 KiB at any offset, also too large, also with every slot taken)
//! and `early_iounmap`, creating the scratch L1, releasing it (unlink, flush, `release_pt`,
//! free), and batches of maps in lazy mode. The test mirrors what must be mapped where and
//! checks after every step:
//! - every touched page of the scratch area and of the early_ioremap window translates (the
//!   backend's own walk: the model's `translate`, the sim's MMU walk) to the expected machine
//!   frame with exactly the expected entry, or not at all; the core's software walk agrees;
//! - accesses through the access path (the sim's TLB) agree: reads see the frame's tag,
//!   writes fault exactly on read-only pages, unmapped pages fault (a missing flush on the
//!   sim leaves a stale TLB entry and is caught here and by `tlb_has`);
//! - every page-table write made since the previous step reads back as written (an L3 entry
//!   modulo the RW|US|A bits Xen sets in a validated L3; a direct-map entry modulo RW, which
//!   the Xen backend flips itself, RW exactly when the frame is not a page table);
//! - the allocator's count matches the mirror (mapped frames + the scratch L1);
//! - Xen: no writable mapping of a page-table frame (`writable_pagetable_mappings()` empty),
//!   the live root is the only pinned frame and is validated, every typed table is validated,
//!   type counts equal the references (a recount over the domain's frames every step; the
//!   model's full `audit()` — about 90 ms in a debug build — every [`AUDIT_EVERY`] steps and
//!   at the end), the scratch L1 has type L1 count 1 and released ones are plain writable;
//! - sim: table levels of the scratch L1s, the latched PDPT equals the root.
//!
//! At the end everything is unmapped and released: all recorded writes read back, the full
//! audit is empty, the state of every frame (Xen: type, count, pin, validation of every frame
//! of the domain; sim: every frame's table level) equals the state right after the boot, and
//! the allocator has every frame back.
//!
//! Cases: [`XEN_CASES`] on the model, [`SIM_CASES`] on the sim (`PROPTEST_CASES` overrides
//! both); the file takes about 10 s in a debug build. Operations are plain data
//! interpreted against the mirror (an index picks among what is mapped), so any subsequence
//! of a failing sequence is a valid input and proptest's shrinking works.
//!
//! One file because it is one cargo test binary: the operation generator, the recording
//! wrapper, the two backends' adapters and the invariant checks only make sense together.

use backend_xen::XenMmu;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use pvops_core::addr::{
    EntryIndex, FrameRange, MachineAddr, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE,
};
use pvops_core::boot::BootState;
use pvops_core::ioremap::{
    EarlyIoremap, IoMapping, IoremapError, TableSource, IOREMAP_MAX_BYTES, IOREMAP_SLOTS,
    IOREMAP_SLOT_PAGES,
};
use pvops_core::mapper::{self, map_page, next_table, read_entry, unmap_page, MapError};
use pvops_core::mem::FrameAllocator;
use pvops_core::ops::{LazyMmu, MemoryLayout, MmuOps, PageFault, Platform};
use pvops_core::options::BootOptions;
use pvops_core::paging::{
    EntrySlot, Level, PageTableEntry, PteFlags, ADDRESS_MASK, KERNEL_RO, KERNEL_RW, PDPT_ENTRIES,
};
use pvops_tests::sim::{Access, BootstrapStyle, P2m, SimConfig, SimMachine};
use pvops_tests::xen_model::{
    pte, DomainConfig, FrameState, ModelAccess, Owner, P2mLayout, PageType, XenModel,
    FIRST_XEN_L2_SLOT, MIN_RAM_BASE, SHARED_INFO_MFN,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Cases on the model of Xen (each boots a 16 MiB domain).
const XEN_CASES: u32 = 24;
/// Cases on the simulated native machine (each boots 32 MiB).
const SIM_CASES: u32 = 64;
/// The model's full `audit()` runs every this many steps (and at the end of every case).
const AUDIT_EVERY: usize = 8;
const FRAME: u32 = PAGE_SIZE as u32;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The flags a scratch mapping may get (indexed by `Op::Map::flags % 4`).
const MAP_FLAGS: [PteFlags; 4] = [
    KERNEL_RW,
    KERNEL_RO,
    KERNEL_RW.union(PteFlags::GLOBAL),
    KERNEL_RO.union(PteFlags::NO_EXECUTE),
];

// ----- operations -----

/// One step. Indices pick among what is live when the step runs (modulo their number), so
/// every subsequence of a sequence is a valid sequence.
#[derive(Clone, Debug)]
enum Op {
    /// `map_page` of a fresh frame at page `page` of the scratch area.
    Map { page: u16, flags: u8 },
    /// `unmap_page` of the `pick`-th mapped scratch page (nothing when none is mapped).
    Unmap { pick: u16 },
    /// `early_ioremap` of `len` bytes at `offset` into the `pick`-th never-allocated frame
    /// (shortened to the run of such frames that follows it in machine order).
    Ioremap { pick: u16, offset: u16, len: u32 },
    /// `early_iounmap` of the `pick`-th live mapping.
    Iounmap { pick: u8 },
    /// Links a new (empty) scratch L1, or finds the one there.
    CreateScratchL1,
    /// Unmaps every scratch page, unlinks the scratch L1, flushes, `release_pt`, frees it.
    ReleaseScratchL1,
    /// One lazy-mode section mapping several fresh frames (the L1 made before, outside it).
    LazyMaps { pages: Vec<(u16, u8)> },
}

fn page_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 0u16..16, 4 => 0u16..512, 1 => Just(0u16), 1 => Just(511u16)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (page_strategy(), 0u8..4).prop_map(|(page, flags)| Op::Map { page, flags }),
        3 => any::<u16>().prop_map(|pick| Op::Unmap { pick }),
        3 => (
            any::<u16>(),
            prop_oneof![Just(0u16), 0u16..4096, Just(4095u16)],
            prop_oneof![1u32..=64, 1u32..=65536, Just(65536u32)],
        )
            .prop_map(|(pick, offset, len)| Op::Ioremap { pick, offset, len }),
        2 => any::<u8>().prop_map(|pick| Op::Iounmap { pick }),
        1 => Just(Op::CreateScratchL1),
        1 => Just(Op::ReleaseScratchL1),
        1 => proptest::collection::vec((page_strategy(), 0u8..4), 2..=6)
            .prop_map(|pages| Op::LazyMaps { pages }),
    ]
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(), 8..=40)
}

// ----- a recording wrapper around a backend -----

/// Forwards every operation to the backend and remembers the last value written to every
/// entry slot (through `set_pte`/`set_pmd`/`set_pud`/`pte_clear`), to be read back.
struct Rec<B> {
    inner: B,
    last: HashMap<(u32, u16), (Level, PageTableEntry)>,
    pending: Vec<(u32, u16)>,
}

impl<B: Platform> Rec<B> {
    fn new(inner: B) -> Self {
        Rec {
            inner,
            last: HashMap::new(),
            pending: Vec::new(),
        }
    }
    fn note<E>(
        &mut self,
        r: Result<(), E>,
        level: Level,
        slot: EntrySlot,
        e: PageTableEntry,
    ) -> Result<(), E> {
        if r.is_ok() {
            let key = (slot.table().number(), slot.index().get() as u16);
            self.last.insert(key, (level, e));
            self.pending.push(key);
        }
        r
    }
    /// The frame is no table any more: what was written into it is data now.
    fn forget(&mut self, frames: FrameRange) {
        self.last
            .retain(|k, _| !frames.contains(PhysFrame::new(k.0)));
    }
}

impl<B: Platform> MmuOps for Rec<B> {
    fn pin_root(&mut self, root: PhysFrame) -> Result<(), B::Error> {
        self.inner.pin_root(root)
    }
    fn unpin_root(&mut self, root: PhysFrame) -> Result<(), B::Error> {
        self.inner.unpin_root(root)
    }
    fn is_lazy(&self) -> bool {
        self.inner.is_lazy()
    }
    fn queued_entry(&self, slot: EntrySlot) -> Option<PageTableEntry> {
        self.inner.queued_entry(slot)
    }
    fn defer_error(&mut self, e: B::Error) {
        self.inner.defer_error(e)
    }

    type Error = B::Error;
    type Counters = B::Counters;
    const NAME: &'static str = B::NAME;
    const READ_ONLY_PAGE_TABLES: bool = B::READ_ONLY_PAGE_TABLES;

    fn layout(&self) -> MemoryLayout {
        self.inner.layout()
    }
    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame> {
        self.inner.phys_to_machine(frame)
    }
    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame> {
        self.inner.machine_to_phys(frame)
    }
    fn read_cr3(&self) -> PhysFrame {
        self.inner.read_cr3()
    }
    unsafe fn write_cr3(&mut self, root: PhysFrame) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.inner.write_cr3(root) }
    }
    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.set_pte(slot, entry) };
        self.note(r, Level::L1, slot, entry)
    }
    unsafe fn set_pmd(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.set_pmd(slot, entry) };
        self.note(r, Level::L2, slot, entry)
    }
    unsafe fn set_pud(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.set_pud(slot, entry) };
        self.note(r, Level::L3, slot, entry)
    }
    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.pte_clear(slot) };
        self.note(r, Level::L1, slot, PageTableEntry::EMPTY)
    }
    unsafe fn set_pte_atomic(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.set_pte_atomic(slot, entry) };
        self.note(r, Level::L1, slot, entry)
    }
    unsafe fn pmd_clear(&mut self, slot: EntrySlot) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.pmd_clear(slot) };
        self.note(r, Level::L2, slot, PageTableEntry::EMPTY)
    }
    unsafe fn pud_clear(&mut self, slot: EntrySlot) -> Result<(), B::Error> {
        // SAFETY: forwarded under the caller's contract.
        let r = unsafe { self.inner.pud_clear(slot) };
        self.note(r, Level::L3, slot, PageTableEntry::EMPTY)
    }
    fn flush_tlb_single(&mut self, va: VirtAddr) -> Result<(), B::Error> {
        self.inner.flush_tlb_single(va)
    }
    fn flush_tlb_all(&mut self) -> Result<(), B::Error> {
        self.inner.flush_tlb_all()
    }
    fn pagetable_setup_start(&mut self, root: PhysFrame) -> Result<(), B::Error> {
        self.inner.pagetable_setup_start(root)
    }
    fn pagetable_setup_done(&mut self, root: PhysFrame) -> Result<FrameRange, B::Error> {
        let r = self.inner.pagetable_setup_done(root);
        if let Ok(range) = r {
            self.forget(range);
        }
        r
    }
    fn alloc_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), B::Error> {
        self.inner.alloc_pt(frame, level)
    }
    fn release_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), B::Error> {
        let r = self.inner.release_pt(frame, level);
        if r.is_ok() {
            self.forget(FrameRange {
                start: frame,
                end: PhysFrame::new(frame.number() + 1),
            });
        }
        r
    }
    fn counters(&self) -> B::Counters {
        self.inner.counters()
    }
    fn enter_lazy_mmu(&mut self) {
        self.inner.enter_lazy_mmu()
    }
    fn flush_lazy_mmu(&mut self) -> Result<(), B::Error> {
        self.inner.flush_lazy_mmu()
    }
    fn leave_lazy_mmu(&mut self) -> Result<(), B::Error> {
        self.inner.leave_lazy_mmu()
    }
}

impl<B: Platform> Platform for Rec<B> {
    fn frame_ptr(&self, frame: PhysFrame) -> Option<*mut u8> {
        self.inner.frame_ptr(frame)
    }
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.inner.read_virt(va, buf) }
    }
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.inner.write_virt(va, data) }
    }
    fn cycles(&self) -> u64 {
        self.inner.cycles()
    }
}

// ----- what differs between the backends -----

/// What the harness needs to know about the mirror, for backend-specific checks.
struct Ctx<'a> {
    root: PhysFrame,
    scratch_l1: Option<PhysFrame>,
    released: &'a BTreeSet<PhysFrame>,
}

/// The backend under test, with its own view of the machine.
trait Backend: Platform + Sized {
    /// Per-frame state compared before and after a case.
    type Snapshot: PartialEq + fmt::Debug;
    /// Bits the backend (Xen) may set itself in a validated L3 entry.
    const L3_ADDED: u64;
    /// The live translation of `va` by the machine itself: machine frame and leaf entry.
    fn hw_translate(&mut self, va: VirtAddr) -> Option<(MachineFrame, u64)>;
    /// True when an access-path cache (the sim's TLB) holds a translation for `va`.
    fn cached(&self, _va: VirtAddr) -> bool {
        false
    }
    /// Backend invariants after every step.
    fn invariants(&mut self, ctx: &Ctx<'_>) -> Result<(), String>;
    /// The expensive whole-machine audit.
    fn full_audit(&mut self) -> Result<(), String>;
    /// State of every frame that can change.
    fn snapshot(&mut self) -> Self::Snapshot;
}

type Xen = XenMmu<XenModel>;

/// The machine frames that can carry a type: the domain's RAM and shared_info.
fn domain_mfns(m: &XenModel) -> Vec<u32> {
    (0..m.nr_pages())
        .map(|p| m.mfn(PhysFrame::new(p)).number())
        .chain([SHARED_INFO_MFN])
        .collect()
}

fn frame_of(e: u64) -> u32 {
    ((e & ADDRESS_MASK) >> 12) as u32
}

/// The audit's recount of type references, over the frames that can have a type (the
/// model's `audit()` scans all ~270k machine frames; this is what runs after every step).
/// Also finds writable L1 entries naming page tables and unvalidated tables.
fn recount(m: &XenModel) -> Vec<String> {
    use pte::{P, RW};
    let frames = domain_mfns(m);
    let owned = |t: u32| m.state_mfn(MachineFrame::new(t)).owner == Owner::Domain;
    let mut out = Vec::new();
    let mut exp: HashMap<u32, (u32, PageType, bool)> = HashMap::new();
    let mut add = |out: &mut Vec<String>, t: u32, ty: PageType, pae: bool, from: &str| {
        let e = exp.entry(t).or_insert((0, ty, pae));
        if e.1 != ty || e.2 != pae {
            out.push(format!(
                "mfn {t:#x} is referenced as {:?} and as {ty:?} ({from})",
                e.1
            ));
        }
        e.0 += 1;
    };
    for &mfn in &frames {
        let st = m.state_mfn(MachineFrame::new(mfn));
        if st.pinned {
            add(&mut out, mfn, st.ty, st.pae_xen_l2, "pin");
        }
        if st.count == 0 || !st.ty.is_table() {
            continue;
        }
        if !st.validated {
            out.push(format!("mfn {mfn:#x}: {:?} not validated", st.ty));
        }
        for i in 0..512 {
            let e = m.entry_mfn(MachineFrame::new(mfn), i);
            if e & P == 0 {
                continue;
            }
            let t = frame_of(e);
            match st.ty {
                PageType::L1 if e & RW != 0 && owned(t) => {
                    if m.state_mfn(MachineFrame::new(t)).ty.is_table() {
                        out.push(format!("l1 {mfn:#x}[{i}] maps table mfn {t:#x} writable"));
                    }
                    add(&mut out, t, PageType::Writable, false, "l1e");
                }
                PageType::L2 if !(st.pae_xen_l2 && i >= FIRST_XEN_L2_SLOT) => {
                    add(&mut out, t, PageType::L1, false, "l2e")
                }
                PageType::L3 if i < PDPT_ENTRIES => add(&mut out, t, PageType::L2, i == 3, "l3e"),
                PageType::L3 => out.push(format!("l3 {mfn:#x} has entry {i} present")),
                _ => {}
            }
        }
    }
    add(&mut out, m.cr3().number(), PageType::L3, false, "cr3");
    let set: HashSet<u32> = frames.iter().copied().collect();
    for (t, (n, ty, _)) in &exp {
        if !set.contains(t) {
            out.push(format!("{n} {ty:?} refs to mfn {t:#x}, not the domain's"));
        }
    }
    for &mfn in &frames {
        let st = m.state_mfn(MachineFrame::new(mfn));
        let (n, ty, pae) = exp.get(&mfn).copied().unwrap_or((0, PageType::None, false));
        if st.count != n
            || (n > 0 && (st.ty != ty || st.pae_xen_l2 != pae))
            || (n == 0 && st.ty != PageType::None)
        {
            out.push(format!(
                "mfn {mfn:#x}: {:?} (pae {}) count {} but {n} refs of {ty:?} (pae {pae})",
                st.ty, st.pae_xen_l2, st.count
            ));
        }
    }
    out
}

impl Backend for Xen {
    type Snapshot = Vec<(u32, FrameState)>;
    const L3_ADDED: u64 = pte::RW | pte::US | pte::A;

    fn hw_translate(&mut self, va: VirtAddr) -> Option<(MachineFrame, u64)> {
        self.model().translate(va).map(|m| (m.mfn, m.entry))
    }
    fn invariants(&mut self, ctx: &Ctx<'_>) -> Result<(), String> {
        let root = self.phys_to_machine(ctx.root).ok_or("root has no mfn")?;
        let m = self.model();
        if !m.violations().is_empty() {
            return Err(format!("model violations: {:#?}", m.violations()));
        }
        let w = m.writable_pagetable_mappings();
        if !w.is_empty() {
            return Err(format!("writable mappings of page tables: {w:x?}"));
        }
        if m.cr3() != root {
            return Err(format!(
                "model cr3 {} is not the root's mfn {root}",
                m.cr3()
            ));
        }
        let pinned: Vec<u32> = domain_mfns(m)
            .into_iter()
            .filter(|f| m.state_mfn(MachineFrame::new(*f)).pinned)
            .collect();
        if pinned != [root.number()] {
            return Err(format!(
                "pinned frames {pinned:x?}, expected only the root {root}"
            ));
        }
        let st = m.state_mfn(root);
        if !(st.validated && st.ty == PageType::L3 && st.count == 2) {
            return Err(format!("live root (pin + cr3): {st:?}"));
        }
        let problems = recount(m);
        if !problems.is_empty() {
            return Err(format!("type recount: {problems:#?}"));
        }
        if let Some(l1) = ctx.scratch_l1 {
            let st = m.state(l1);
            if !(st.ty == PageType::L1 && st.count == 1 && st.validated && !st.pinned) {
                return Err(format!("scratch l1 pfn {l1}: {st:?}"));
            }
        }
        for f in ctx.released {
            let st = m.state(*f);
            if !(st.ty == PageType::Writable && st.count == 1 && !st.pinned) {
                return Err(format!("released scratch l1 pfn {f}: {st:?}"));
            }
        }
        Ok(())
    }
    fn full_audit(&mut self) -> Result<(), String> {
        let problems = self.model().audit();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("audit: {problems:#?}"))
        }
    }
    fn snapshot(&mut self) -> Self::Snapshot {
        let m = self.model();
        domain_mfns(m)
            .into_iter()
            .map(|f| (f, m.state_mfn(MachineFrame::new(f))))
            .collect()
    }
}

impl Backend for SimMachine {
    type Snapshot = Vec<Option<Level>>;
    const L3_ADDED: u64 = 0;

    fn hw_translate(&mut self, va: VirtAddr) -> Option<(MachineFrame, u64)> {
        self.walk(va, Access::Read)
            .ok()
            .map(|t| (t.mfn, t.leaf.bits()))
    }
    fn cached(&self, va: VirtAddr) -> bool {
        self.tlb_has(va)
    }
    fn invariants(&mut self, ctx: &Ctx<'_>) -> Result<(), String> {
        let root = MachineFrame::new(self.config().p2m.to_machine(ctx.root.number()));
        if self.cr3_mfn() != root {
            return Err(format!("cr3 {} is not the root {root}", self.cr3_mfn()));
        }
        let latched = self.latched_pdptes();
        for (i, l) in latched.iter().enumerate() {
            if *l != self.entry(ctx.root, i) {
                return Err(format!(
                    "latched pdpte {i} {l:?} != root entry {:?}",
                    self.entry(ctx.root, i)
                ));
            }
        }
        if let Some(l1) = ctx.scratch_l1 {
            if self.table_level(l1) != Some(Level::L1) {
                return Err(format!("scratch l1 pfn {l1} is {:?}", self.table_level(l1)));
            }
        }
        for f in ctx.released {
            if self.table_level(*f).is_some() {
                return Err(format!("released l1 pfn {f} is {:?}", self.table_level(*f)));
            }
        }
        Ok(())
    }
    fn full_audit(&mut self) -> Result<(), String> {
        // Every link of the live table names a frame announced at the level below.
        let root = self
            .machine_to_phys(self.cr3_mfn())
            .ok_or("cr3 outside RAM")?;
        for (i, l3e) in self.latched_pdptes().iter().enumerate() {
            if !l3e.is_present() {
                continue;
            }
            let l2 = self
                .machine_to_phys(l3e.frame().expect("frame below 16 TiB"))
                .ok_or("l3e outside RAM")?;
            if self.table_level(l2) != Some(Level::L2) {
                return Err(format!(
                    "root {root}[{i}] links pfn {l2}: {:?}",
                    self.table_level(l2)
                ));
            }
            for j in 0..512 {
                let e = self.entry(l2, j);
                if !e.is_present() || e.flags().contains(PteFlags::HUGE) {
                    continue;
                }
                let l1 = self
                    .machine_to_phys(e.frame().expect("frame below 16 TiB"))
                    .ok_or("l2e outside RAM")?;
                if self.table_level(l1) != Some(Level::L1) {
                    return Err(format!(
                        "l2 {l2}[{j}] links pfn {l1}: {:?}",
                        self.table_level(l1)
                    ));
                }
            }
        }
        Ok(())
    }
    fn snapshot(&mut self) -> Self::Snapshot {
        (0..self.ram_frames())
            .map(|f| self.table_level(PhysFrame::new(f)))
            .collect()
    }
}

// ----- the harness: the machine, the mirror, the checks -----

struct ScratchPage {
    frame: PhysFrame,
    flags: PteFlags,
    tag: u64,
}

struct LiveIo {
    m: IoMapping,
    mfn: MachineFrame,
    offset: u32,
    len: u32,
}

struct Harness<B: Backend> {
    p: Rec<B>,
    state: Box<BootState>,
    root: PhysFrame,
    layout: MemoryLayout,
    io: EarlyIoremap,
    /// Frames the allocator never hands out and that never become tables.
    stable: Vec<PhysFrame>,
    stable_set: HashSet<PhysFrame>,
    mapped: BTreeMap<u16, ScratchPage>,
    ios: Vec<LiveIo>,
    touched: BTreeSet<u16>,
    window_touched: BTreeSet<u32>,
    /// Frames whose direct-map entry is checked (data frames and scratch L1s ever used).
    watched: BTreeSet<PhysFrame>,
    l1_linked: bool,
    scratch_l1: Option<PhysFrame>,
    released: BTreeSet<PhysFrame>,
    base_allocated: u32,
    base_available: u32,
    snapshot: B::Snapshot,
    serial: u64,
    steps: usize,
}

fn fail<E: fmt::Debug>(what: impl fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e:?}")
}

impl<B: Backend> Harness<B> {
    /// Boots `p` through the generic boot path (recording every write) and takes the
    /// allocator's and the machine's state as the baseline.
    fn boot(
        p: B,
        info: &pvops_core::boot::BootInfo<'_>,
        stable: Vec<PhysFrame>,
    ) -> Result<Self, String> {
        let mut p = Rec::new(p);
        let mut state = Box::new(BootState::new());
        let mut log = String::new();
        pvops_tests::boot_and_exercise(&mut p, info, BootOptions::default(), &mut state, &mut log)
            .map_err(|e| format!("boot failed: {e}\n{log}"))?;
        let root = p.read_cr3();
        let layout = p.layout();
        let snapshot = p.inner.snapshot();
        let stable_set = stable.iter().copied().collect();
        let mut h = Harness {
            base_allocated: state.alloc.allocated(),
            base_available: state.alloc.available(),
            p,
            state,
            root,
            layout,
            io: EarlyIoremap::new(layout.ioremap_window, TableSource::LiveCr3),
            stable,
            stable_set,
            mapped: BTreeMap::new(),
            ios: Vec::new(),
            touched: BTreeSet::new(),
            window_touched: BTreeSet::new(),
            watched: BTreeSet::new(),
            l1_linked: false,
            scratch_l1: None,
            released: BTreeSet::new(),
            snapshot,
            serial: 0,
            steps: 0,
        };
        // The boot's exercise stage retired the scratch L1 it used.
        if h.live_scratch_l1()?.is_some() {
            return Err("the boot left a scratch L1 linked".into());
        }
        h.check_all_writes()?;
        h.check()?;
        Ok(h)
    }

    fn alloc(&mut self) -> &mut FrameAllocator {
        &mut self.state.alloc
    }

    fn scratch_va(&self, page: u16) -> VirtAddr {
        VirtAddr::new(self.layout.scratch_area.as_u32() + page as u32 * FRAME)
    }

    fn window_va(&self, page: u32) -> VirtAddr {
        VirtAddr::new(self.layout.ioremap_window.as_u32() + page * FRAME)
    }

    fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, String> {
        self.p
            .phys_to_machine(pfn)
            .ok_or(format!("pfn {pfn} has no machine frame"))
    }

    /// The L2 slot that links the scratch area's L1, and the L1 it links (if any).
    fn scratch_l2_slot(&self) -> Result<(EntrySlot, PageTableEntry), String> {
        let va = self.layout.scratch_area;
        let l3e = read_entry(&self.p, self.root, va.l3_index()).map_err(fail("read l3e"))?;
        let l2 = next_table(&self.p, l3e).map_err(fail("l3e"))?;
        let slot = EntrySlot::new(l2, va.l2_index());
        let e = read_entry(&self.p, l2, va.l2_index()).map_err(fail("read l2e"))?;
        Ok((slot, e))
    }

    fn live_scratch_l1(&self) -> Result<Option<PhysFrame>, String> {
        let (_, e) = self.scratch_l2_slot()?;
        if !e.is_present() {
            return Ok(None);
        }
        next_table(&self.p, e)
            .map(Some)
            .map_err(fail("scratch l2e"))
    }

    /// Notes the scratch L1 the last step linked (if it had none).
    fn found_l1(&mut self) -> Result<(), String> {
        let l1 = self
            .live_scratch_l1()?
            .ok_or("no scratch L1 after a mapping")?;
        if let Some(old) = self.scratch_l1 {
            if old != l1 {
                return Err(format!("scratch L1 changed from pfn {old} to pfn {l1}"));
            }
        }
        self.scratch_l1 = Some(l1);
        self.l1_linked = true;
        self.released.remove(&l1);
        self.watched.insert(l1);
        Ok(())
    }

    /// A fresh frame from the allocator, tagged through the direct map.
    fn fresh(&mut self) -> Result<(PhysFrame, u64), String> {
        let f = self.alloc().alloc().map_err(fail("alloc"))?;
        if self.stable_set.contains(&f) {
            return Err(format!("the allocator handed out never-allocated pfn {f}"));
        }
        self.released.remove(&f);
        self.watched.insert(f);
        self.serial += 1;
        let tag = (self.serial << 32) | f.number() as u64;
        let ptr = self
            .p
            .frame_ptr(f)
            .ok_or(format!("fresh pfn {f} unreachable"))?;
        // SAFETY: a frame just allocated, reachable (and writable) through the direct map.
        unsafe { (ptr as *mut u64).write_unaligned(tag) };
        Ok((f, tag))
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Map { page, flags } => self.map(*page, MAP_FLAGS[*flags as usize % 4]),
            Op::Unmap { pick } => {
                let Some(page) = self
                    .mapped
                    .keys()
                    .nth(*pick as usize % self.mapped.len().max(1))
                else {
                    return Ok(());
                };
                self.unmap(*page)
            }
            Op::Ioremap { pick, offset, len } => self.ioremap(*pick, *offset as u32, *len),
            Op::Iounmap { pick } => {
                if self.ios.is_empty() {
                    return Ok(());
                }
                let live = self.ios.remove(*pick as usize % self.ios.len());
                self.io
                    .unmap(&mut self.p, &mut self.state.alloc, live.m)
                    .map_err(fail("early_iounmap"))
            }
            Op::CreateScratchL1 => {
                let before = self.state.alloc.allocated();
                let va = self.layout.scratch_area;
                mapper::l1_slot(&mut self.p, &mut self.state.alloc, self.root, va, true)
                    .map_err(fail("l1_slot(create)"))?;
                let made = self.state.alloc.allocated() - before;
                if made != u32::from(!self.l1_linked) {
                    return Err(format!(
                        "l1_slot allocated {made} frames (L1 linked before: {})",
                        self.l1_linked
                    ));
                }
                self.found_l1()
            }
            Op::ReleaseScratchL1 => self.release_l1(),
            Op::LazyMaps { pages } => self.lazy_maps(pages),
        }
    }

    fn map(&mut self, page: u16, flags: PteFlags) -> Result<(), String> {
        let va = self.scratch_va(page);
        let (frame, tag) = self.fresh()?;
        let mfn = self.mfn(frame)?;
        // SAFETY: the scratch area belongs to the test.
        let r = unsafe {
            map_page(
                &mut self.p,
                &mut self.state.alloc,
                self.root,
                va,
                mfn,
                flags,
            )
        };
        if self.mapped.contains_key(&page) {
            if !matches!(r, Err(MapError::AlreadyMapped(v)) if v == va) {
                return Err(format!("map_page over a mapped page: {r:?}"));
            }
            self.watched.remove(&frame);
            return self.alloc().free(frame).map_err(fail("free"));
        }
        let flush = r.map_err(fail(format_args!("map_page {va}")))?;
        flush.flush(&mut self.p).map_err(fail("flush"))?;
        self.touched.insert(page);
        self.mapped.insert(page, ScratchPage { frame, flags, tag });
        self.found_l1()
    }

    fn unmap(&mut self, page: u16) -> Result<(), String> {
        let va = self.scratch_va(page);
        let want = self
            .mapped
            .remove(&page)
            .ok_or("unmap of an unmapped page")?;
        // SAFETY: nothing uses the page any more.
        let (mfn, flush) = unsafe { unmap_page(&mut self.p, self.root, va) }
            .map_err(fail(format_args!("unmap_page {va}")))?;
        flush.flush(&mut self.p).map_err(fail("flush"))?;
        if mfn != self.mfn(want.frame)? {
            return Err(format!(
                "unmap_page {va} returned {mfn}, mapped pfn {}",
                want.frame
            ));
        }
        self.alloc().free(want.frame).map_err(fail("free"))
    }

    fn ioremap(&mut self, pick: u16, offset: u32, len: u32) -> Result<(), String> {
        let pfn = self.stable[pick as usize % self.stable.len()];
        let mfn = self.mfn(pfn)?;
        // The run of never-allocated frames that follows in machine order (early_ioremap maps
        // contiguous machine memory).
        let mut run = 1;
        while run < IOREMAP_SLOT_PAGES as u32
            && self
                .p
                .machine_to_phys(MachineFrame::new(mfn.number() + run))
                .is_some_and(|f| self.stable_set.contains(&f))
        {
            run += 1;
        }
        let too_large = (offset + len) as u64 > IOREMAP_MAX_BYTES;
        let len = if too_large {
            len
        } else {
            len.min(run * FRAME - offset)
        };
        let ma = MachineAddr::new(mfn.start().as_u64() + offset as u64);
        let r = self
            .io
            .map(&mut self.p, &mut self.state.alloc, ma, len as u64);
        if too_large {
            return match r {
                Err(IoremapError::TooLarge { len: l, max })
                    if l == (offset + len) as u64 && max == IOREMAP_MAX_BYTES =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "early_ioremap of {offset:#x}+{len:#x}: {other:?}, expected TooLarge"
                )),
            };
        }
        if self.ios.len() == IOREMAP_SLOTS {
            return match r {
                Err(IoremapError::NoFreeSlot) => Ok(()),
                other => Err(format!("early_ioremap with every slot taken: {other:?}")),
            };
        }
        let m = r.map_err(fail(format_args!("early_ioremap {ma}+{len:#x}")))?;
        let slot = (0..IOREMAP_SLOTS)
            .find(|s| self.ios.iter().all(|l| l.m.slot() != *s))
            .expect("a free slot");
        let want_va = self.window_va((slot * IOREMAP_SLOT_PAGES) as u32).as_u32() + offset;
        if m.slot() != slot || m.addr() != VirtAddr::new(want_va) || m.len() != len as u64 {
            return Err(format!(
                "early_ioremap gave {m:?}, expected slot {slot} at {want_va:#x}"
            ));
        }
        let pages = (offset + len).div_ceil(FRAME);
        for i in 0..pages {
            self.window_touched
                .insert((slot * IOREMAP_SLOT_PAGES) as u32 + i);
        }
        self.ios.push(LiveIo {
            m,
            mfn,
            offset,
            len,
        });
        Ok(())
    }

    fn release_l1(&mut self) -> Result<(), String> {
        let pages: Vec<u16> = self.mapped.keys().copied().collect();
        for page in pages {
            self.unmap(page)?;
        }
        if !self.l1_linked {
            return Ok(());
        }
        let (slot, e) = self.scratch_l2_slot()?;
        let l1 = next_table(&self.p, e).map_err(fail("scratch l2e"))?;
        if Some(l1) != self.scratch_l1 {
            return Err(format!(
                "scratch L1 is pfn {l1}, expected {:?}",
                self.scratch_l1
            ));
        }
        // SAFETY: the L1 maps nothing any more.
        unsafe { self.p.set_pmd(slot, PageTableEntry::EMPTY) }.map_err(fail("unlink"))?;
        self.p.flush_tlb_all().map_err(fail("flush_tlb_all"))?;
        self.p
            .release_pt(l1, Level::L1)
            .map_err(fail("release_pt"))?;
        self.alloc().free(l1).map_err(fail("free l1"))?;
        self.l1_linked = false;
        self.scratch_l1 = None;
        self.released.insert(l1);
        Ok(())
    }

    fn lazy_maps(&mut self, pages: &[(u16, u8)]) -> Result<(), String> {
        let mut todo: Vec<(u16, PteFlags)> = Vec::new();
        for &(page, f) in pages {
            if !self.mapped.contains_key(&page) && todo.iter().all(|t| t.0 != page) {
                todo.push((page, MAP_FLAGS[f as usize % 4]));
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        // As map_linear and early_ioremap do: the L1 first, outside lazy mode (a queued
        // set_pmd is not in memory yet, so a second walk would not see it).
        let first = self.scratch_va(todo[0].0);
        mapper::l1_slot(&mut self.p, &mut self.state.alloc, self.root, first, true)
            .map_err(fail("l1_slot"))?;
        self.found_l1()?;
        let mut fresh = Vec::new();
        for _ in &todo {
            fresh.push(self.fresh()?);
        }
        let mut frames = Vec::new();
        for (f, _) in &fresh {
            frames.push(self.mfn(*f)?);
        }
        let vas: Vec<VirtAddr> = todo.iter().map(|t| self.scratch_va(t.0)).collect();
        let root = self.root;
        let mut lazy = LazyMmu::enter(&mut self.p);
        for i in 0..todo.len() {
            // SAFETY: the scratch area belongs to the test; these pages are not mapped.
            let flush = unsafe {
                map_page(
                    &mut *lazy,
                    &mut self.state.alloc,
                    root,
                    vas[i],
                    frames[i],
                    todo[i].1,
                )
            }
            .map_err(fail(format_args!("lazy map_page {}", vas[i])))?;
            flush.flush(&mut *lazy).map_err(fail("lazy flush"))?;
        }
        lazy.finish().map_err(fail("leaving lazy mode"))?;
        for (i, (page, flags)) in todo.into_iter().enumerate() {
            self.touched.insert(page);
            self.mapped.insert(
                page,
                ScratchPage {
                    frame: fresh[i].0,
                    flags,
                    tag: fresh[i].1,
                },
            );
        }
        Ok(())
    }

    /// Unmaps and releases everything the case made.
    fn teardown(&mut self) -> Result<(), String> {
        self.release_l1()?;
        while !self.ios.is_empty() {
            self.apply(&Op::Iounmap { pick: 0 })?;
        }
        self.check()?;
        self.check_all_writes()?;
        self.p.inner.full_audit()?;
        let now = self.p.inner.snapshot();
        if now != self.snapshot {
            let diff = format!("{now:?}");
            return Err(format!(
                "frame states differ from the state after the boot (now: {} chars)",
                diff.len()
            ));
        }
        let a = &self.state.alloc;
        if (a.allocated(), a.available()) != (self.base_allocated, self.base_available) {
            return Err(format!(
                "allocator: allocated {} available {}, after the boot {} {}",
                a.allocated(),
                a.available(),
                self.base_allocated,
                self.base_available
            ));
        }
        Ok(())
    }

    // ----- checks -----

    fn check(&mut self) -> Result<(), String> {
        self.steps += 1;
        let want = self.base_allocated + self.mapped.len() as u32 + u32::from(self.l1_linked);
        if self.state.alloc.allocated() != want {
            return Err(format!(
                "allocator: {} frames out, expected {want}",
                self.state.alloc.allocated()
            ));
        }
        let l1 = self.live_scratch_l1()?;
        if l1 != self.scratch_l1 || l1.is_some() != self.l1_linked {
            return Err(format!(
                "scratch L1 is {l1:?}, expected {:?}",
                self.scratch_l1
            ));
        }
        self.check_scratch()?;
        self.check_window()?;
        self.check_pending_writes()?;
        self.check_direct_map()?;
        let ctx = Ctx {
            root: self.root,
            scratch_l1: self.scratch_l1,
            released: &self.released,
        };
        self.p.inner.invariants(&ctx)?;
        if self.steps.is_multiple_of(AUDIT_EVERY) {
            self.p.inner.full_audit()?;
        }
        Ok(())
    }

    fn check_scratch(&mut self) -> Result<(), String> {
        let pages: Vec<u16> = self.touched.iter().copied().collect();
        for page in pages {
            let va = self.scratch_va(page);
            let hw = self.p.inner.hw_translate(va);
            let sw = mapper::translate(&self.p, self.root, va).ok();
            let Some(want) = self.mapped.get(&page) else {
                if hw.is_some() || sw.is_some() {
                    return Err(format!("unmapped {va} translates: {hw:x?} / {sw:?}"));
                }
                if self.p.inner.cached(va) {
                    return Err(format!("unmapped {va} is still in the TLB"));
                }
                let mut b = [0u8; 8];
                // SAFETY: a read of a page that must fault.
                match unsafe { self.p.read_virt(va, &mut b) } {
                    Err(pf) if pf.error & 1 == 0 => {}
                    other => return Err(format!("read of unmapped {va}: {other:?} {b:x?}")),
                }
                continue;
            };
            let mfn = self.mfn(want.frame)?;
            let entry = PageTableEntry::new(mfn, want.flags);
            if hw != Some((mfn, entry.bits())) || sw != Some(entry) {
                return Err(format!(
                    "{va} translates to {hw:x?} / {sw:?}, expected {entry:?}"
                ));
            }
            let mut b = [0u8; 8];
            // SAFETY: the page maps the test's frame.
            unsafe { self.p.read_virt(va, &mut b) }.map_err(fail(format_args!("read {va}")))?;
            if u64::from_le_bytes(b) != want.tag {
                return Err(format!(
                    "{va} reads {:#x}, the tag of pfn {} is {:#x}",
                    u64::from_le_bytes(b),
                    want.frame,
                    want.tag
                ));
            }
            let tag = want.tag.to_le_bytes();
            let rw = want.flags.contains(PteFlags::WRITABLE);
            // SAFETY: rewrites the tag in the test's frame (or faults on a read-only page).
            match (unsafe { self.p.write_virt(va, &tag) }, rw) {
                (Ok(()), true) => {}
                (Err(pf), false) if pf.error & 3 == 3 => {}
                (r, _) => return Err(format!("write to {va} (writable: {rw}): {r:?}")),
            }
        }
        Ok(())
    }

    fn check_window(&mut self) -> Result<(), String> {
        let mut want: HashMap<u32, MachineFrame> = HashMap::new();
        for l in &self.ios {
            let first = (l.m.slot() * IOREMAP_SLOT_PAGES) as u32;
            for i in 0..(l.offset + l.len).div_ceil(FRAME) {
                want.insert(first + i, MachineFrame::new(l.mfn.number() + i));
            }
        }
        for page in 0..(IOREMAP_SLOTS * IOREMAP_SLOT_PAGES) as u32 {
            let va = self.window_va(page);
            let hw = self.p.inner.hw_translate(va);
            let expect = want
                .get(&page)
                .map(|m| (*m, PageTableEntry::new(*m, KERNEL_RW).bits()));
            if hw != expect {
                return Err(format!(
                    "window {va} translates to {hw:x?}, expected {expect:x?}"
                ));
            }
            if expect.is_none() && self.window_touched.contains(&page) {
                if self.p.inner.cached(va) {
                    return Err(format!("unmapped window page {va} is still in the TLB"));
                }
                let mut b = [0u8; 1];
                // SAFETY: a read of a page that must fault.
                if unsafe { self.p.read_virt(va, &mut b) }.is_ok() {
                    return Err(format!("unmapped window page {va} reads"));
                }
            }
        }
        // The bytes through the window are the frames' bytes (first and last 64).
        for i in 0..self.ios.len() {
            let (va, mfn, offset, len) = {
                let l = &self.ios[i];
                (l.m.addr(), l.mfn, l.offset, l.len)
            };
            for start in [0, len.saturating_sub(64)] {
                let n = (len - start).min(64) as usize;
                let mut through = vec![0u8; n];
                let at = VirtAddr::new(va.as_u32() + start);
                // SAFETY: reads a live early_ioremap mapping.
                unsafe { self.p.read_virt(at, &mut through) }
                    .map_err(fail(format_args!("read through the window at {at}")))?;
                for (k, got) in through.iter().enumerate() {
                    let byte = offset + start + k as u32;
                    let m = MachineFrame::new(mfn.number() + byte / FRAME);
                    let pfn = self
                        .p
                        .machine_to_phys(m)
                        .ok_or("window frame not the kernel's")?;
                    let ptr = self.p.frame_ptr(pfn).ok_or("window frame unreachable")?;
                    // SAFETY: frame_ptr gives the frame's 4096 bytes; the index is below 4096.
                    let direct = unsafe { ptr.add((byte % FRAME) as usize).read() };
                    if direct != *got {
                        return Err(format!(
                            "byte {:#x} of {mfn}+{offset:#x}: {got:#x} through the window, {direct:#x} direct",
                            start + k as u32
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the entry in `key` holds what was last written there.
    fn read_back(
        &self,
        key: (u32, u16),
        level: Level,
        written: PageTableEntry,
    ) -> Result<(), String> {
        let slot = EntrySlot::new(
            PhysFrame::new(key.0),
            EntryIndex::new(key.1 as usize).expect("entry index < 512"),
        );
        let now = read_entry(&self.p, slot.table(), slot.index())
            .map_err(fail(format_args!("read back {slot:?}")))?;
        let mask = match level {
            Level::L3 => !B::L3_ADDED,
            _ => !0,
        };
        if now.bits() & mask == written.bits() & mask {
            return Ok(());
        }
        // A direct-map entry: the backend itself flips RW when the frame becomes a page
        // table and back (Xen); RW must then say whether it is one.
        if level == Level::L1
            && written.is_present()
            && (now.bits() ^ written.bits()) == PteFlags::WRITABLE.bits()
        {
            if let Some(pfn) = self
                .p
                .machine_to_phys(written.frame().expect("frame below 16 TiB"))
            {
                let va = self.layout.phys_to_virt(pfn.start());
                if self.direct_map_slot(va) == Some(slot) {
                    let table = B::READ_ONLY_PAGE_TABLES && self.state.alloc.is_table(pfn);
                    if now.flags().contains(PteFlags::WRITABLE) != table {
                        return Ok(());
                    }
                }
            }
        }
        Err(format!(
            "{level:?} entry {slot:?} reads {now:?} ({:#x}), last written {written:?} ({:#x})",
            now.bits(),
            written.bits()
        ))
    }

    fn direct_map_slot(&self, va: VirtAddr) -> Option<EntrySlot> {
        let l3e = read_entry(&self.p, self.root, va.l3_index()).ok()?;
        let l2 = next_table(&self.p, l3e).ok()?;
        let l2e = read_entry(&self.p, l2, va.l2_index()).ok()?;
        let l1 = next_table(&self.p, l2e).ok()?;
        Some(EntrySlot::new(l1, va.l1_index()))
    }

    /// Every write since the last step, and the root's L3 entries, read back.
    fn check_pending_writes(&mut self) -> Result<(), String> {
        let mut keys = std::mem::take(&mut self.p.pending);
        keys.extend((0..PDPT_ENTRIES as u16).map(|i| (self.root.number(), i)));
        for key in keys {
            if let Some(&(level, e)) = self.p.last.get(&key) {
                self.read_back(key, level, e)?;
            }
        }
        Ok(())
    }

    fn check_all_writes(&mut self) -> Result<(), String> {
        self.p.pending.clear();
        let all: Vec<_> = self.p.last.iter().map(|(k, v)| (*k, *v)).collect();
        for (key, (level, e)) in all {
            self.read_back(key, level, e)?;
        }
        for i in 0..PDPT_ENTRIES as u16 {
            if !self.p.last.contains_key(&(self.root.number(), i)) {
                return Err(format!("root entry {i} was never written"));
            }
        }
        Ok(())
    }

    /// The direct-map entry of every frame the case used: present, the frame's machine
    /// frame, read-only exactly when it is a page table (Xen) or always writable (native).
    fn check_direct_map(&mut self) -> Result<(), String> {
        for f in &self.watched {
            let va = self.layout.phys_to_virt(f.start());
            let e = mapper::translate(&self.p, self.root, va)
                .map_err(fail(format_args!("direct map of pfn {f}")))?;
            let table = B::READ_ONLY_PAGE_TABLES && self.state.alloc.is_table(*f);
            let flags = if table { KERNEL_RO } else { KERNEL_RW };
            let want = PageTableEntry::new(self.mfn(*f)?, flags);
            if e != want {
                return Err(format!("direct map of pfn {f}: {e:?}, expected {want:?}"));
            }
        }
        Ok(())
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op)
                .and_then(|()| self.check())
                .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
        }
        self.teardown().map_err(|e| format!("teardown: {e}"))
    }
}

// ----- the two machines -----

fn xen_p2m() -> impl Strategy<Value = P2mLayout> {
    prop_oneof![
        2 => any::<u64>().prop_map(|seed| P2mLayout::Shuffled { base: MIN_RAM_BASE, seed }),
        1 => Just(P2mLayout::Reversed(MIN_RAM_BASE)),
        1 => Just(P2mLayout::Offset(MIN_RAM_BASE + 0x1234)),
    ]
}

fn xen_harness(p2m: P2mLayout) -> Result<Harness<Xen>, String> {
    let dom = DomainConfig::new(16).p2m(p2m).build();
    let layout = dom.layout;
    let facts = dom.facts().map_err(|e| e.to_string())?;
    let mmu = XenMmu::new(dom.model, &facts, &backend_xen::XenOptions::default())
        .map_err(|e| e.to_string())?;
    let info = backend_xen::boot_info(&mmu, &facts, dom.image, dom.table_pool);
    // Never allocated, never tables: the image below the table pool and the builder's
    // structures (p2m list, start_info, xenstore and console rings).
    let stable: Vec<PhysFrame> = (0..dom.table_pool.start.number())
        .chain(layout.p2m_list.start.number()..layout.page_tables.start.number())
        .map(PhysFrame::new)
        .collect();
    Harness::boot(mmu, &info, stable)
}

fn sim_p2m() -> impl Strategy<Value = u8> {
    0u8..3
}

fn sim_harness(p2m: u8) -> Result<Harness<SimMachine>, String> {
    let mut cfg = SimConfig::new(32);
    cfg.nx = true;
    let cfg = match p2m {
        0 => cfg,
        1 => cfg.p2m(P2m::Offset(0x40000)),
        _ => cfg.p2m(P2m::Xor(0x5a5)).bootstrap(BootstrapStyle::Small4K),
    };
    let sim = cfg.build();
    let info = sim.boot_info();
    let image = info.kernel_image;
    // Low memory below the EBDA and the image below its bootstrap table: the allocator starts
    // after the image.
    let stable: Vec<PhysFrame> = (0..0x9f)
        .chain(image.start.number()..sim.bootstrap_frames().start.number())
        .map(PhysFrame::new)
        .collect();
    let h = Harness::boot(sim, &info, stable)?;
    h.p.inner.stop_watching();
    Ok(h)
}

/// Runs `cases` random sequences on machines made by `make`; prints the figures.
fn run_property<B: Backend, P: Strategy>(
    name: &str,
    cases: u32,
    machine: P,
    make: fn(P::Value) -> Result<Harness<B>, String>,
) where
    P::Value: Clone + fmt::Debug,
{
    use proptest::test_runner::{Config, TestRunner};
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let steps = AtomicUsize::new(0);
    let t = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(machine, ops_strategy()), |(m, ops)| {
        let mut h = make(m).map_err(TestCaseError::fail)?;
        let r = h.run(&ops).map_err(TestCaseError::fail);
        steps.fetch_add(h.steps, Ordering::Relaxed);
        r
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    eprintln!(
        "prop_model: {name}: {cases} cases, {} checked steps, {:.1}s",
        steps.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn xen_model_random_mapping_sequences() {
    run_property("xen model", cases(XEN_CASES), xen_p2m(), xen_harness);
}

#[test]
fn sim_random_mapping_sequences() {
    run_property("native sim", cases(SIM_CASES), sim_p2m(), sim_harness);
}

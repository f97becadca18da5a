//! Address spaces, lazy mode and early_ioremap ownership (issue 10), on the simulated
//! machine and on the model of Xen's rules under the real `XenMmu`: each case runs after a
//! whole boot (boot path + exercise), as a kernel would.

use backend_xen::abi::{mmuext, Errno};
use backend_xen::{XenError, XenMmu, XenOp};
use pvops_core::addr::{MachineAddr, MachineFrame, PdptIndex, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::ioremap::{EarlyIoremap, IoremapError, TableSource};
use pvops_core::mapper::{self, MapError};
use pvops_core::mem::{AllocError, FrameAlloc, FrameAllocator};
use pvops_core::options::BootOptions;
use pvops_core::paging::{EntrySlot, Level, PteFlags, KERNEL_RW};
use pvops_core::space::{AddressSpaces, SpaceError, Target, MAX_SPACES};
use pvops_core::{Counters, LazyMmu, MmuOps, Platform};
use pvops_tests::xen_model::XenModel;
use pvops_tests::xen_model::{boot_mib, ModelAccess, XenBootRun};
use pvops_tests::{boot_default, Access, SimMachine};

const PRIVATE_VA: VirtAddr = VirtAddr::new(0x4000_0000);

fn xen() -> XenBootRun {
    let mut run = boot_mib(64, BootOptions::default());
    run.expect_pass();
    run
}

fn sim() -> (SimMachine, Box<pvops_core::boot::BootState>) {
    let (sim, run) = boot_default(64);
    run.expect_pass();
    (sim, run.state)
}

fn check_model(mmu: &mut XenMmu<XenModel>) {
    let m = mmu.model();
    assert_eq!(
        m.writable_pagetable_mappings(),
        vec![],
        "writable page tables"
    );
    assert!(m.violations().is_empty(), "{:?}", m.violations());
}

/// A fresh frame filled with `tag`, mapped at `va` in space `id`.
fn private_page<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    spaces: &AddressSpaces,
    id: pvops_core::space::SpaceId,
    va: VirtAddr,
    tag: u8,
) -> PhysFrame {
    let f = alloc.alloc().unwrap();
    let ptr = p.frame_ptr(f).unwrap();
    // SAFETY: our fresh frame, direct-mapped.
    unsafe { core::ptr::write_bytes(ptr, tag, PAGE_SIZE as usize) };
    let mfn = p.phys_to_machine(f).unwrap();
    // SAFETY: the space is ours; `va` is free in it.
    unsafe { spaces.map_page(p, alloc, id, va, mfn, KERNEL_RW) }
        .unwrap()
        .ignore();
    f
}

fn read_byte<P: Platform>(p: &P, va: VirtAddr) -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: the tests read their own mappings.
    unsafe { p.read_virt(va, &mut b) }.unwrap();
    b[0]
}

/// A -> B -> A -> kernel -> B -> kernel -> A ..., each space's private page read back.
fn switching_any_order<P: Platform>(p: &mut P, alloc: &mut FrameAllocator)
where
    P::Error: core::fmt::Debug,
{
    let before = alloc.available();
    let mut spaces = AddressSpaces::new(p.read_cr3(), &p.layout());
    let a = spaces.create(p, alloc).unwrap();
    let b = spaces.create(p, alloc).unwrap();
    let fa = private_page(p, alloc, &spaces, a, PRIVATE_VA, 0xaa);
    let fb = private_page(p, alloc, &spaces, b, PRIVATE_VA, 0xbb);
    let order = [
        Target::Space(a),
        Target::Space(b),
        Target::Space(a),
        Target::Kernel,
        Target::Space(b),
        Target::Kernel,
        Target::Space(a),
        Target::Space(a),
        Target::Kernel,
        Target::Kernel,
    ];
    for t in order {
        spaces
            .switch_to(p, t)
            .unwrap_or_else(|e| panic!("switch to {t:?}: {e:?}"));
        assert_eq!(p.read_cr3(), spaces.root::<P::Error>(t).unwrap());
        match t {
            Target::Space(id) if id == a => assert_eq!(read_byte(p, PRIVATE_VA), 0xaa),
            Target::Space(_) => assert_eq!(read_byte(p, PRIVATE_VA), 0xbb),
            Target::Kernel => assert!(mapper::translate(p, p.read_cr3(), PRIVATE_VA).is_err()),
        }
        // The kernel half is the kernel's in every space.
        let direct = p.layout().page_offset;
        assert_eq!(
            mapper::translate(p, p.read_cr3(), direct).unwrap(),
            mapper::translate(p, spaces.kernel_root(), direct).unwrap()
        );
    }
    for (id, f) in [(a, fa), (b, fb)] {
        // SAFETY: not live, nothing uses it.
        unsafe { spaces.unmap_page(p, id, PRIVATE_VA) }
            .unwrap()
            .1
            .ignore();
        spaces.destroy(p, alloc, id).unwrap();
        alloc.free(f).unwrap();
    }
    assert_eq!(alloc.available(), before, "every frame back");
}

#[test]
fn switching_a_b_a_and_back_to_the_kernel_any_number_of_times() {
    let (mut s, mut state) = sim();
    switching_any_order(&mut s, &mut state.alloc);
    // Before issue 10 the Xen backend pinned at every write_cr3: the second switch to a root
    // got EINVAL (pin of a pinned table).
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    switching_any_order(mmu, &mut run.state.alloc);
    check_model(run.mmu.as_mut().unwrap());
}

fn destroying_live<P: Platform>(p: &mut P, alloc: &mut FrameAllocator)
where
    P::Error: core::fmt::Debug + PartialEq,
{
    let mut spaces = AddressSpaces::new(p.read_cr3(), &p.layout());
    let a = spaces.create(p, alloc).unwrap();
    spaces.switch_to(p, Target::Space(a)).unwrap();
    assert_eq!(spaces.destroy(p, alloc, a), Err(SpaceError::Live(a)));
    spaces.switch_to(p, Target::Kernel).unwrap();
    spaces.destroy(p, alloc, a).unwrap();
    assert_eq!(spaces.destroy(p, alloc, a), Err(SpaceError::Unknown(a)));
    assert_eq!(
        spaces.switch_to(p, Target::Space(a)),
        Err(SpaceError::Unknown(a))
    );
}

#[test]
fn destroying_the_live_space_is_refused() {
    let (mut s, mut state) = sim();
    destroying_live(&mut s, &mut state.alloc);
    let mut run = xen();
    destroying_live(run.mmu.as_mut().unwrap(), &mut run.state.alloc);
    check_model(run.mmu.as_mut().unwrap());
}

#[test]
fn destroy_unpins_and_frees_every_table() {
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    let alloc = &mut run.state.alloc;
    let before = alloc.available();
    let mut spaces = AddressSpaces::new(mmu.read_cr3(), &mmu.layout());
    let a = spaces.create(mmu, alloc).unwrap();
    let root = spaces.root::<XenError>(Target::Space(a)).unwrap();
    let f = private_page(mmu, alloc, &spaces, a, PRIVATE_VA, 1);
    let l1 = mapper::walk(mmu, root, PRIVATE_VA).unwrap().slot.table();
    let l2s: Vec<PhysFrame> = PdptIndex::all()
        .map(|i| mapper::next_table(mmu, mapper::read_entry(mmu, root, i).unwrap()).unwrap())
        .collect();
    spaces.switch_to(mmu, Target::Space(a)).unwrap();
    spaces.switch_to(mmu, Target::Kernel).unwrap();
    assert!(mmu.model().state(root).pinned, "pinned when first used");
    // SAFETY: not live.
    unsafe { spaces.unmap_page(mmu, a, PRIVATE_VA) }
        .unwrap()
        .1
        .ignore();
    spaces.destroy(mmu, alloc, a).unwrap();
    alloc.free(f).unwrap();
    assert_eq!(
        alloc.available(),
        before,
        "every table frame back to the allocator"
    );
    let kernel = mmu.read_cr3();
    for t in [root, l1].into_iter().chain(l2s) {
        let st = mmu.model().state(t);
        assert!(!st.pinned && !st.ty.is_table(), "pfn {t}: {st:?}");
        let va = mmu.layout().phys_to_virt(t.start());
        let e = mapper::translate(mmu, kernel, va).unwrap();
        assert!(
            e.flags().contains(PteFlags::WRITABLE),
            "pfn {t} writable again"
        );
    }
    check_model(mmu);
}

#[test]
fn a_shared_slot3_l2_is_refused_by_the_model_as_by_xen() {
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    let alloc = &mut run.state.alloc;
    let kernel = mmu.read_cr3();
    let (root, _) = mapper::new_table(mmu, alloc, Level::L3).unwrap();
    for i in PdptIndex::all() {
        let link = if i.get() == 3 {
            mapper::read_entry(mmu, kernel, i).unwrap()
        } else {
            mapper::new_table(mmu, alloc, Level::L2).unwrap().1
        };
        // SAFETY: a root that is not live.
        unsafe { mmu.set_pud(EntrySlot::pdpt(root, i), link) }.unwrap();
    }
    match mmu.pin_root(root) {
        Err(XenError::Hypercall {
            op: XenOp::MmuextOp(mmuext::PIN_L3_TABLE),
            errno: Errno::EINVAL,
            ..
        }) => {}
        other => panic!("pin of an L3 sharing the slot-3 L2: {other:?}"),
    }
    let why = &mmu.model().failures().last().unwrap().reason;
    assert!(why.contains("3rd slot is shared"), "{why}");
    // A space has its own copy of the slot-3 L2: its pin passes.
    let mut spaces = AddressSpaces::new(kernel, &mmu.layout());
    let a = spaces.create(mmu, alloc).unwrap();
    spaces.switch_to(mmu, Target::Space(a)).unwrap();
    spaces.switch_to(mmu, Target::Kernel).unwrap();
}

fn two_lazy_maps<P: Platform>(p: &mut P, alloc: &mut FrameAllocator)
where
    P::Error: core::fmt::Debug,
{
    // The scratch area's L1 was retired by the exercise: this 2 MiB has no L1.
    let va = p.layout().scratch_area;
    let root = p.read_cr3();
    assert!(matches!(
        mapper::translate(p, root, va),
        Err(MapError::NotMapped(_))
    ));
    let (f1, f2) = (alloc.alloc().unwrap(), alloc.alloc().unwrap());
    let (m1, m2) = (
        p.phys_to_machine(f1).unwrap(),
        p.phys_to_machine(f2).unwrap(),
    );
    let before = alloc.allocated();
    {
        let mut lazy = LazyMmu::enter(&mut *p);
        // SAFETY: the scratch area is the test's.
        unsafe {
            mapper::map_page(&mut *lazy, alloc, root, va, m1, KERNEL_RW)
                .unwrap()
                .ignore();
            mapper::map_page(
                &mut *lazy,
                alloc,
                root,
                VirtAddr::new(va.as_u32() + 4096),
                m2,
                KERNEL_RW,
            )
            .unwrap()
            .ignore();
        }
        // The walk sees the queued writes before the flush.
        assert_eq!(
            mapper::translate(&*lazy, root, va).unwrap().frame(),
            Some(m1)
        );
        lazy.finish().unwrap();
    }
    assert_eq!(alloc.allocated(), before + 1, "one new L1 for both pages");
    assert_eq!(mapper::translate(p, root, va).unwrap().frame(), Some(m1));
    assert_eq!(
        mapper::translate(p, root, VirtAddr::new(va.as_u32() + 4096))
            .unwrap()
            .frame(),
        Some(m2)
    );
}

/// Before issue 10, under Xen the second walk read the L2 entry whose `set_pmd` was still
/// queued: `NotMapped` for the first page, and a second (leaked) L1.
#[test]
fn two_lazy_map_page_calls_under_one_missing_l1() {
    let (mut s, mut state) = sim();
    two_lazy_maps(&mut s, &mut state.alloc);
    let mut run = xen();
    two_lazy_maps(run.mmu.as_mut().unwrap(), &mut run.state.alloc);
    check_model(run.mmu.as_mut().unwrap());
}

/// Hands out `first` for the first table, then defers to the boot path's allocator.
struct FirstTable<'a> {
    first: Option<PhysFrame>,
    inner: &'a mut FrameAllocator,
}

impl FrameAlloc for FirstTable<'_> {
    fn alloc(&mut self) -> Result<PhysFrame, AllocError> {
        self.inner.alloc()
    }
    fn alloc_table(&mut self) -> Result<PhysFrame, AllocError> {
        match self.first.take() {
            Some(f) => Ok(f),
            None => self.inner.alloc_table(),
        }
    }
    fn free(&mut self, frame: PhysFrame) -> Result<(), AllocError> {
        self.inner.free(frame)
    }
}

/// A space whose root lands on the frame of Xen's bootstrap L3 (pt_base, unpinned and given
/// to the allocator at boot) is pinned once, switched to and back, and destroyed. (Found
/// while writing this test: every switch away from such a space was taken for "leaving the
/// bootstrap table" and unpinned the space's root.)
#[test]
fn a_space_whose_root_reuses_pt_base_is_pinned_once_and_destroyed() {
    let mut run = xen();
    let pt_base = run.bootstrap_tables.start;
    let mmu = run.mmu.as_mut().unwrap();
    let inner = &mut run.state.alloc;
    // Take pt_base's frame out of the allocator.
    let mut taken = Vec::new();
    loop {
        let f = inner.alloc().unwrap();
        if f == pt_base {
            break;
        }
        taken.push(f);
        assert!(taken.len() < 100_000, "pt_base never handed out");
    }
    let mut alloc = FirstTable {
        first: Some(pt_base),
        inner,
    };
    let mut spaces = AddressSpaces::new(mmu.read_cr3(), &mmu.layout());
    let a = spaces.create(mmu, &mut alloc).unwrap();
    assert_eq!(spaces.root::<XenError>(Target::Space(a)).unwrap(), pt_base);
    for _ in 0..3 {
        spaces.switch_to(mmu, Target::Space(a)).unwrap();
        spaces.switch_to(mmu, Target::Kernel).unwrap();
    }
    assert_eq!(
        mmu.pin_root(pt_base),
        Err(XenError::AlreadyPinned { pfn: pt_base })
    );
    spaces.destroy(mmu, &mut alloc, a).unwrap();
    assert!(!mmu.model().state(pt_base).pinned);
    for f in taken {
        run.state.alloc.free(f).unwrap();
    }
    check_model(run.mmu.as_mut().unwrap());
}

/// Nested lazy sections flush once, at the outermost end; an error of a flush that a
/// dropped guard could not report comes back from the next operation.
#[test]
fn lazy_sections_nest_and_a_dropped_flush_error_is_reported() {
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    let alloc = &mut run.state.alloc;
    let root = mmu.read_cr3();
    let va = mmu.layout().scratch_area;
    let f = alloc.alloc().unwrap();
    let m = mmu.phys_to_machine(f).unwrap();
    // SAFETY: the scratch page is the test's.
    unsafe { mapper::map_page(mmu, alloc, root, va, m, KERNEL_RW) }
        .unwrap()
        .flush(mmu)
        .unwrap();
    let calls = mmu.counters().hypercalls();
    {
        let mut outer = LazyMmu::enter(&mut *mmu);
        {
            let mut inner = LazyMmu::enter(&mut *outer);
            assert!(inner.is_nested());
            // SAFETY: as above.
            unsafe { mapper::unmap_page(&mut *inner, root, va) }
                .unwrap()
                .1
                .flush(&mut *inner)
                .unwrap();
            inner.finish().unwrap();
        }
        assert_eq!(
            outer.counters().hypercalls(),
            calls,
            "the inner end issues nothing"
        );
        assert!(
            mapper::translate(&*outer, root, va).is_err(),
            "reads see the queue"
        );
        outer.finish().unwrap();
    }
    // One batch at the outer end: the clear and the invlpg in one multicall.
    assert_eq!(
        mmu.counters().hypercalls(),
        calls + 1,
        "one batch at the outer end"
    );
    // A guard dropped on an early return: its flush fails (injected), nobody hears it then.
    let next = mmu.model().counters().total + 1;
    mmu.model().fail_hypercall(next, Errno::ENOMEM);
    {
        let mut lazy = LazyMmu::enter(&mut *mmu);
        // SAFETY: as above.
        unsafe { mapper::map_page(&mut *lazy, alloc, root, va, m, KERNEL_RW) }
            .unwrap()
            .ignore();
    }
    match mmu.flush_tlb_all() {
        Err(XenError::Hypercall {
            errno: Errno::ENOMEM,
            ..
        }) => {}
        other => panic!("the dropped flush's error, reported late: {other:?}"),
    }
    // Documented state: the queue is empty, the failed update was not applied.
    assert!(mapper::translate(mmu, root, va).is_err());
    mmu.flush_tlb_all().unwrap();
    alloc.free(f).unwrap();
}

fn probe(sim: &SimMachine, tag: u8) -> (PhysFrame, MachineAddr) {
    let f = PhysFrame::new(0x200 + tag as u32);
    let ptr = sim.frame_ptr(f).unwrap();
    // SAFETY: a frame of the sim's RAM the test owns (not the allocator's path here).
    unsafe { core::ptr::write_bytes(ptr, tag, PAGE_SIZE as usize) };
    (f, sim.phys_to_machine(f).unwrap().start())
}

/// Two instances over one window never share a slot; a slot with a present PTE is never
/// mapped over; when every free slot of an instance is taken, it says so.
#[test]
fn an_early_ioremap_window_has_one_owner() {
    let (mut sim, mut state) = sim();
    let alloc = &mut state.alloc;
    let window = sim.layout().ioremap_window;
    let (_, a_ma) = probe(&sim, 0x11);
    let (_, b_ma) = probe(&sim, 0x22);
    let mut a = EarlyIoremap::new(window, TableSource::LiveCr3);
    let mut b = EarlyIoremap::new(window, TableSource::LiveCr3);
    let ma = a.map(&mut sim, alloc, a_ma, 64).unwrap();
    let mb = b.map(&mut sim, alloc, b_ma, 64).unwrap();
    assert_ne!(ma.addr(), mb.addr(), "two instances aliased one slot");
    assert_eq!(read_byte(&sim, ma.addr()), 0x11);
    assert_eq!(read_byte(&sim, mb.addr()), 0x22);
    // Fill every other slot through `a`; `b` then has no slot without a present PTE.
    let mut more = Vec::new();
    while let Ok(m) = a.map(&mut sim, alloc, a_ma, 64) {
        more.push(m);
    }
    let mut c = EarlyIoremap::new(window, TableSource::LiveCr3);
    assert!(matches!(
        c.map(&mut sim, alloc, b_ma, 64),
        Err(IoremapError::SlotTaken { .. })
    ));
    assert_eq!(read_byte(&sim, ma.addr()), 0x11, "nothing mapped over");
    for m in more {
        a.unmap(&mut sim, alloc, m).unwrap();
    }
    a.unmap(&mut sim, alloc, ma).unwrap();
    b.unmap(&mut sim, alloc, mb).unwrap();
}

/// A 16-page mapping whose 6th page-table operation fails leaves no page of the slot
/// present.
#[test]
fn a_half_failed_early_ioremap_leaves_nothing_present() {
    let (mut sim, mut state) = sim();
    let alloc = &mut state.alloc;
    let window = sim.layout().ioremap_window;
    let (_, ma) = probe(&sim, 0x33);
    let mut io = EarlyIoremap::new(window, TableSource::LiveCr3);
    // Walk (and link) the window's L1 first, so the failure lands in the PTE writes.
    let m = io.map(&mut sim, alloc, ma, 64).unwrap();
    io.unmap(&mut sim, alloc, m).unwrap();
    let ops = sim.pt_ops();
    sim.fail_at(Some(ops + 6));
    let len = 16 * PAGE_SIZE;
    assert!(io.map(&mut sim, alloc, ma, len).is_err());
    sim.fail_at(None);
    for i in 0..16u32 {
        let va = VirtAddr::new(window.as_u32() + i * PAGE_SIZE as u32);
        assert!(sim.walk(va, Access::Read).is_err(), "{va} left present");
    }
    // The slot is usable again.
    let m = io.map(&mut sim, alloc, ma, len).unwrap();
    io.unmap(&mut sim, alloc, m).unwrap();
    let _ = MachineFrame::new(0);
}

/// At most `MAX_SPACES` spaces exist at once (a typed refusal beyond), and destroying them
/// gives every table back.
#[test]
fn at_most_max_spaces_exist_at_once() {
    let (mut s, mut state) = sim();
    let alloc = &mut state.alloc;
    let before = alloc.available();
    let mut spaces = AddressSpaces::new(s.read_cr3(), &s.layout());
    let ids: Vec<_> = (0..MAX_SPACES)
        .map(|_| spaces.create(&mut s, alloc).unwrap())
        .collect();
    assert!(matches!(
        spaces.create(&mut s, alloc),
        Err(SpaceError::TooMany)
    ));
    assert_eq!(spaces.count(), MAX_SPACES);
    for id in ids {
        spaces.destroy(&mut s, alloc, id).unwrap();
    }
    assert_eq!(alloc.available(), before);
}

// ----- duplicate: Linux's dup_mmap (fork) -----

use pvops_core::space::{Duplicate, SpaceId};

/// Private pages of the fork tests: (va, writable, tag). Two in one L1, one in another L1 of
/// the same L2, one under another PDPT slot.
const FORK_PAGES: [(u32, bool, u8); 4] = [
    (0x4000_0000, true, 0xa1),
    (0x4000_1000, false, 0xa2),
    (0x4020_0000, true, 0xa3),
    (0x8000_0000, true, 0xa4),
];

fn fork_source<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    spaces: &mut AddressSpaces,
) -> (SpaceId, Vec<PhysFrame>) {
    let a = spaces.create(p, alloc).unwrap();
    let mut frames = Vec::new();
    for (va, writable, tag) in FORK_PAGES {
        let f = alloc.alloc().unwrap();
        // SAFETY: our fresh frame, direct-mapped.
        unsafe { core::ptr::write_bytes(p.frame_ptr(f).unwrap(), tag, PAGE_SIZE as usize) };
        let flags = if writable {
            KERNEL_RW
        } else {
            KERNEL_RW.difference(PteFlags::WRITABLE)
        };
        let mfn = p.phys_to_machine(f).unwrap();
        // SAFETY: the space is new; `va` is free in it.
        unsafe { spaces.map_page(p, alloc, a, VirtAddr::new(va), mfn, flags) }
            .unwrap()
            .ignore();
        frames.push(f);
    }
    (a, frames)
}

/// Unmaps the fork tests' pages in each of `ids` (none live), destroys them and frees
/// `frames` (each once, now that no space maps it).
fn tear_down<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    spaces: &mut AddressSpaces,
    ids: &[SpaceId],
    frames: Vec<PhysFrame>,
) where
    P::Error: core::fmt::Debug,
{
    for id in ids {
        for (va, _, _) in FORK_PAGES {
            // SAFETY: not live, nothing uses it.
            unsafe { spaces.unmap_page(p, *id, VirtAddr::new(va)) }
                .unwrap()
                .1
                .ignore();
        }
        spaces.destroy(p, alloc, *id).unwrap();
    }
    for f in frames {
        alloc.free(f).unwrap();
    }
}

fn entry_in<P: Platform>(
    p: &P,
    spaces: &AddressSpaces,
    id: SpaceId,
    va: u32,
) -> pvops_core::paging::PageTableEntry {
    spaces
        .translate(p, Target::Space(id), VirtAddr::new(va))
        .unwrap()
}

fn l1_of<P: Platform>(p: &P, spaces: &AddressSpaces, id: SpaceId, va: u32) -> PhysFrame {
    let root = spaces.root::<P::Error>(Target::Space(id)).unwrap();
    mapper::walk(p, root, VirtAddr::new(va))
        .unwrap()
        .slot
        .table()
}

/// Shared then copy-on-write duplicates of a live space: the same frames and bytes in each,
/// their own L1s, the right rights, the flush owed only when the live source changed, and
/// every frame back at the end. Returns the hypercalls of the copy-on-write duplicate.
fn fork_like_linux<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> u64
where
    P::Error: core::fmt::Debug,
{
    let before = alloc.available();
    let mut spaces = AddressSpaces::new(p.read_cr3(), &p.layout());
    let (a, frames) = fork_source(p, alloc, &mut spaces);
    spaces.switch_to(p, Target::Space(a)).unwrap();
    // Shared: the same entries, nothing changed in the source.
    // SAFETY: the test frees each frame once, after every space unmapped it.
    let (shared, flush) = unsafe { spaces.duplicate(p, alloc, a, Duplicate::Shared) }.unwrap();
    assert!(!flush.is_needed(), "nothing of the source changed");
    flush.ignore();
    for (va, _, _) in FORK_PAGES {
        assert_eq!(
            entry_in(p, &spaces, shared, va),
            entry_in(p, &spaces, a, va)
        );
        assert_ne!(
            l1_of(p, &spaces, shared, va),
            l1_of(p, &spaces, a, va),
            "own L1s"
        );
    }
    // Copy-on-write from the live source.
    let calls = p.counters().hypercalls();
    // SAFETY: as above.
    let (child, flush) = unsafe { spaces.duplicate(p, alloc, a, Duplicate::CopyOnWrite) }.unwrap();
    let cow_calls = p.counters().hypercalls() - calls;
    assert!(flush.is_needed(), "the live source lost write rights");
    flush.flush(p).unwrap();
    for ((va, writable, _), f) in FORK_PAGES.into_iter().zip(&frames) {
        let m = p.phys_to_machine(*f).unwrap();
        for id in [a, child] {
            let e = entry_in(p, &spaces, id, va);
            assert_eq!(e.frame(), Some(m), "{va:#x}: the same frame");
            assert!(
                !e.flags().contains(PteFlags::WRITABLE),
                "{va:#x}: read-only in both"
            );
        }
        assert_eq!(
            entry_in(p, &spaces, shared, va)
                .flags()
                .contains(PteFlags::WRITABLE),
            writable,
            "{va:#x}: the shared copy keeps its rights"
        );
    }
    // The bytes through each space.
    for t in [
        Target::Space(child),
        Target::Space(shared),
        Target::Space(a),
    ] {
        spaces.switch_to(p, t).unwrap();
        for (va, _, tag) in FORK_PAGES {
            assert_eq!(read_byte(p, VirtAddr::new(va)), tag, "{t:?} {va:#x}");
        }
    }
    // A copy-on-write duplicate of a space that is not live owes no flush.
    spaces.switch_to(p, Target::Kernel).unwrap();
    // SAFETY: as above.
    let (grandchild, flush) =
        unsafe { spaces.duplicate(p, alloc, child, Duplicate::CopyOnWrite) }.unwrap();
    assert!(!flush.is_needed());
    flush.ignore();
    tear_down(
        p,
        alloc,
        &mut spaces,
        &[a, shared, child, grandchild],
        frames,
    );
    assert_eq!(alloc.available(), before, "every frame back");
    cow_calls
}

#[test]
fn a_space_duplicates_like_linux_fork_shared_or_copy_on_write() {
    let (mut s, mut state) = sim();
    assert_eq!(fork_like_linux(&mut s, &mut state.alloc), 0);
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    let calls = fork_like_linux(mmu, &mut run.state.alloc);
    check_model(run.mmu.as_mut().unwrap());
    // The copy's tables are private until the copy is first switched to (plain stores); the
    // three write-protects of the live source's entries go out in one batch at the end of
    // the lazy section: 1 hypercall (measured), never one per entry.
    assert!(calls <= 2, "copy-on-write duplicate: {calls} hypercalls");
    eprintln!("copy-on-write duplicate of 4 pages in 3 L1s: {calls} hypercalls");
}

/// A copy-on-write duplicate of the live space with a failure injected by `inject` (given
/// the model and the number of hypercalls made so far): the error comes back, the copy is
/// gone, every frame is back and the model is consistent. Returns whether it fired.
fn duplicate_failing(inject: impl FnOnce(&mut XenModel, u64)) -> bool {
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    let alloc = &mut run.state.alloc;
    let mut spaces = AddressSpaces::new(mmu.read_cr3(), &mmu.layout());
    let (a, frames) = fork_source(mmu, alloc, &mut spaces);
    spaces.switch_to(mmu, Target::Space(a)).unwrap();
    let before = alloc.available();
    let first = mmu.model().counters().total;
    inject(mmu.model(), first);
    // SAFETY: the test frees each frame once, after every space unmapped it.
    let r = unsafe { spaces.duplicate(mmu, alloc, a, Duplicate::CopyOnWrite) };
    let fired = mmu.model().injected().is_some();
    mmu.model().cancel_failure();
    match r {
        Ok((id, flush)) => {
            assert!(!fired, "a hypercall failed, yet the duplicate succeeded");
            flush.flush(mmu).unwrap();
            spaces.destroy(mmu, alloc, id).unwrap();
        }
        Err(e) => {
            assert!(fired, "{e:?} without an injected failure");
            assert_eq!(spaces.count(), 1, "the copy is gone");
        }
    }
    assert_eq!(alloc.available(), before, "frames back");
    spaces.switch_to(mmu, Target::Kernel).unwrap();
    tear_down(mmu, alloc, &mut spaces, &[a], frames);
    check_model(run.mmu.as_mut().unwrap());
    let problems = run.model().audit();
    assert_eq!(problems, Vec::<String>::new());
    fired
}

#[test]
fn a_failed_duplicate_gives_everything_back() {
    // Each hypercall of the duplicate failed in turn, then each entry of its multicall.
    let mut calls = 0;
    while duplicate_failing(|m, first| m.fail_hypercall(first + calls + 1, Errno::ENOMEM)) {
        calls += 1;
    }
    let mut entries = 0;
    for k in 1..=calls {
        let mut i = 0;
        while duplicate_failing(|m, first| {
            m.fail_multicall_entry(first + k, i, Errno::ENOMEM);
            m.fail_batch_request(first + k, i, Errno::ENOMEM);
        }) {
            i += 1;
        }
        entries += i;
    }
    eprintln!("duplicate failed at each of {calls} hypercalls and {entries} entries or requests");
    // The three write-protects of the live source's entries, one batch (the copy's tables
    // are private until their first pin: plain stores).
    assert!(
        calls >= 1 && entries >= 3,
        "{calls} hypercalls, {entries} entries"
    );
}

#[test]
fn duplicate_refuses_an_unknown_space_and_a_full_set() {
    let (mut s, mut state) = sim();
    let alloc = &mut state.alloc;
    let mut spaces = AddressSpaces::new(s.read_cr3(), &s.layout());
    let a = spaces.create(&mut s, alloc).unwrap();
    spaces.destroy(&mut s, alloc, a).unwrap();
    // SAFETY: nothing is mapped.
    let r = unsafe { spaces.duplicate(&mut s, alloc, a, Duplicate::Shared) };
    assert!(matches!(r, Err(SpaceError::Unknown(id)) if id == a));
    let ids: Vec<SpaceId> = (0..MAX_SPACES)
        .map(|_| spaces.create(&mut s, alloc).unwrap())
        .collect();
    let before = alloc.available();
    // SAFETY: as above.
    let r = unsafe { spaces.duplicate(&mut s, alloc, ids[0], Duplicate::Shared) };
    assert!(matches!(r, Err(SpaceError::TooMany)));
    assert_eq!(alloc.available(), before, "nothing made");
    for id in ids {
        spaces.destroy(&mut s, alloc, id).unwrap();
    }
}

// ----- after a fork: the copy-on-write break (remap_page) and mprotect (protect_range) -----

/// What a fault handler does after a copy-on-write duplicate: the child's write gets its own
/// copy of the page (`remap_page`), the parent, left the only user, gets its write right
/// back (`protect_range`); each sees its own bytes. Then the refusals.
fn break_copy_on_write<P: Platform>(p: &mut P, alloc: &mut FrameAllocator)
where
    P::Error: core::fmt::Debug,
{
    let before = alloc.available();
    let mut spaces = AddressSpaces::new(p.read_cr3(), &p.layout());
    let (a, frames) = fork_source(p, alloc, &mut spaces);
    spaces.switch_to(p, Target::Space(a)).unwrap();
    // SAFETY: the test frees each frame once, after every space unmapped it.
    let (child, flush) = unsafe { spaces.duplicate(p, alloc, a, Duplicate::CopyOnWrite) }.unwrap();
    flush.flush(p).unwrap();
    let va = VirtAddr::new(FORK_PAGES[0].0);
    // The child's copy: the old page's bytes, then its own write.
    let g = alloc.alloc().unwrap();
    let (src, dst) = (p.frame_ptr(frames[0]).unwrap(), p.frame_ptr(g).unwrap());
    // SAFETY: two distinct frames of the test's, direct-mapped.
    unsafe {
        core::ptr::copy_nonoverlapping(src, dst, PAGE_SIZE as usize);
        dst.write(0xc1);
    }
    let gm = p.phys_to_machine(g).unwrap();
    // SAFETY: the child's page now maps the child's own copy.
    let (old, flush) = unsafe { spaces.remap_page(p, child, va, gm, KERNEL_RW) }.unwrap();
    flush.flush(p).unwrap();
    assert_eq!(
        old,
        p.phys_to_machine(frames[0]).unwrap(),
        "the frame it mapped"
    );
    // SAFETY: the parent is the page's only user again.
    unsafe { spaces.protect_range(p, a, va, 1, KERNEL_RW) }
        .unwrap()
        .flush(p)
        .unwrap();
    for (id, frame, tag) in [(a, frames[0], 0xa1), (child, g, 0xc1)] {
        let e = entry_in(p, &spaces, id, va.as_u32());
        assert_eq!(e.frame(), p.phys_to_machine(frame));
        assert!(e.flags().contains(PteFlags::WRITABLE));
        spaces.switch_to(p, Target::Space(id)).unwrap();
        assert_eq!(read_byte(p, va), tag);
        assert_eq!(
            read_byte(p, va.wrapping_add(1)),
            0xa1,
            "the rest of the copy"
        );
    }
    // Refusals, nothing changed by them: a range with an unmapped page (its chunk),
    // the kernel half, an unmapped page.
    let second = VirtAddr::new(FORK_PAGES[1].0);
    // SAFETY: refused before any change.
    let r = unsafe { spaces.protect_range(p, a, second, 2, KERNEL_RW) };
    assert!(
        matches!(r, Err(SpaceError::Map(MapError::NotMapped(v))) if v.as_u32() == 0x4000_2000),
        "{r:?}"
    );
    let e = entry_in(p, &spaces, a, second.as_u32());
    assert!(!e.flags().contains(PteFlags::WRITABLE), "unchanged");
    let kernel = p.layout().page_offset;
    // SAFETY: refused.
    let r = unsafe { spaces.protect_range(p, a, kernel, 1, KERNEL_RW) };
    assert!(matches!(r, Err(SpaceError::KernelHalf(_))), "{r:?}");
    // SAFETY: refused.
    let r = unsafe { spaces.remap_page(p, a, VirtAddr::new(0x4000_5000), gm, KERNEL_RW) };
    assert!(
        matches!(r, Err(SpaceError::Map(MapError::NotMapped(_)))),
        "{r:?}"
    );
    spaces.switch_to(p, Target::Kernel).unwrap();
    tear_down(p, alloc, &mut spaces, &[a, child], frames);
    alloc.free(g).unwrap();
    assert_eq!(alloc.available(), before, "every frame back");
}

#[test]
fn a_copy_on_write_break_and_mprotect_after_a_fork() {
    let (mut s, mut state) = sim();
    break_copy_on_write(&mut s, &mut state.alloc);
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    break_copy_on_write(mmu, &mut run.state.alloc);
    check_model(run.mmu.as_mut().unwrap());
}

#[test]
fn protecting_a_range_is_batched_under_xen() {
    // 1024 kernel pages mapped writable, then made read-only and writable again with
    // protect_range: each way a few batched hypercalls (measured), not one per page.
    let mut run = xen();
    let mmu = run.mmu.as_mut().unwrap();
    let alloc = &mut run.state.alloc;
    let root = mmu.read_cr3();
    let va = mmu.layout().scratch_area;
    const N: usize = 1024;
    let frames: Vec<PhysFrame> = (0..N).map(|_| alloc.alloc().unwrap()).collect();
    let mfns: Vec<MachineFrame> = frames
        .iter()
        .map(|f| mmu.phys_to_machine(*f).unwrap())
        .collect();
    // SAFETY: the scratch area is the test's.
    unsafe { mapper::map_range(mmu, alloc, root, va, N, KERNEL_RW, |i| mfns[i]) }.unwrap();
    let ro = KERNEL_RW.difference(PteFlags::WRITABLE);
    let mut costs = Vec::new();
    for flags in [ro, KERNEL_RW] {
        let calls = mmu.counters().hypercalls();
        {
            let mut lazy = LazyMmu::enter(&mut *mmu);
            // SAFETY: as above.
            unsafe { mapper::protect_range(&mut *lazy, root, va, N, flags) }
                .unwrap()
                .flush(&mut *lazy)
                .unwrap();
            lazy.finish().unwrap();
        }
        costs.push(mmu.counters().hypercalls() - calls);
        for i in [0, 511, 512, N - 1] {
            let at = va.wrapping_add((i as u32) << 12);
            let e = mapper::translate(mmu, root, at).unwrap();
            assert_eq!(e.flags(), flags | PteFlags::PRESENT, "page {i}");
            assert_eq!(e.frame(), Some(mfns[i]));
        }
    }
    eprintln!("protect_range of {N} pages: {costs:?} hypercalls");
    assert!(costs.iter().all(|c| *c <= 4), "{costs:?}");
    // SAFETY: as above.
    unsafe { mapper::unmap_range(mmu, root, va, N, |_, _| {}) }
        .unwrap()
        .flush(mmu)
        .unwrap();
    for f in frames {
        alloc.free(f).unwrap();
    }
    check_model(run.mmu.as_mut().unwrap());
}

//! The generic misuse cases: bad operations that must be refused with pvops's own typed
//! errors, on any [`Platform`] after a successful boot: operations on the live table
//! ([`run_generic`], guest-demo's `misuse` stage) and argument and bookkeeping checks that
//! refuse before any backend operation ([`run_checks`], host unit tests).
//!
//! Every case sets up its own precondition, provokes one bad operation, compares what
//! happened with what was expected and undoes everything it set up, so the machine is left
//! as it was found. No heap: results go to a callback, one [`CaseResult`] per case; a run
//! stops at the first case that does not behave as expected (the machine may no longer be in
//! a known state). A backend's own refusals (Xen's, through the raw hypercall layer) are in
//! `pvops-xen-conformance`.
//!
//! One file (about 640 lines) on purpose: it is the one case list, and each case is its own
//! set-up, provocation and clean-up, read best next to the others it shares helpers with.

use crate::verdict::{CaseResult, Status, Tally, Text, Verdict};
use core::fmt;
use pvops_core::addr::{
    MachineAddr, MachineFrame, PdptIndex, PhysAddr, PhysFrame, VirtAddr, PAGE_SIZE,
};
use pvops_core::ioremap::{
    EarlyIoremap, IoMapping, IoremapError, TableSource, IOREMAP_MAX_BYTES, IOREMAP_SLOTS,
};
use pvops_core::mapper::{self, MapError};
use pvops_core::mem::{
    AllocError, FrameAllocator, MemoryMap, MemoryMapError, RegionKind, MAX_REGIONS,
    TABLE_BITMAP_FRAMES,
};
use pvops_core::ops::Platform;
use pvops_core::options::BootOptions;
use pvops_core::paging::{EntrySlot, Level, PageTableEntry, KERNEL_RW};

// ----- names of pvops's typed errors -----

/// `AllocError::<Variant>`.
pub fn alloc_error_name(e: &AllocError) -> &'static str {
    match e {
        AllocError::Exhausted { .. } => "AllocError::Exhausted",
        AllocError::DoubleFree { .. } => "AllocError::DoubleFree",
        AllocError::NotAllocated { .. } => "AllocError::NotAllocated",
        AllocError::InUse { .. } => "AllocError::InUse",
        AllocError::UntrackableTable { .. } => "AllocError::UntrackableTable",
    }
}

/// `MemoryMapError::<Variant>`.
pub fn memory_map_error_name(e: &MemoryMapError) -> &'static str {
    match e {
        MemoryMapError::TooManyRegions => "MemoryMapError::TooManyRegions",
        MemoryMapError::EmptyRegion { .. } => "MemoryMapError::EmptyRegion",
        MemoryMapError::Wraps { .. } => "MemoryMapError::Wraps",
        MemoryMapError::Overlap { .. } => "MemoryMapError::Overlap",
    }
}

/// The verdict of a [`MapError`]: its variant, or the backend's error text.
pub fn map_error_verdict<E: fmt::Display>(e: &MapError<E>) -> Verdict {
    Verdict::Pvops(match e {
        MapError::Alloc(a) => alloc_error_name(a),
        MapError::Backend(b) => return Verdict::Backend(Text::new(format_args!("{b}"))),
        MapError::Unreachable(_) => "MapError::Unreachable",
        MapError::ForeignFrame(_) => "MapError::ForeignFrame",
        MapError::HugePage(_) => "MapError::HugePage",
        MapError::AlreadyMapped(_) => "MapError::AlreadyMapped",
        MapError::NotMapped(_) => "MapError::NotMapped",
        MapError::NoMachineFrame(_) => "MapError::NoMachineFrame",
        MapError::LivePdptEntry(_) => "MapError::LivePdptEntry",
        MapError::TableInUse { .. } => "MapError::TableInUse",
        MapError::BadRange { .. } => "MapError::BadRange",
        MapError::BadEntry(_) => "MapError::BadEntry",
    })
}

/// The verdict of an [`IoremapError`].
pub fn ioremap_error_verdict<E: fmt::Display>(e: &IoremapError<E>) -> Verdict {
    Verdict::Pvops(match e {
        IoremapError::ZeroSize => "IoremapError::ZeroSize",
        IoremapError::Overflow { .. } => "IoremapError::Overflow",
        IoremapError::TooLarge { .. } => "IoremapError::TooLarge",
        IoremapError::NoFreeSlot => "IoremapError::NoFreeSlot",
        IoremapError::SlotTaken { .. } => "IoremapError::SlotTaken",
        IoremapError::NotMapped { .. } => "IoremapError::NotMapped",
        IoremapError::WindowCrossesTable { .. } => "IoremapError::WindowCrossesTable",
        IoremapError::Map(m) => return map_error_verdict(m),
    })
}

// ----- the generic cases -----

/// One generic case: its name, the typed error it must get, and the code that provokes it.
struct Case<P: Platform> {
    name: &'static str,
    expected: &'static str,
    run: fn(&mut P, &mut FrameAllocator) -> Verdict,
}

/// Names of the generic cases, in the order they run, with the error each expects: bad
/// operations on the live table through the backend (early_ioremap, the mapper). These are
/// what guest-demo's `misuse` stage runs and what its gate counts; a skipped one (its
/// precondition cannot exist after a boot) is reported, never counted.
pub const GENERIC_CASES: [(&str, &str); 6] = [
    ("ioremap_all_slots_busy", "IoremapError::NoFreeSlot"),
    ("ioremap_second_owner", "IoremapError::SlotTaken"),
    ("ioremap_unmap_foreign_mapping", "IoremapError::NotMapped"),
    ("map_page_already_mapped", "MapError::AlreadyMapped"),
    ("unmap_page_not_mapped", "MapError::NotMapped"),
    ("l1_slot_live_pdpt_entry", "MapError::LivePdptEntry"),
];

/// pvops's checks of arguments and of its own bookkeeping that refuse before any backend
/// operation (early_ioremap's size checks, the frame allocator, the command line, the
/// memory map): host unit tests (`tests/tests/misuse_model.rs`), not counted by the
/// misuse stage, where they proved nothing about the machine.
pub const CHECK_CASES: [(&str, &str); 12] = [
    ("ioremap_zero_size", "IoremapError::ZeroSize"),
    ("ioremap_overflow", "IoremapError::Overflow"),
    ("ioremap_larger_than_slot", "IoremapError::TooLarge"),
    ("alloc_double_free", "AllocError::DoubleFree"),
    ("alloc_exhausted", "AllocError::Exhausted"),
    ("alloc_table_beyond_bitmap", "AllocError::UntrackableTable"),
    ("cmdline_unknown_option", "OptionError"),
    ("cmdline_bad_number", "OptionError"),
    ("memory_map_overlap", "MemoryMapError::Overlap"),
    ("memory_map_wrap", "MemoryMapError::Wraps"),
    ("memory_map_empty_region", "MemoryMapError::EmptyRegion"),
    (
        "memory_map_too_many_regions",
        "MemoryMapError::TooManyRegions",
    ),
];

type CaseFn<P> = fn(&mut P, &mut FrameAllocator) -> Verdict;

fn with_names<P: Platform, const N: usize>(
    names: &[(&'static str, &'static str); N],
    runs: [CaseFn<P>; N],
) -> [Case<P>; N] {
    let mut i = 0;
    runs.map(|run| {
        let (name, expected) = names[i];
        i += 1;
        Case {
            name,
            expected,
            run,
        }
    })
}

fn generic_cases<P: Platform>() -> [Case<P>; GENERIC_CASES.len()] {
    with_names(
        &GENERIC_CASES,
        [
            ioremap_all_slots_busy,
            ioremap_second_owner,
            ioremap_unmap_foreign_mapping,
            map_page_already_mapped,
            unmap_page_not_mapped,
            l1_slot_live_pdpt_entry,
        ],
    )
}

fn check_cases<P: Platform>() -> [Case<P>; CHECK_CASES.len()] {
    with_names(
        &CHECK_CASES,
        [
            ioremap_zero_size,
            ioremap_overflow,
            ioremap_larger_than_slot,
            alloc_double_free,
            alloc_exhausted,
            alloc_table_beyond_bitmap,
            |p, _| cmdline(p, "pvops.bogus"),
            |p, _| cmdline(p, "pvops.batch=many"),
            |_, _| memory_map_overlap(),
            |_, _| memory_map_wrap(),
            |_, _| memory_map_empty_region(),
            |_, _| memory_map_too_many_regions(),
        ],
    )
}

fn run_list<P: Platform, const N: usize>(
    cases: [Case<P>; N],
    p: &mut P,
    alloc: &mut FrameAllocator,
    report: &mut dyn FnMut(&CaseResult),
) -> Tally {
    let mut tally = Tally::default();
    for case in cases {
        let r = CaseResult {
            name: case.name,
            expected: Verdict::Pvops(case.expected),
            got: (case.run)(p, alloc),
        };
        tally.count(&r);
        report(&r);
        if r.status() == Status::Failed {
            break;
        }
    }
    tally
}

/// Runs the generic cases ([`GENERIC_CASES`]) on a booted platform (`alloc` is the boot
/// path's allocator; the live root and the layout come from `p`). Reports each; stops at
/// the first failure.
pub fn run_generic<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    report: &mut dyn FnMut(&CaseResult),
) -> Tally {
    run_list(generic_cases::<P>(), p, alloc, report)
}

/// Runs pvops's argument and bookkeeping checks ([`CHECK_CASES`]) on a booted platform,
/// as [`run_generic`] does (host unit tests).
pub fn run_checks<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    report: &mut dyn FnMut(&CaseResult),
) -> Tally {
    run_list(check_cases::<P>(), p, alloc, report)
}

/// The case's verdict, unless a cleanup step failed (a broken case stays broken).
fn after_cleanup(v: Verdict, cleanup: Result<(), Verdict>) -> Verdict {
    match (v, cleanup) {
        (v @ Verdict::Broken { .. }, _) => v,
        (_, Err(b)) => b,
        (v, Ok(())) => v,
    }
}

fn alloc_step(step: &'static str, r: Result<PhysFrame, AllocError>) -> Result<PhysFrame, Verdict> {
    r.map_err(|e| Verdict::broken(step, format_args!("{e}")))
}

/// Runs `f` with a fresh frame (and its machine address), then frees the frame.
fn with_frame<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    f: impl FnOnce(&mut P, &mut FrameAllocator, MachineAddr) -> Verdict,
) -> Verdict {
    let frame = match alloc_step("allocate a frame", alloc.alloc()) {
        Ok(f) => f,
        Err(v) => return v,
    };
    let v = match p.phys_to_machine(frame) {
        Some(m) => f(p, alloc, m.start()),
        None => Verdict::broken("phys_to_machine", format_args!("pfn {frame}")),
    };
    let freed = alloc
        .free(frame)
        .map_err(|e| Verdict::broken("free the frame", format_args!("{e}")));
    after_cleanup(v, freed)
}

fn window_io<P: Platform>(p: &P) -> EarlyIoremap {
    EarlyIoremap::new(p.layout().ioremap_window, TableSource::LiveCr3)
}

/// The verdict of an early_ioremap call expected to fail; a mapping it made anyway is
/// unmapped again.
fn ioremap_verdict<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    io: &mut EarlyIoremap,
    r: Result<IoMapping, IoremapError<P::Error>>,
) -> Verdict {
    match r {
        Err(e) => ioremap_error_verdict(&e),
        Ok(m) => match io.unmap(p, alloc, m) {
            Ok(()) => Verdict::Accepted,
            Err(e) => Verdict::broken("early_iounmap of the mapping", format_args!("{e}")),
        },
    }
}

fn ioremap_zero_size<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_frame(p, alloc, |p, alloc, ma| {
        let mut io = window_io(p);
        let r = io.map(p, alloc, ma, 0);
        ioremap_verdict(p, alloc, &mut io, r)
    })
}

fn ioremap_overflow<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    let mut io = window_io(p);
    let r = io.map(p, alloc, MachineAddr::new(u64::MAX - 0xFFF), 2 * PAGE_SIZE);
    ioremap_verdict(p, alloc, &mut io, r)
}

fn ioremap_larger_than_slot<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_frame(p, alloc, |p, alloc, ma| {
        let mut io = window_io(p);
        // The offset in the first page counts: 0x10 + a whole slot needs one page more.
        let r = io.map(
            p,
            alloc,
            MachineAddr::new(ma.as_u64() + 0x10),
            IOREMAP_MAX_BYTES,
        );
        ioremap_verdict(p, alloc, &mut io, r)
    })
}

fn ioremap_all_slots_busy<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_frame(p, alloc, |p, alloc, ma| {
        let mut io = window_io(p);
        let mut maps: [Option<IoMapping>; IOREMAP_SLOTS] = [const { None }; IOREMAP_SLOTS];
        let mut setup = Ok(());
        for m in maps.iter_mut() {
            match io.map(p, alloc, ma, 64) {
                Ok(x) => *m = Some(x),
                Err(e) => {
                    setup = Err(Verdict::broken(
                        "early_ioremap into a free slot",
                        format_args!("{e}"),
                    ));
                    break;
                }
            }
        }
        let v = match setup {
            Ok(()) => {
                let r = io.map(p, alloc, ma, 64);
                ioremap_verdict(p, alloc, &mut io, r)
            }
            Err(b) => b,
        };
        let mut cleanup = Ok(());
        for m in maps.iter_mut().filter_map(Option::take) {
            if let Err(e) = io.unmap(p, alloc, m) {
                cleanup = Err(Verdict::broken("early_iounmap", format_args!("{e}")));
            }
        }
        after_cleanup(v, cleanup)
    })
}

fn ioremap_second_owner<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_frame(p, alloc, |p, alloc, ma| {
        // One instance holds every slot of the window; a second instance over the same
        // window must not map over them (it used to: both mapped at the window base).
        let mut owner = window_io(p);
        let mut maps: [Option<IoMapping>; IOREMAP_SLOTS] = [const { None }; IOREMAP_SLOTS];
        let mut setup = Ok(());
        for m in maps.iter_mut() {
            match owner.map(p, alloc, ma, 64) {
                Ok(x) => *m = Some(x),
                Err(e) => {
                    setup = Err(Verdict::broken("early_ioremap", format_args!("{e}")));
                    break;
                }
            }
        }
        let v = match setup {
            Ok(()) => {
                let mut second = window_io(p);
                let r = second.map(p, alloc, ma, 64);
                ioremap_verdict(p, alloc, &mut second, r)
            }
            Err(b) => b,
        };
        let mut cleanup = Ok(());
        for m in maps.iter_mut().filter_map(Option::take) {
            if let Err(e) = owner.unmap(p, alloc, m) {
                cleanup = Err(Verdict::broken("early_iounmap", format_args!("{e}")));
            }
        }
        after_cleanup(v, cleanup)
    })
}

fn ioremap_unmap_foreign_mapping<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_frame(p, alloc, |p, alloc, ma| {
        // A mapping handed to an instance that never made it.
        let (mut owner, mut other) = (window_io(p), window_io(p));
        let m = match owner.map(p, alloc, ma, 64) {
            Ok(m) => m,
            Err(e) => return Verdict::broken("early_ioremap", format_args!("{e}")),
        };
        let va = m.addr().page_base();
        let v = match other.unmap(p, alloc, m) {
            Err(e) => ioremap_error_verdict(&e),
            Ok(()) => return Verdict::Accepted,
        };
        // The refused unmap consumed the handle: clear the page with the mapper, then check
        // that the window page is empty again.
        let root = p.read_cr3();
        // SAFETY: the page is the case's own early_ioremap mapping, used by nothing.
        let cleanup = match unsafe { mapper::unmap_page(p, root, va) } {
            Ok((_, flush)) => flush
                .flush(p)
                .map_err(|e| Verdict::broken("flush", format_args!("{e}"))),
            Err(e) => Err(Verdict::broken("unmap the slot", format_args!("{e}"))),
        };
        let cleanup = cleanup.and_then(|()| match mapper::translate(p, root, va) {
            Err(MapError::NotMapped(_)) => Ok(()),
            _ => Err(Verdict::broken(
                "window slot 0 empty again",
                format_args!("still mapped"),
            )),
        });
        after_cleanup(v, cleanup)
    })
}

/// The scratch page the mapper cases use (the boot path's exercise uses page 5).
fn scratch_page<P: Platform>(p: &P, page: u32) -> VirtAddr {
    VirtAddr::new(p.layout().scratch_area.as_u32() + page * PAGE_SIZE as u32)
}

/// Maps a fresh frame at scratch page 7, runs `f`, then unmaps it and retires the L1 table
/// if the mapping created it.
fn with_scratch_mapping<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    f: impl FnOnce(&mut P, &mut FrameAllocator, VirtAddr, MachineFrame) -> Verdict,
) -> Verdict {
    let root = p.read_cr3();
    let va = scratch_page(p, 7);
    match mapper::translate(p, root, va) {
        Err(MapError::NotMapped(_)) => {}
        Ok(_) => return Verdict::broken("scratch page 7 is free", format_args!("{va} is mapped")),
        Err(e) => return Verdict::broken("walk the scratch area", format_args!("{e}")),
    }
    let had_l1 = match l2_entry(p, root, va) {
        Ok(e) => e.1.is_present(),
        Err(v) => return v,
    };
    let frame = match alloc_step("allocate a frame", alloc.alloc()) {
        Ok(f) => f,
        Err(v) => return v,
    };
    let Some(mfn) = p.phys_to_machine(frame) else {
        let _ = alloc.free(frame);
        return Verdict::broken("phys_to_machine", format_args!("pfn {frame}"));
    };
    // SAFETY: scratch page 7 is unused (checked above) and belongs to the boot path's
    // own tests; nothing else relies on it.
    let mapped = unsafe { mapper::map_page(p, alloc, root, va, mfn, KERNEL_RW) };
    let v = match mapped {
        Ok(flush) => match flush.flush(p) {
            Ok(()) => f(p, alloc, va, mfn),
            Err(e) => Verdict::broken("flush the new mapping", format_args!("{e}")),
        },
        Err(e) => Verdict::broken("map_page of a fresh frame", format_args!("{e}")),
    };
    let cleanup = undo_scratch(p, alloc, root, va, had_l1).and_then(|()| {
        alloc
            .free(frame)
            .map_err(|e| Verdict::broken("free the frame", format_args!("{e}")))
    });
    after_cleanup(v, cleanup)
}

/// The L2 table and entry covering `va` in `root`.
fn l2_entry<P: Platform>(
    p: &P,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<(EntrySlot, PageTableEntry), Verdict> {
    let w = pvops_core::walk::walk_down_to(&mapper::Tables(p), root, va, Level::L2)
        .map_err(|e| Verdict::broken("walk the live table", format_args!("{e}")))?;
    if w.level != Level::L2 {
        return Err(Verdict::broken(
            "walk the live table",
            format_args!("no PDPT entry for {va}"),
        ));
    }
    Ok((w.slot, w.entry))
}

/// Unmaps scratch `va` (if mapped) and, unless it existed before, retires its L1 as the
/// boot path's exercise does ([`mapper::retire_table`]).
fn undo_scratch<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    root: PhysFrame,
    va: VirtAddr,
    had_l1: bool,
) -> Result<(), Verdict> {
    if mapper::translate(p, root, va).is_ok() {
        // SAFETY: the case mapped `va` and nothing uses it any more.
        let (_, flush) = unsafe { mapper::unmap_page(p, root, va) }
            .map_err(|e| Verdict::broken("unmap_page", format_args!("{e}")))?;
        flush
            .flush(p)
            .map_err(|e| Verdict::broken("flush", format_args!("{e}")))?;
    }
    if had_l1 {
        return Ok(());
    }
    let (_, e) = l2_entry(p, root, va)?;
    if !e.is_present() {
        return Ok(());
    }
    mapper::retire_table(p, alloc, root, va, Level::L1)
        .map(|_| ())
        .map_err(|e| Verdict::broken("retire the scratch L1", format_args!("{e}")))
}

fn map_page_already_mapped<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_scratch_mapping(p, alloc, |p, alloc, va, mfn| {
        let root = p.read_cr3();
        // SAFETY: `va` is the case's own scratch page, mapped to the same frame; a wrong
        // success changes nothing and the cleanup unmaps it.
        match unsafe { mapper::map_page(p, alloc, root, va, mfn, KERNEL_RW) } {
            Err(e) => map_error_verdict(&e),
            Ok(flush) => {
                flush.ignore();
                Verdict::Accepted
            }
        }
    })
}

fn unmap_page_not_mapped<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    with_scratch_mapping(p, alloc, |p, _, va, _| {
        // The next page: same L1 (so the walk succeeds), empty entry.
        let next = VirtAddr::new(va.as_u32() + PAGE_SIZE as u32);
        let root = p.read_cr3();
        // SAFETY: `next` is an unused scratch page; a wrong success unmaps nothing anyone uses.
        match unsafe { mapper::unmap_page(p, root, next) } {
            Err(e) => map_error_verdict(&e),
            Ok((_, flush)) => match flush.flush(p) {
                Ok(()) => Verdict::Accepted,
                Err(e) => Verdict::broken("flush", format_args!("{e}")),
            },
        }
    })
}

fn l1_slot_live_pdpt_entry<P: Platform>(p: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    let root = p.read_cr3();
    for i in PdptIndex::all() {
        match mapper::read_entry(p, root, i) {
            Err(e) => return Verdict::broken("read the live root", format_args!("{e}")),
            Ok(e) if !e.is_present() => {
                let va = VirtAddr::new((i.get() as u32) << 30);
                return match mapper::l1_slot(p, alloc, root, va, true) {
                    Err(e) => map_error_verdict(&e),
                    Ok(_) => Verdict::Accepted,
                };
            }
            Ok(_) => {}
        }
    }
    Verdict::Skipped(
        "every PDPT entry of the live root is present (kernel roots link all four L2s)",
    )
}

fn alloc_double_free<P: Platform>(_: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    let f = match alloc_step("allocate a frame", alloc.alloc()) {
        Ok(f) => f,
        Err(v) => return v,
    };
    if let Err(e) = alloc.free(f) {
        return Verdict::broken("first free", format_args!("{e}"));
    }
    match alloc.free(f) {
        Err(e) => Verdict::Pvops(alloc_error_name(&e)),
        Ok(()) => {
            // The frame is on the free list twice: take one copy back.
            let _ = alloc.alloc();
            Verdict::Accepted
        }
    }
}

fn alloc_exhausted<P: Platform>(_: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    // Nothing is reachable below pfn 0; the limit is restored at once.
    let limit = alloc.limit();
    alloc.set_limit(PhysFrame::new(0));
    let r = alloc.alloc();
    alloc.set_limit(limit);
    match r {
        Err(e) => Verdict::Pvops(alloc_error_name(&e)),
        Ok(f) => after_cleanup(
            Verdict::Accepted,
            alloc
                .free(f)
                .map_err(|e| Verdict::broken("free", format_args!("{e}"))),
        ),
    }
}

fn alloc_table_beyond_bitmap<P: Platform>(_: &mut P, alloc: &mut FrameAllocator) -> Verdict {
    let f = PhysFrame::new(TABLE_BITMAP_FRAMES as u32);
    match alloc.mark_table(f, true) {
        Err(e) => Verdict::Pvops(alloc_error_name(&e)),
        Ok(()) => {
            let _ = alloc.mark_table(f, false);
            Verdict::Accepted
        }
    }
}

/// Parses `line` as a kernel does before the boot path, with the live backend taking its
/// own switches: a refused word changes nothing.
fn cmdline<P: Platform>(p: &mut P, line: &str) -> Verdict {
    match BootOptions::parse(line, p) {
        Err(_) => Verdict::Pvops("OptionError"),
        Ok(_) => Verdict::Accepted,
    }
}

fn memory_map_verdict(r: Result<(), MemoryMapError>) -> Verdict {
    match r {
        Err(e) => Verdict::Pvops(memory_map_error_name(&e)),
        Ok(()) => Verdict::Accepted,
    }
}

const MIB: u64 = 1024 * 1024;

fn memory_map_overlap() -> Verdict {
    let mut m = MemoryMap::new();
    if let Err(e) = m.add(PhysAddr::new(MIB), MIB, RegionKind::Usable) {
        return Verdict::broken("add a region", format_args!("{e}"));
    }
    memory_map_verdict(m.add(PhysAddr::new(MIB + MIB / 2), 0x1000, RegionKind::Reserved))
}

fn memory_map_wrap() -> Verdict {
    let mut m = MemoryMap::new();
    memory_map_verdict(m.add(PhysAddr::new(u64::MAX - 0xFFF), 0x2000, RegionKind::Usable))
}

fn memory_map_empty_region() -> Verdict {
    let mut m = MemoryMap::new();
    memory_map_verdict(m.add(PhysAddr::new(0xA_0000), 0, RegionKind::Reserved))
}

fn memory_map_too_many_regions() -> Verdict {
    let mut m = MemoryMap::new();
    for i in 0..MAX_REGIONS as u64 {
        if let Err(e) = m.add(PhysAddr::new(i * 2 * MIB), MIB, RegionKind::Usable) {
            return Verdict::broken("add a region", format_args!("{e}"));
        }
    }
    memory_map_verdict(m.add(PhysAddr::new(1 << 40), MIB, RegionKind::Usable))
}

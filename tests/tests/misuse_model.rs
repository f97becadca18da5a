//! The misuse stage on the host: the same cases the guest runs on real Xen (backend-xen's
//! `misuse` module, through the raw `Hypervisor` layer) and pvops's generic ones, run against
//! `XenMmu<XenModel>` after a model boot. The model must give every case the errno real Xen
//! 4.17.5 gave a domU (the table below is what the real domU printed).

use backend_xen::misuse::{self, cases, mode_of, run_cases, Env, Expect, Mode};
use backend_xen::{start_info_frame, XenMmu, START_INFO_PROBE};
use pvops_core::addr::{FrameRange, PhysFrame};
use pvops_core::boot::{BootInfo, IoremapProbe};
use pvops_core::mem::{FrameAllocator, MemoryMap};
use pvops_core::misuse::{
    run_all, run_generic, BackendMisuse, CaseResult, MisuseTally, Status, Verdict, GENERIC_CASES,
};
use pvops_core::options::BootOptions;
use pvops_core::MmuOps;
use pvops_tests::xen_model::{boot_mib, XenBootRun, XenModel};

/// What real Xen 4.17.5 answered each case, as `cargo xtask demo xen` (domU) and
/// `cargo xtask demo xen-dom0` printed it (`PVOPS-MISUSE: rejected <case>: xen <ERRNO>`;
/// `-` = accepted).
const REAL_XEN: [(&str, &str, &str); 23] = [
    ("writable_map_of_pagetable", "EBUSY", "EBUSY"),
    ("unpin_unpinned", "EINVAL", "EINVAL"),
    ("pin_pinned", "EINVAL", "EINVAL"),
    ("pin_l1_mapped_writable", "EINVAL", "EINVAL"),
    ("pin_l3_slot3_absent", "EINVAL", "EINVAL"),
    ("pin_l3_slot3_l2_shared", "EINVAL", "EINVAL"),
    ("new_baseptr_slot3_absent", "EINVAL", "EINVAL"),
    ("live_l3_slot3_update", "EINVAL", "EINVAL"),
    ("xen_private_l2_slot", "EPERM", "EPERM"),
    ("pin_slot3_l2", "EINVAL", "EINVAL"),
    ("l3_entry_pcd", "EINVAL", "EINVAL"),
    ("l2_entry_pse", "EINVAL", "EINVAL"),
    ("l1_xen_frame", "EBUSY", "EBUSY"),
    ("l1_mmio_denied", "EPERM", "EPERM"),
    ("l1_low_io_frame", "EPERM", "-"),
    ("update_va_mapping_pt_writable", "EBUSY", "EBUSY"),
    ("update_va_mapping_no_l1", "EINVAL", "EINVAL"),
    ("multicall_update_va_mapping", "EBUSY", "EBUSY"),
    ("multicall_mmu_update", "EBUSY", "EBUSY"),
    ("mmu_update_in_xen_frame", "EINVAL", "EINVAL"),
    ("unpin_xen_frame", "EINVAL", "EINVAL"),
    ("mmu_update_bad_subcommand", "ENOSYS", "ENOSYS"),
    ("mmuext_unknown_command", "ENOSYS", "ENOSYS"),
];

fn booted(mib: u32) -> XenBootRun {
    let mut run = boot_mib(mib, BootOptions::default());
    run.expect_pass();
    run
}

/// The backend and the boot path's allocator of a booted model domain.
fn parts(run: &mut XenBootRun) -> (&mut XenMmu<XenModel>, &mut FrameAllocator) {
    (run.mmu.as_mut().expect("booted"), &mut run.state.alloc)
}

fn expect_name(e: Expect) -> &'static str {
    match e {
        Expect::Refused(errno) => errno.name(),
        Expect::Accepted => "-",
    }
}

/// Model invariants after cases ran: no reference-count or snapshot problem, no write to a
/// frame without a writable mapping, the kernel's table still live.
fn assert_clean(run: &mut XenBootRun, cr3: PhysFrame, what: &str) {
    let log = run.full_log();
    let mmu = run.mmu.as_mut().expect("booted");
    assert_eq!(mmu.read_cr3(), cr3, "{what}: the kernel's table stays live");
    let model = mmu.hypervisor();
    assert_eq!(model.cr3_pfn(), Some(cr3), "{what}: Xen's cr3");
    assert_eq!(model.audit(), Vec::<String>::new(), "{what}\n{log}");
    assert_eq!(model.violations(), &[] as &[String], "{what}");
}

fn collect(results: &mut Vec<CaseResult>) -> impl FnMut(&CaseResult) + '_ {
    move |r| results.push(*r)
}

#[test]
fn expectations_are_what_real_xen_answered() {
    let list = cases::<XenModel>();
    assert_eq!(list.len(), REAL_XEN.len());
    for (case, (name, domu, dom0)) in list.iter().zip(REAL_XEN) {
        assert_eq!(case.name, name);
        assert_eq!(expect_name(case.domu), domu, "{name} (domU)");
        assert_eq!(expect_name(case.dom0), dom0, "{name} (dom0)");
    }
    let refusals = list.iter().filter(|c| c.domu != Expect::Accepted).count();
    assert!(refusals >= 10, "at least ten of Xen's own refusals");
}

#[test]
fn the_model_agrees_with_real_xen_on_every_case() {
    let mut run = booted(16);
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let free = run.state.alloc.available();
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    let tally = run_cases(mmu, alloc, Mode::DomU, &mut collect(&mut results));
    assert_eq!(results.len(), REAL_XEN.len(), "{results:#?}");
    for (r, (name, domu, _)) in results.iter().zip(REAL_XEN) {
        assert_eq!(r.name, name);
        assert_eq!(
            r.got,
            Verdict::Xen(domu),
            "{name}: the model vs real Xen: {r}"
        );
        assert_eq!(r.status(), Status::Rejected, "{r}");
    }
    assert_eq!(
        (tally.rejected, tally.failed, tally.skipped),
        (REAL_XEN.len() as u32, 0, 0)
    );
    assert!(tally.raw_hypercalls >= REAL_XEN.len() as u64);
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
    assert_clean(&mut run, cr3, "all Xen cases");
}

#[test]
fn each_xen_case_on_a_fresh_domain() {
    for (i, (name, domu, _)) in REAL_XEN.iter().enumerate() {
        let mut run = booted(16);
        let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
        let free = run.state.alloc.available();
        let before = run.model().counters();
        let failures_before = run.model().failures().len();
        let (mmu, alloc) = parts(&mut run);
        let case = &cases::<XenModel>()[i];
        let mut env = Env::new(mmu, alloc);
        let got = match (case.run)(&mut env) {
            Ok(ret) => misuse::verdict_of(ret),
            Err(v) => v,
        };
        assert_eq!(got, Verdict::Xen(domu), "{name}");
        let m = run.model();
        assert!(
            m.counters().since(&before).total > 0,
            "{name}: no hypercall"
        );
        assert!(
            m.failures()[failures_before..]
                .iter()
                .any(|f| f.errno.name() == *domu),
            "{name}: the model recorded no {domu}: {:?}",
            m.failures()
        );
        assert_eq!(run.state.alloc.available(), free, "{name} leaked frames");
        assert_clean(&mut run, cr3, name);
    }
}

#[test]
fn generic_cases_on_the_xen_model() {
    let mut run = booted(16);
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let free = run.state.alloc.available();
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    let tally = run_generic(mmu, alloc, &mut collect(&mut results));
    check_generic(&results, &tally);
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
    assert_clean(&mut run, cr3, "generic cases");
}

fn check_generic(results: &[CaseResult], tally: &MisuseTally) {
    assert_eq!(results.len(), GENERIC_CASES.len(), "{results:#?}");
    for (r, (name, error)) in results.iter().zip(GENERIC_CASES) {
        assert_eq!(r.name, name);
        if name == "l1_slot_live_pdpt_entry" {
            // Kernel roots link all four PDPT entries: unreachable, reported as skipped.
            assert_eq!(r.status(), Status::Skipped, "{r}");
        } else {
            assert_eq!(r.got, Verdict::Pvops(error), "{r}");
            assert_eq!(r.status(), Status::Rejected, "{r}");
        }
    }
    assert_eq!(
        (tally.rejected, tally.skipped, tally.failed),
        (GENERIC_CASES.len() as u32 - 1, 1, 0)
    );
    assert!(tally.rejected >= 10, "at least ten of pvops's own refusals");
}

#[test]
fn generic_cases_on_the_simulated_native_machine() {
    let (mut sim, mut run) = pvops_tests::boot_default(64);
    run.expect_pass();
    let free = run.state.alloc.available();
    let cr3 = sim.read_cr3();
    let mut results = Vec::new();
    let tally = run_generic(&mut sim, &mut run.state.alloc, &mut collect(&mut results));
    check_generic(&results, &tally);
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
    assert_eq!(sim.read_cr3(), cr3);
}

/// A [`BootInfo`] naming start_info as its probe, as backend-xen's `boot_info` does.
fn info_with_start_info(si: PhysFrame) -> BootInfo<'static> {
    BootInfo {
        memory: MemoryMap::new(),
        cmdline: "",
        first_free: PhysFrame(0),
        bootstrap_reach: PhysFrame(0),
        bootstrap_tables: FrameRange::EMPTY,
        kernel_image: FrameRange::EMPTY,
        table_pool: FrameRange::EMPTY,
        probe: Some(IoremapProbe {
            addr: si.start(),
            len: 64,
            what: START_INFO_PROBE,
        }),
        reserved: pvops_core::mem::Reservations::new(),
        modules: &[],
    }
}

#[test]
fn the_guests_entry_point_runs_every_case_twice_on_one_domain() {
    // `run_all` is what guest-demo's stage `misuse` calls: the generic cases, then the
    // backend's hook (the mode read from start_info's flags).
    let mut run = booted(16);
    let si = run.layout.start_info;
    let info = info_with_start_info(si);
    assert_eq!(start_info_frame(&info), Some(si));
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let free = run.state.alloc.available();
    for round in 0..2 {
        let mut results = Vec::new();
        let (mmu, alloc) = parts(&mut run);
        assert_eq!(mode_of(mmu, si), Some(Mode::DomU));
        let tally = run_all(mmu, alloc, &info, &mut collect(&mut results));
        let failed: Vec<_> = results
            .iter()
            .filter(|r| r.status() == Status::Failed)
            .collect();
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
        assert_eq!(results.len(), GENERIC_CASES.len() + REAL_XEN.len());
        assert_eq!(
            (tally.rejected, tally.skipped, tally.allowed),
            ((GENERIC_CASES.len() - 1 + REAL_XEN.len()) as u32, 1, 0),
            "round {round}"
        );
        assert_eq!(run.state.alloc.available(), free, "round {round}: leak");
        assert_clean(&mut run, cr3, "run_all");
    }
}

#[test]
fn the_hook_fails_without_start_info() {
    let mut run = booted(16);
    let mut info = info_with_start_info(run.layout.start_info);
    info.probe = None;
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    let tally = mmu.backend_misuse(alloc, &info, &mut collect(&mut results));
    assert_eq!(tally.failed, 1);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status(), Status::Failed);
    // Not start_info (the image's first frame): no mode either.
    let (mmu, _) = parts(&mut run);
    assert_eq!(mode_of(mmu, PhysFrame(0)), None);
}

#[test]
fn a_case_that_is_not_refused_fails_and_stops_the_run() {
    // In dom0 mode the model (a domU) refuses l1_low_io_frame, which dom0 may do: the
    // result is a failure and the cases after it do not run.
    let mut run = booted(16);
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    let tally = run_cases(mmu, alloc, Mode::Dom0, &mut collect(&mut results));
    let last = results.last().expect("cases ran");
    assert_eq!(last.name, "l1_low_io_frame");
    assert_eq!(last.status(), Status::Failed);
    assert_eq!(last.expected, Verdict::Accepted);
    assert_eq!(last.got, Verdict::Xen("EPERM"));
    assert_eq!(
        last.to_string(),
        "l1_low_io_frame: expected accepted (no error), got xen EPERM"
    );
    assert_eq!(tally.failed, 1);
    assert!(results.len() < REAL_XEN.len());
}

#[test]
fn result_lines() {
    let r = CaseResult {
        name: "pin_pinned",
        expected: Verdict::Xen("EINVAL"),
        got: Verdict::Xen("EINVAL"),
    };
    assert_eq!(r.to_string(), "rejected pin_pinned: xen EINVAL");
    let r = CaseResult {
        name: "ioremap_zero_size",
        expected: Verdict::Pvops("IoremapError::ZeroSize"),
        got: Verdict::Accepted,
    };
    assert_eq!(r.status(), Status::Failed);
    assert_eq!(
        r.to_string(),
        "ioremap_zero_size: expected pvops IoremapError::ZeroSize, got accepted (no error)"
    );
}

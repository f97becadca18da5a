//! The misuse stage on the host: the same cases the guest runs on real Xen
//! (`pvops-xen-conformance`, through the raw `Hypervisor` layer) and pvops's generic ones
//! (`pvops-selftest`), run against `XenMmu<XenModel>` after a model boot. The model must give every case the errno real Xen
//! 4.17.5 gave a domU (the table below is what the real domU printed).

use backend_xen::XenMmu;
use pvops_core::addr::PhysFrame;
use pvops_core::mem::FrameAllocator;
use pvops_core::options::BootOptions;
use pvops_core::MmuOps;
use pvops_selftest::misuse::{run_generic, GENERIC_CASES};
use pvops_selftest::{CaseResult, Status, Tally, Verdict};
use pvops_tests::xen_model::{boot_mib, ModelAccess, XenBootRun, XenModel};
use pvops_xen_conformance::{cases, mode_of, run_cases, verdict_of, Expect, Mode};

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
    let model = mmu.model();
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
    let tally = run_cases(
        &mut run.conformance_env(),
        Mode::DomU,
        &mut collect(&mut results),
    );
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
        let case = &cases::<XenModel>()[i];
        let got = match (case.run)(&mut run.conformance_env()) {
            Ok(ret) => verdict_of(ret),
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

fn check_generic(results: &[CaseResult], tally: &Tally) {
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

#[test]
fn the_guests_misuse_stage_runs_every_case_twice_on_one_domain() {
    // What guest-demo's stage `misuse` does: the generic cases, then (all passed) Xen's, in
    // the mode start_info's flags give.
    let mut run = booted(16);
    let si = run.mmu.as_ref().expect("booted").start_info();
    assert_eq!(
        si, run.layout.start_info,
        "XenMmu knows where start_info is"
    );
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let free = run.state.alloc.available();
    for round in 0..2 {
        let mut results = Vec::new();
        let (mmu, alloc) = parts(&mut run);
        let mode = mode_of(mmu.hypervisor(), si);
        assert_eq!(mode, Some(Mode::DomU));
        let mut tally = run_generic(mmu, alloc, &mut collect(&mut results));
        assert_eq!(tally.failed, 0, "round {round}: {results:#?}");
        tally.merge(&run_cases(
            &mut run.conformance_env(),
            Mode::DomU,
            &mut collect(&mut results),
        ));
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
        assert_clean(&mut run, cr3, "generic and Xen cases");
    }
}

#[test]
fn the_mode_needs_start_info() {
    let mut run = booted(16);
    let (mmu, _) = parts(&mut run);
    // The image's first frame is not start_info: no mode.
    assert_eq!(mode_of(mmu.hypervisor(), PhysFrame::new(0)), None);
    // Beyond the domain's memory: no mode either (and no read).
    assert_eq!(mode_of(mmu.hypervisor(), PhysFrame::new(1 << 20)), None);
}

#[test]
fn a_case_that_is_not_refused_fails_and_stops_the_run() {
    // In dom0 mode the model (a domU) refuses l1_low_io_frame, which dom0 may do: the
    // result is a failure and the cases after it do not run.
    let mut run = booted(16);
    let mut results = Vec::new();
    let tally = run_cases(
        &mut run.conformance_env(),
        Mode::Dom0,
        &mut collect(&mut results),
    );
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

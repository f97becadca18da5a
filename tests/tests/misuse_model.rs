//! The misuse stage on the host: the same cases the guest runs on real Xen
//! (`pvops-xen-conformance`, through the raw `Hypervisor` layer) and pvops's generic ones
//! (`pvops-selftest`), run against `XenMmu<XenModel>` after a model boot and on the
//! simulated native machine. Every result must be the line real boots printed: the fixture
//! `tests/fixtures/misuse-real.txt`, recorded by `cargo xtask test` from guest-demo's
//! `PVOPS-MISUSE` lines (bare QEMU, Xen dom0, a Xen PV domU, a Xen PVH domU) and refreshed by
//! `cargo xtask misuse-fixture`. pvops's argument and bookkeeping checks, which refuse before
//! any backend operation, are unit tests here (`run_checks`), not misuse cases.

use backend_xen::XenMmu;
use pvops_core::addr::PhysFrame;
use pvops_core::mem::FrameAllocator;
use pvops_core::options::BootOptions;
use pvops_core::MmuOps;
use pvops_selftest::misuse::{run_checks, run_generic, CHECK_CASES, GENERIC_CASES};
use pvops_selftest::{CaseResult, Status, Tally, Verdict};
use pvops_tests::misuse_fixture::{self, Recorded};
use pvops_tests::xen_model::{boot_mib, ModelAccess, XenBootRun, XenModel};
use pvops_xen_conformance::{cases, mode_of, run_cases, verdict_of, Mode};

/// The recorded lines of `run`.
fn recorded(run: &str) -> Vec<Recorded> {
    let all = misuse_fixture::load();
    let lines: Vec<Recorded> = misuse_fixture::run(&all, run)
        .into_iter()
        .cloned()
        .collect();
    assert!(!lines.is_empty(), "the fixture has no `{run}` run");
    lines
}

/// Each result must be the line the real run printed for its case, in the same order.
#[track_caller]
fn assert_as_recorded(results: &[CaseResult], run: &str) {
    let want = recorded(run);
    let got: Vec<String> = results.iter().map(|r| r.to_string()).collect();
    let want: Vec<String> = want.iter().map(|r| r.text.clone()).collect();
    assert_eq!(got, want, "the host vs the real `{run}` boot");
}

/// The recorded line of `case` in `run`.
fn recorded_case(run: &str, case: &str) -> String {
    recorded(run)
        .into_iter()
        .find(|r| r.case() == case)
        .unwrap_or_else(|| panic!("the fixture's `{run}` run has no line for {case}"))
        .text
}

fn booted(mib: u32) -> XenBootRun {
    let mut run = boot_mib(mib, BootOptions::default());
    run.expect_pass();
    run
}

/// The backend and the boot path's allocator of a booted model domain.
fn parts(run: &mut XenBootRun) -> (&mut XenMmu<XenModel>, &mut FrameAllocator) {
    (run.mmu.as_mut().expect("booted"), &mut run.state.alloc)
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
fn the_fixture_holds_every_case_of_every_run() {
    let generic: Vec<&str> = GENERIC_CASES.iter().map(|(n, _)| *n).collect();
    let xen: Vec<&str> = cases::<XenModel>().iter().map(|c| c.name).collect();
    for (run, want) in [
        ("native", generic.clone()),
        ("xen-pvh", generic.clone()),
        ("xen-domU", [generic.clone(), xen.clone()].concat()),
        ("xen-dom0", [generic.clone(), xen.clone()].concat()),
    ] {
        let lines = recorded(run);
        let got: Vec<&str> = lines.iter().map(|r| r.case()).collect();
        assert_eq!(got, want, "the `{run}` run's cases");
    }
    assert!(xen.len() >= 10, "at least ten of Xen's own refusals");
}

#[test]
fn the_case_lists_expect_what_real_xen_answered() {
    // The expectations in the case lists (the spec the guest checks itself against) are
    // what the real boots printed.
    for case in cases::<XenModel>() {
        for (run, mode) in [("xen-domU", Mode::DomU), ("xen-dom0", Mode::Dom0)] {
            let e = case.expect(mode).verdict();
            let line = CaseResult {
                name: case.name,
                expected: e,
                got: e,
            }
            .to_string();
            assert_eq!(line, recorded_case(run, case.name), "{run}");
        }
    }
    for (name, error) in GENERIC_CASES {
        for run in ["native", "xen-pvh", "xen-domU", "xen-dom0"] {
            let real = recorded_case(run, name);
            if real.starts_with("skipped ") {
                continue;
            }
            let line = CaseResult {
                name,
                expected: Verdict::Pvops(error),
                got: Verdict::Pvops(error),
            }
            .to_string();
            assert_eq!(line, real, "{run}");
        }
    }
}

#[test]
fn the_model_agrees_with_real_xen_on_every_case() {
    let mut run = booted(16);
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let free = run.state.alloc.available();
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    let generic = run_generic(mmu, alloc, &mut collect(&mut results));
    assert_eq!(generic.failed, 0, "{results:#?}");
    let tally = run_cases(
        &mut run.conformance_env(),
        Mode::DomU,
        &mut collect(&mut results),
    );
    assert_as_recorded(&results, "xen-domU");
    assert_eq!(tally.failed, 0);
    assert!(tally.raw_hypercalls >= tally.rejected as u64);
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
    assert_clean(&mut run, cr3, "all Xen cases");
}

#[test]
fn the_privileged_model_agrees_with_real_dom0_on_every_case() {
    let mut run = booted(16);
    run.model().set_privileged(true);
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    run_generic(mmu, alloc, &mut collect(&mut results));
    let tally = run_cases(
        &mut run.conformance_env(),
        Mode::Dom0,
        &mut collect(&mut results),
    );
    assert_as_recorded(&results, "xen-dom0");
    assert_eq!((tally.failed, tally.allowed), (0, 1), "{results:#?}");
    assert_clean(&mut run, cr3, "all Xen cases as dom0");
}

#[test]
fn each_xen_case_on_a_fresh_domain() {
    for case in cases::<XenModel>() {
        let name = case.name;
        let real = recorded_case("xen-domU", name);
        let mut run = booted(16);
        let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
        let free = run.state.alloc.available();
        let before = run.model().counters();
        let failures_before = run.model().failures().len();
        let got = match (case.run)(&mut run.conformance_env()) {
            Ok(ret) => verdict_of(ret),
            Err(v) => v,
        };
        let line = CaseResult {
            name,
            expected: case.domu.verdict(),
            got,
        }
        .to_string();
        assert_eq!(line, real, "{name}: the model vs real Xen");
        let Verdict::Xen(errno) = got else {
            panic!("{name}: not one of Xen's refusals: {got}")
        };
        let m = run.model();
        assert!(
            m.counters().since(&before).total > 0,
            "{name}: no hypercall"
        );
        assert!(
            m.failures()[failures_before..]
                .iter()
                .any(|f| f.errno.name() == errno),
            "{name}: the model recorded no {errno}: {:?}",
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
    assert_eq!(
        tally.cases(),
        tally.rejected,
        "a skipped case is not counted"
    );
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
    // The same lines as bare QEMU and a PVH domU (native MMU under Xen) printed.
    assert_as_recorded(&results, "native");
    assert_as_recorded(&results, "xen-pvh");
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
    assert_eq!(sim.read_cr3(), cr3);
}

fn check_checks(results: &[CaseResult], tally: &Tally) {
    assert_eq!(results.len(), CHECK_CASES.len(), "{results:#?}");
    for (r, (name, error)) in results.iter().zip(CHECK_CASES) {
        assert_eq!((r.name, r.got), (name, Verdict::Pvops(error)), "{r}");
    }
    assert_eq!(tally.rejected as usize, CHECK_CASES.len());
}

#[test]
fn pvops_checks_refuse_bad_arguments_on_the_simulated_machine() {
    let (mut sim, mut run) = pvops_tests::boot_default(64);
    run.expect_pass();
    let free = run.state.alloc.available();
    let mut results = Vec::new();
    let tally = run_checks(&mut sim, &mut run.state.alloc, &mut collect(&mut results));
    check_checks(&results, &tally);
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
}

#[test]
fn pvops_checks_refuse_bad_arguments_on_the_xen_model() {
    let mut run = booted(16);
    let cr3 = run.mmu.as_ref().expect("booted").read_cr3();
    let free = run.state.alloc.available();
    let before = run.model().counters();
    let mut results = Vec::new();
    let (mmu, alloc) = parts(&mut run);
    let tally = run_checks(mmu, alloc, &mut collect(&mut results));
    check_checks(&results, &tally);
    // What makes them checks, not misuse cases: nothing reaches Xen.
    assert_eq!(run.model().counters().since(&before).total, 0);
    assert_eq!(run.state.alloc.available(), free, "frames leaked");
    assert_clean(&mut run, cr3, "checks");
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
        let xen = cases::<XenModel>().len();
        assert_eq!(results.len(), GENERIC_CASES.len() + xen);
        assert_eq!(
            (tally.rejected, tally.skipped, tally.allowed),
            ((GENERIC_CASES.len() - 1 + xen) as u32, 1, 0),
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
    assert!(results.len() < cases::<XenModel>().len());
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

//! Host-side simulated machines for pvops tests.
//!
//! [`sim::SimMachine`] is a simulated 32-bit PAE machine implementing
//! [`pvops_core::MmuOps`] and [`pvops_core::Platform`]; [`xen_model::XenModel`] is a model
//! of Xen's page-table rules under the real `XenMmu`. [`run_boot`] runs the one generic boot
//! path ([`pvops_core::boot::boot`]) on the simulated machine, then the exercise stage of
//! `pvops-selftest` as guest-demo does ([`boot_and_exercise`]), and keeps the log.

pub mod difftest;
pub mod directmap_cost;
pub mod frames;
pub mod misuse_fixture;
pub mod runtime_map_cost;
pub mod sim;
pub mod xen_model;

pub use sim::{
    Access, BootstrapStyle, P2m, PtWrite, SimConfig, SimError, SimEvent, SimMachine, Translation,
    WriteCounts,
};

use backend_native::counters::NoHypercalls;
use core::fmt::Write;
use pvops_core::boot::{boot, measure, BootError, BootInfo, BootReport, BootState, Stage};
use pvops_core::options::BootOptions;
use pvops_core::Platform;
use pvops_selftest::exercise;

/// The stage names a boot plus the exercise prints, in order (README: "Guest output"), written
/// out here rather than taken from the core so that a renamed or reordered stage fails.
pub const DEMO_STAGES: [&str; 7] = [
    "banner",
    "early_ioremap",
    "pagetable_setup_start",
    "build_direct_map",
    "write_cr3",
    "pagetable_setup_done",
    "exercise",
];

/// The outcome of one boot on a [`SimMachine`].
pub struct BootRun {
    /// What `boot()` returned.
    pub result: Result<BootReport<NoHypercalls>, BootError<SimError>>,
    /// Everything the boot path wrote to its log.
    pub log: String,
    /// The boot path's state afterwards (its frame allocator, to keep allocating in tests).
    pub state: Box<BootState>,
}

impl BootRun {
    /// The report of a successful boot; panics with the error and the whole boot log
    /// otherwise.
    #[track_caller]
    pub fn expect_pass(&self) -> BootReport<NoHypercalls> {
        match &self.result {
            Ok(r) => *r,
            Err(e) => panic!(
                "boot failed: {e}\n--- boot log ---\n{}--- end of log ---",
                self.log
            ),
        }
    }

    /// The error of a failed boot; panics with the report and the boot log if it passed.
    #[track_caller]
    pub fn expect_fail(&self) -> &BootError<SimError> {
        match &self.result {
            Ok(r) => panic!(
                "boot passed but should have failed: {r:?}\n--- boot log ---\n{}--- end of log ---",
                self.log
            ),
            Err(e) => e,
        }
    }

    /// Panics with `msg` and the boot log unless `cond` holds.
    #[track_caller]
    pub fn check(&self, cond: bool, msg: impl std::fmt::Display) {
        if !cond {
            panic!("{msg}\n--- boot log ---\n{}--- end of log ---", self.log);
        }
    }
}

/// `assert!` that prints the boot log of a [`BootRun`] on failure:
/// `assert_run!(run, cond, "format", args..)`.
#[macro_export]
macro_rules! assert_run {
    ($run:expr, $cond:expr $(,)?) => {
        $run.check($cond, concat!("assertion failed: ", stringify!($cond)))
    };
    ($run:expr, $cond:expr, $($fmt:tt)+) => {
        $run.check($cond, format_args!($($fmt)+))
    };
}

/// `assert_eq!` that prints the boot log of a [`BootRun`] on failure.
#[macro_export]
macro_rules! assert_run_eq {
    ($run:expr, $left:expr, $right:expr $(,)?) => {
        $crate::assert_run_eq!($run, $left, $right, "{} == {}", stringify!($left), stringify!($right))
    };
    ($run:expr, $left:expr, $right:expr, $($fmt:tt)+) => {{
        let (l, r) = (&$left, &$right);
        $run.check(
            l == r,
            format_args!("assertion `left == right` failed: {}\n  left: {:?}\n right: {:?}", format_args!($($fmt)+), l, r),
        )
    }};
}

/// The boot path, then the `exercise` stage of pvops-selftest (reuse of the bootstrap
/// frames, a scratch mapping, early_ioremap on the kernel's table), as guest-demo runs them.
pub fn boot_and_exercise<P: Platform>(
    p: &mut P,
    info: &BootInfo<'_>,
    opts: BootOptions,
    state: &mut BootState,
    log: &mut dyn Write,
) -> Result<BootReport<P::Counters>, BootError<P::Error>> {
    let report = boot(p, info, opts, state, log)?;
    let stage = Stage::Kernel(&exercise::STAGE);
    let (done, figures) = measure(p, stage, |p| {
        exercise::run(p, &mut state.alloc, info, report.reused, log)
    });
    done.map_err(|kind| BootError { stage, kind })?;
    let _ = writeln!(log, "stage {} ok {figures}", stage.name());
    Ok(report)
}

/// Runs the generic boot path and the exercise on `sim` with the sim's boot info and `opts`.
pub fn run_boot(sim: &mut SimMachine, opts: BootOptions) -> BootRun {
    let info = sim.boot_info();
    let mut state = Box::new(BootState::new());
    let mut log = String::new();
    let result = boot_and_exercise(sim, &info, opts, &mut state, &mut log);
    sim.stop_watching();
    BootRun { result, log, state }
}

/// Builds a default machine of `ram_mib` MiB and boots it with default options.
pub fn boot_default(ram_mib: u32) -> (SimMachine, BootRun) {
    let mut sim = SimConfig::new(ram_mib).build();
    let run = run_boot(&mut sim, BootOptions::default());
    (sim, run)
}

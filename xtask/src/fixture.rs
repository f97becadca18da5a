//! The misuse fixture: the `PVOPS-MISUSE` lines real boots of guest-demo printed (bare
//! QEMU, Xen dom0, a Xen PV domU, a Xen PVH domU), checked in as
//! `tests/fixtures/misuse-real.txt`. `cargo test` compares the Xen model and the simulated
//! machine with it (`tests/tests/misuse_model.rs`); `cargo xtask test` records it from its
//! own boots and `cargo xtask misuse-fixture` refreshes it alone.

use crate::util::{self, step, HarnessError, Res};
use xtask::harness::{self, Exit, Guest, Mode};

/// The fixture, relative to the checkout.
pub const PATH: &str = "tests/fixtures/misuse-real.txt";

/// The runs the fixture holds, in order: its run name, the mode and the memory (MiB).
pub const RUNS: [(&str, Mode, u32); 4] = [
    ("native", Mode::Native, 128),
    ("xen-dom0", Mode::XenDom0, 64),
    ("xen-domU", Mode::Xen, 64),
    ("xen-pvh", Mode::XenPvh, 64),
];

/// The fixture's lines of one run: `<run>: <the text after "PVOPS-MISUSE: ">`.
pub fn lines_of(run: &str, log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let at = l.find("PVOPS-MISUSE: ")?;
            Some(format!(
                "{run}: {}",
                l[at + "PVOPS-MISUSE: ".len()..].trim_end()
            ))
        })
        .collect()
}

/// The fixture's text from every run's log (each run in [`RUNS`] once).
pub fn render(logs: &[(String, String)]) -> Result<String, String> {
    let mut out = String::from(
        "# PVOPS-MISUSE lines of real boots of guest-demo (Xen 4.17.5 under QEMU TCG), one run\n\
         # per block: `<run>: <line>`. Written by `cargo xtask test` and `cargo xtask\n\
         # misuse-fixture`; `cargo test` (tests/tests/misuse_model.rs) compares the Xen model and\n\
         # the simulated machine with it. Do not edit by hand.\n",
    );
    for (run, _, _) in RUNS {
        let (_, log) = logs
            .iter()
            .find(|(r, _)| r == run)
            .ok_or_else(|| format!("no passing `{run}` boot to record"))?;
        let lines = lines_of(run, log);
        if lines.is_empty() {
            return Err(format!("the `{run}` boot printed no PVOPS-MISUSE line"));
        }
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Writes the fixture if its text changed; returns whether it did.
pub fn write(text: &str) -> Res<bool> {
    let path = util::root().join(PATH);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    std::fs::write(&path, text).map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
    Ok(true)
}

/// `cargo test` of the model against the fixture.
pub fn check_model() -> Res<()> {
    util::run(
        util::cmd("cargo")
            .args([
                "test",
                "-p",
                "pvops-tests",
                "--test",
                "misuse_model",
                "--quiet",
            ])
            .current_dir(util::root()),
    )
}

/// Records the fixture from `logs` (run name, log of a PASS); when it changed, runs the
/// model's comparison again. Returns a line for the test summary.
pub fn record(logs: &[(String, String)]) -> Result<String, String> {
    let text = render(logs)?;
    let n = text.lines().filter(|l| !l.starts_with('#')).count();
    let changed = write(&text).map_err(|e| e.to_string())?;
    if !changed {
        return Ok(format!("{PATH}: {n} lines, as checked in"));
    }
    check_model()
        .map_err(|e| format!("{PATH} changed ({n} lines) and the model disagrees: {e}"))?;
    Ok(format!(
        "{PATH}: REWRITTEN from these boots ({n} lines; the model agrees): commit it"
    ))
}

/// `cargo xtask misuse-fixture`: boots guest-demo in every run of [`RUNS`] (the domUs in
/// one dom0 boot) and rewrites the fixture.
pub fn cmd_refresh(elf: &std::path::Path) -> Res<()> {
    let mut logs = Vec::new();
    let guest = |mem: u32| Guest {
        memory_mib: Some(mem),
        ..Guest::new(elf)
    };
    let mut take = |run: &str, b: Result<harness::Boot, String>| -> Res<()> {
        let b = b.map_err(|e| HarnessError(format!("{run}: {e}")))?;
        if b.exit != Exit::Pass {
            return Err(HarnessError(format!(
                "{run}: the guest did not pass ({:?}):\n{}",
                b.exit, b.log
            )));
        }
        logs.push((run.to_string(), b.log));
        Ok(())
    };
    for (run, mode, mem) in RUNS {
        if matches!(mode, Mode::Native | Mode::XenDom0) {
            let b = step(&format!("boot {run} ({mem} MiB)"), || {
                harness::boot(mode, &[guest(mem)], false)
            })?;
            take(run, b.into_iter().next().expect("one boot"))?;
        }
    }
    let domus: Vec<(Mode, Guest)> = RUNS
        .iter()
        .filter(|(_, m, _)| matches!(m, Mode::Xen | Mode::XenPvh))
        .map(|(_, m, mem)| (*m, guest(*mem)))
        .collect();
    let boots = step("boot the Xen domUs (one dom0 boot)", || {
        harness::boot_domus(&domus)
    })?;
    let names = RUNS
        .iter()
        .filter(|(_, m, _)| matches!(m, Mode::Xen | Mode::XenPvh));
    for ((run, _, _), b) in names.zip(boots) {
        take(run, b)?;
    }
    let text = render(&logs).map_err(HarnessError)?;
    let changed = write(&text)?;
    eprintln!(
        "    {PATH}: {} ({} lines)",
        if changed { "rewritten" } else { "unchanged" },
        text.lines().filter(|l| !l.starts_with('#')).count()
    );
    step("cargo test: the model against the fixture", check_model)
}

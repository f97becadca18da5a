//! `cargo xtask difftest`: the differential test against the real Xen. guest-demo runs
//! seeded random sequences of page-table operations through the raw hypercall layer as
//! Xen's dom0 or as a PV domU (`demo.difftest=`) and prints a compact record per operation;
//! `difftest-replay` (a binary of `pvops-tests`) replays the same seeds on the model of
//! Xen's rules and compares record by record.

use crate::util::{self, step, HarnessError, Res};
use std::path::{Path, PathBuf};
use xtask::harness::{self, Guest, Mode};

/// Seeds run when none is given.
pub const DEFAULT_SEEDS: [u64; 3] = [1, 2, 3];
/// Operations per seed by default.
pub const DEFAULT_OPS: u32 = 2000;
/// Memory of the guest (and of the model domain it is replayed on), MiB.
pub const MEMORY_MIB: u32 = 64;

/// What to run.
pub struct Args {
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Operations per seed.
    pub ops: u32,
    /// `Mode::XenDom0` (the fast path) or `Mode::Xen` (a PV domU).
    pub on: Mode,
    /// One `DTV` line per record as well (slow).
    pub verbose: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            seeds: DEFAULT_SEEDS.to_vec(),
            ops: DEFAULT_OPS,
            on: Mode::XenDom0,
            verbose: false,
        }
    }
}

/// Parses `[--seed S]... [--ops N] [--on xen|xen-dom0] [--verbose]`.
pub fn parse(args: &[String]) -> Res<Args> {
    let mut a = Args::default();
    let mut seeds = Vec::new();
    let mut it = args.iter();
    while let Some(w) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| HarnessError(format!("{w} needs {what}")))
        };
        match w.as_str() {
            "--seed" => {
                let v = value("a number")?;
                seeds.push(
                    v.parse()
                        .map_err(|_| HarnessError(format!("--seed: `{v}` is not a number")))?,
                );
            }
            "--ops" => {
                let v = value("a number")?;
                a.ops = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| HarnessError(format!("--ops: `{v}` is not a count")))?;
            }
            "--on" => {
                a.on = match value("xen or xen-dom0")?.as_str() {
                    "xen" => Mode::Xen,
                    "xen-dom0" => Mode::XenDom0,
                    other => {
                        return Err(HarnessError(format!("--on: `{other}` (xen or xen-dom0)")))
                    }
                }
            }
            "--verbose" => a.verbose = true,
            other => {
                return Err(HarnessError(format!(
                    "difftest: unknown argument `{other}`"
                )))
            }
        }
    }
    if !seeds.is_empty() {
        a.seeds = seeds;
    }
    if a.seeds.len() > 8 {
        return Err(HarnessError("difftest: at most 8 seeds per run".into()));
    }
    Ok(a)
}

/// The guest's command line for `a`.
pub fn cmdline(a: &Args) -> String {
    let list: Vec<String> = a.seeds.iter().map(|s| format!("{s}:{}", a.ops)).collect();
    let mut c = format!("demo.difftest={}", list.join(","));
    if a.verbose {
        c.push_str(" demo.difftest_verbose");
    }
    c
}

/// The guest for `a` (guest-demo with [`cmdline`], [`MEMORY_MIB`]).
pub fn guest(elf: &Path, a: &Args) -> Guest {
    Guest {
        memory_mib: Some(MEMORY_MIB),
        cmdline: cmdline(a),
        ..Guest::new(elf)
    }
}

/// The outcome of a comparison.
pub struct Outcome {
    /// The summary line, `difftest: <seeds> seeds, <ops> operations, <d> divergences`.
    pub summary: String,
    /// Every seed agreed and every run finished cleanly.
    pub agreed: bool,
}

/// Saves a guest log under `target/difftest/` and replays it on the model (the
/// `difftest-replay` binary), echoing its report.
pub fn compare(name: &str, log: &str) -> Res<Outcome> {
    let dir = util::root().join("target/difftest");
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError(format!("{}: {e}", dir.display())))?;
    let path: PathBuf = dir.join(format!("{name}.log"));
    std::fs::write(&path, log).map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
    let out = util::cmd("cargo")
        .args([
            "run",
            "--quiet",
            "-p",
            "pvops-tests",
            "--bin",
            "difftest-replay",
            "--",
        ])
        .arg(&path)
        .args(["--mib", &MEMORY_MIB.to_string()])
        .current_dir(util::root())
        .output()
        .map_err(|e| HarnessError(format!("cannot run difftest-replay: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for l in stdout.lines() {
        println!("{l}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    for l in stderr.lines() {
        eprintln!("{l}");
    }
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("difftest: "))
        .map(str::to_string);
    match (out.status.code(), summary) {
        (Some(0), Some(s)) => Ok(Outcome {
            summary: s,
            agreed: true,
        }),
        (Some(1), Some(s)) => Ok(Outcome {
            summary: s,
            agreed: false,
        }),
        (code, _) => Err(HarnessError(format!(
            "difftest-replay on {} failed (exit {code:?})",
            path.display()
        ))),
    }
}

/// `cargo xtask difftest`: exit 0 no divergence, 1 a divergence, 2 harness error.
pub fn cmd_difftest(elf: &Path, a: &Args) -> Res<bool> {
    let g = guest(elf, a);
    let what = format!(
        "guest-demo as {} ({} MiB): {} seed(s) x {} operations",
        if a.on == Mode::XenDom0 {
            "Xen's dom0"
        } else {
            "a Xen PV domU"
        },
        MEMORY_MIB,
        a.seeds.len(),
        a.ops
    );
    let b = step(&what, || {
        let boots = if a.on == Mode::Xen {
            harness::boot_domus(&[(Mode::Xen, g)])?
        } else {
            harness::boot(a.on, &[g], false)?
        };
        boots
            .into_iter()
            .next()
            .expect("one boot")
            .map_err(HarnessError)
    })?;
    eprintln!(
        "    {}: {} after {:.1}s, log {} bytes",
        a.on.name(),
        b.ending,
        b.seconds,
        b.log.len()
    );
    let o = step("replay on the model of Xen's rules and compare", || {
        compare(a.on.name(), &b.log)
    })?;
    if b.exit != harness::Exit::Pass {
        return Err(HarnessError(format!(
            "the guest did not pass ({:?}); log in target/difftest/{}.log",
            b.exit,
            a.on.name()
        )));
    }
    println!("{}", o.summary);
    Ok(o.agreed)
}

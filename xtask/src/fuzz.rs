//! `cargo xtask fuzz`: libFuzzer (through cargo-fuzz) on every parser of loader-provided boot
//! input, seeded from the checked-in corpus in `fuzz/seeds/`; `--capture` refreshes those seeds
//! from real boots (QEMU's multiboot loader, a Xen dom0 and a Xen domU).
//!
//! The targets live in `fuzz/` (its own cargo workspace; formats in `fuzz/src/lib.rs`). They
//! are built without a sanitizer: the parsers are safe Rust, and cargo-fuzz's default build
//! keeps debug assertions and overflow checks on, so an arithmetic overflow is a crash. What
//! a run discovers goes to `target/fuzz/corpus/<target>/` (kept between runs); a crashing input
//! to `target/fuzz/artifacts/<target>/`.

use crate::Verdict;
use std::path::PathBuf;
use std::process::Command;
use xtask::harness::{self, Exit, Guest, Mode};
use xtask::kernel;
use xtask::util::{cmd, ensure_apt, output, root, run, step, HarnessError, Res};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`), in the order they run.
pub const TARGETS: [&str; 5] = [
    "multiboot",
    "start_info",
    "hvm_start_info",
    "memory_map",
    "cmdline",
];
/// The cargo-fuzz release `cargo install` fetches when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// `--seconds` default: seconds of fuzzing per target.
pub const DEFAULT_SECONDS: u64 = 60;
/// The command lines the capture boots pass (the seeds then hold every `pvops.*` switch the
/// backend knows): the core's own on the native MMU (bare metal, PVH), plus the Xen PV
/// backend's.
const CAPTURE_CMDLINE_NATIVE: &str = "pvops.early_ioremap=cr3";
const CAPTURE_CMDLINE_XEN: &str = "pvops.early_ioremap=cr3 pvops.skip_unpin=0 pvops.batch=64";

/// What one target's run did.
pub struct TargetRun {
    /// The target's name.
    pub name: &'static str,
    /// Inputs executed.
    pub runs: u64,
    /// Seconds libFuzzer reports.
    pub seconds: u64,
    /// Inputs in the corpus at the end (libFuzzer's `corp:`).
    pub corpus: u64,
    /// Checked-in seeds it started from.
    pub seeds: usize,
    /// The crashing input, with the panic message, when it crashed.
    pub crash: Option<String>,
}

/// `cargo xtask fuzz [--seconds N] [--capture]`.
pub fn cmd_fuzz(args: &[String]) -> Res<Verdict> {
    let mut seconds = DEFAULT_SECONDS;
    let mut capture = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s| *s > 0)
                    .ok_or_else(|| HarnessError("--seconds needs a positive number".into()))?;
            }
            "--capture" => capture = true,
            other => return Err(HarnessError(format!("fuzz: unknown argument `{other}`"))),
        }
    }
    if capture {
        step(
            "capture seeds from real boots (QEMU, Xen dom0, Xen domU)",
            capture_seeds,
        )?;
    }
    let runs = fuzz(seconds)?;
    Ok(if runs.iter().any(|r| r.crash.is_some()) {
        Verdict::Fail
    } else {
        Verdict::Pass
    })
}

/// Installs the tools, builds the targets and runs each for `seconds`; prints one line per
/// target and a total. A crash is reported in its [`TargetRun`], not as an `Err`.
pub fn fuzz(seconds: u64) -> Res<Vec<TargetRun>> {
    step("fuzz tools (g++ for libFuzzer, cargo-fuzz)", ensure_tools)?;
    step("fuzz targets build (nightly, libFuzzer)", build)?;
    let mut runs = Vec::new();
    for name in TARGETS {
        runs.push(step(&format!("fuzz {name} ({seconds} s)"), || {
            run_target(name, seconds)
        })?);
    }
    for r in &runs {
        println!(
            "fuzz {}: {} runs in {} s, corpus {} inputs ({} seeds), crashes {}",
            r.name,
            r.runs,
            r.seconds,
            r.corpus,
            r.seeds,
            r.crash.is_some() as u8
        );
        if let Some(c) = &r.crash {
            println!("    {c}");
        }
    }
    let crashes = runs.iter().filter(|r| r.crash.is_some()).count();
    println!(
        "fuzz: {} targets, {} runs, {crashes} crashes",
        runs.len(),
        runs.iter().map(|r| r.runs).sum::<u64>()
    );
    Ok(runs)
}

fn ensure_tools() -> Res<()> {
    // libfuzzer-sys compiles libFuzzer's C++ sources.
    ensure_apt("g++", &["g++"])?;
    let have_fuzz = cmd("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_fuzz {
        eprintln!("    installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, ~1.5 minutes)");
        run(cmd("cargo").args([
            "install",
            "--locked",
            "--quiet",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

fn build() -> Res<()> {
    run(cmd("cargo")
        .args([
            "+nightly",
            "fuzz",
            "build",
            "--sanitizer",
            "none",
            "--target-dir",
        ])
        .arg(root().join("target/fuzz"))
        .current_dir(root()))
}

fn host_triple() -> Res<String> {
    let v = output(cmd("rustc").args(["+nightly", "-vV"]))?;
    v.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| HarnessError("rustc -vV printed no host triple".into()))
}

fn run_target(name: &'static str, seconds: u64) -> Res<TargetRun> {
    let root = root();
    let bin = root
        .join("target/fuzz")
        .join(host_triple()?)
        .join("release")
        .join(name);
    let corpus = root.join("target/fuzz/corpus").join(name);
    let artifacts = root.join("target/fuzz/artifacts").join(name);
    let seeds_dir = root.join("fuzz/seeds").join(name);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let seeds = std::fs::read_dir(&seeds_dir).map_or(0, |d| d.count());
    let mut c = Command::new(&bin);
    // New inputs go to the first directory; the seeds are only read.
    c.arg(&corpus);
    if seeds > 0 {
        c.arg(&seeds_dir);
    }
    c.arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    let out = c
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let runs_line = log.lines().rev().find_map(|l| {
        let rest = l.strip_prefix("Done ")?;
        let (runs, rest) = rest.split_once(" runs in ")?;
        let secs = rest.split_whitespace().next()?;
        Some((runs.parse::<u64>().ok()?, secs.parse::<u64>().ok()?))
    });
    let corpus_size = log
        .lines()
        .rev()
        .find_map(|l| {
            let after = l.split_once("corp: ")?.1;
            after.split('/').next()?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let tail = || {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    };
    if out.status.success() {
        let (runs, seconds) = runs_line
            .ok_or_else(|| HarnessError(format!("fuzz {name}: no `Done` line:\n{}", tail())))?;
        return Ok(TargetRun {
            name,
            runs,
            seconds,
            corpus: corpus_size,
            seeds,
            crash: None,
        });
    }
    let artifact = log
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()));
    let Some(artifact) = artifact else {
        return Err(HarnessError(format!(
            "fuzz {name}: libFuzzer failed ({}) without a crash input:\n{}",
            out.status,
            tail()
        )));
    };
    let why: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .take(2)
        .collect();
    let runs = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    eprintln!("{}", tail());
    Ok(TargetRun {
        name,
        runs,
        seconds: 0,
        corpus: corpus_size,
        seeds,
        crash: Some(format!(
            "crash: {} (input {artifact}; replay: {} {artifact})",
            why.join(" "),
            bin.display()
        )),
    })
}

/// One `PVOPS-BOOTINPUT:` line: its `key=value` fields and the bytes of its `hex=`.
type BootInputLine<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>);

/// The `PVOPS-BOOTINPUT: <what> key=value ... hex=<bytes>` lines of a boot log.
fn boot_input_lines<'a>(log: &'a str, what: &str) -> Vec<BootInputLine<'a>> {
    let tag = format!("PVOPS-BOOTINPUT: {what} ");
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find(&tag)? + tag.len()..];
            let mut fields = Vec::new();
            let mut bytes = Vec::new();
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=')?;
                if k == "hex" {
                    bytes = (0..v.len() / 2)
                        .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16))
                        .collect::<Result<_, _>>()
                        .ok()?;
                } else {
                    fields.push((k, v));
                }
            }
            Some((fields, bytes))
        })
        .collect()
}

fn field(fields: &[(&str, &str)], key: &str) -> Res<u32> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| HarnessError(format!("boot input line without a hex `{key}=`")))
}

/// Longest segment a seed keeps.
const SEGMENT_MAX: usize = 4096;

/// A seed in the segments format (`multiboot`, `hvm_start_info`): the address the loader
/// handed over (field `entry`), then the parser's reads, adjacent chunks merged into segments.
fn segments_seed(log: &str, what: &str, entry: &str) -> Res<Vec<u8>> {
    let lines = boot_input_lines(log, what);
    let first = lines
        .first()
        .ok_or_else(|| HarnessError(format!("no PVOPS-BOOTINPUT: {what} lines in the log")))?;
    let mbi = field(&first.0, entry)?;
    let mut segments: Vec<(u32, Vec<u8>)> = Vec::new();
    for (fields, bytes) in &lines {
        let addr = field(fields, "addr")?;
        match segments.last_mut() {
            Some((base, seg)) if *base as usize + seg.len() == addr as usize => {
                seg.extend_from_slice(bytes)
            }
            _ => segments.push((addr, bytes.clone())),
        }
    }
    let mut seed = mbi.to_le_bytes().to_vec();
    for (addr, mut bytes) in segments {
        // The command-line scan reads 64 KiB; the line ends long before, and the parsers take
        // a short read where memory ends. A small seed keeps libFuzzer's inputs small.
        bytes.truncate(SEGMENT_MAX);
        let len = bytes.len() as u16;
        seed.extend_from_slice(&addr.to_le_bytes());
        seed.extend_from_slice(&len.to_le_bytes());
        seed.extend_from_slice(&bytes);
    }
    Ok(seed)
}

/// The `start_info` seed: `si_va esp image_end`, then start_info's bytes.
fn start_info_seed(log: &str) -> Res<Vec<u8>> {
    let lines = boot_input_lines(log, "start_info");
    let first = lines
        .first()
        .ok_or_else(|| HarnessError("no PVOPS-BOOTINPUT: start_info lines in the log".into()))?;
    let mut seed = Vec::new();
    for key in ["si_va", "esp", "image_end"] {
        seed.extend_from_slice(&field(&first.0, key)?.to_le_bytes());
    }
    let mut body = Vec::new();
    for (fields, bytes) in &lines {
        if field(fields, "off")? as usize != body.len() {
            return Err(HarnessError("start_info chunks out of order".into()));
        }
        body.extend_from_slice(bytes);
    }
    if body.len() != 1112 {
        return Err(HarnessError(format!(
            "start_info of {} bytes, expected 1112",
            body.len()
        )));
    }
    seed.extend_from_slice(&body);
    Ok(seed)
}

/// The `memory_map` seed from the guest's `pvops: mem <start>-<end> <kind>` lines (the map as
/// the boot parsed it), with `first_free` 0x100 (1 MiB, where the kernel image starts).
fn memory_map_seed(log: &str) -> Res<Vec<u8>> {
    let mut seed = 0x100u32.to_le_bytes().to_vec();
    for l in log.lines() {
        let Some(rest) = l.split_once("pvops: mem ").map(|(_, r)| r) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(range), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let num = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
        let (Some(s), Some(e)) = (num(s), num(e)) else {
            continue;
        };
        seed.extend_from_slice(&s.to_le_bytes());
        seed.extend_from_slice(&(e - s).to_le_bytes());
        seed.push(u8::from(kind == "usable"));
    }
    if seed.len() == 4 {
        return Err(HarnessError("no `pvops: mem` lines in the boot log".into()));
    }
    Ok(seed)
}

/// The `cmdline` seed: the command line as the guest printed it (`pvops: cmdline: "..."`).
fn cmdline_seed(log: &str) -> Res<Vec<u8>> {
    log.lines()
        .find_map(|l| {
            let rest = l.split_once("pvops: cmdline: \"")?.1;
            Some(rest.strip_suffix('"')?.as_bytes().to_vec())
        })
        .ok_or_else(|| HarnessError("no `pvops: cmdline:` line in the boot log".into()))
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) -> Res<()> {
    let dir = root().join("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    eprintln!("    wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}

/// Boots guest-demo built with `dump-boot-input` on QEMU (multiboot), as Xen dom0, as a Xen PV
/// domU and as a Xen PVH domU, and writes what each loader handed over to `fuzz/seeds/`.
fn capture_seeds() -> Res<()> {
    let built = kernel::build_with(
        "guest-demo",
        "guest-demo",
        &["dump-boot-input"],
        "guest-demo-capture",
    )?;
    // QEMU puts the kernel's file name first on the multiboot command line: use a neutral one.
    let dir = std::env::temp_dir().join("pvops-capture");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let elf: PathBuf = dir.join("guest-demo.elf");
    std::fs::copy(&built, &elf).map_err(|e| format!("copy to {}: {e}", elf.display()))?;

    let guest = Guest {
        cmdline: CAPTURE_CMDLINE_NATIVE.into(),
        ..Guest::new(&elf)
    };
    let xen_guest = Guest {
        cmdline: CAPTURE_CMDLINE_XEN.into(),
        ..Guest::new(&elf)
    };
    let native = booted(
        harness::boot(Mode::Native, std::slice::from_ref(&guest), false)?,
        "native",
    )?;
    write_seed(
        "multiboot",
        "qemu-128m",
        &segments_seed(&native, "multiboot", "mbi")?,
    )?;
    write_seed("memory_map", "qemu-128m", &memory_map_seed(&native)?)?;
    write_seed("cmdline", "qemu", &cmdline_seed(&native)?)?;

    let dom0 = booted(
        harness::boot(Mode::XenDom0, std::slice::from_ref(&xen_guest), false)?,
        "xen dom0",
    )?;
    write_seed("start_info", "xen-dom0-64m", &start_info_seed(&dom0)?)?;
    write_seed("memory_map", "xen-dom0-64m", &memory_map_seed(&dom0)?)?;

    let mut domus = harness::boot_domus(&[(Mode::Xen, xen_guest), (Mode::XenPvh, guest)])?;
    if domus.len() != 2 {
        return Err(HarnessError("xen: a domU outcome is missing".into()));
    }
    let pvh = booted(vec![domus.remove(1)], "xen PVH domU")?;
    let pv = booted(domus, "xen PV domU")?;
    write_seed("start_info", "xen-domu-64m", &start_info_seed(&pv)?)?;
    write_seed("memory_map", "xen-domu-64m", &memory_map_seed(&pv)?)?;
    write_seed("cmdline", "xen-domu", &cmdline_seed(&pv)?)?;
    write_seed(
        "hvm_start_info",
        "xen-pvh-64m",
        &segments_seed(&pvh, "hvm_start_info", "start_info")?,
    )?;
    write_seed("memory_map", "xen-pvh-64m", &memory_map_seed(&pvh)?)?;
    Ok(())
}

/// The log of the one boot in `boots`, which must have PASSed.
fn booted(boots: Vec<Result<harness::Boot, String>>, what: &str) -> Res<String> {
    let boot = boots
        .into_iter()
        .next()
        .ok_or_else(|| HarnessError(format!("capture: no {what} boot")))?
        .map_err(|e| HarnessError(format!("capture: {what}: {e}")))?;
    match boot.exit {
        Exit::Pass => {
            expect_pass(&boot.log, what)?;
            Ok(boot.log)
        }
        Exit::Fail(why) => Err(HarnessError(format!(
            "capture: the {what} boot failed: {why}"
        ))),
    }
}

fn expect_pass(log: &str, what: &str) -> Res<()> {
    if log.lines().any(|l| l.contains("PVOPS-DEMO: PASS")) {
        Ok(())
    } else {
        let lines: Vec<&str> = log.lines().collect();
        Err(HarnessError(format!(
            "capture: the {what} boot did not PASS:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )))
    }
}

//! xtask: the project's commands (`cargo xtask build | demo | test`).
//!
//! Exit status contract: 0 when every guest PASSed, 1 when a guest FAILed, 2 on a harness
//! error (build, timeout, tool failure), with a message saying which.

mod bench;
mod fuzz;
mod kernel;
mod miri;
mod native;
mod util;
mod xen;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use util::{step, HarnessError, Res};

const USAGE: &str = "\
cargo xtask <command> [options]      (cargo xtask <command> --help for details)

Commands:
  build    Build guest-demo (every backend linked) to target/guest-demo.elf.
  demo     Boot guest-demo on bare QEMU, then as a Xen PV and a PVH domU; print the logs.
  test     fmt, clippy, rustdoc, host tests, Miri, and real boots on QEMU and Xen.
  bench    Benches, the codegen check and real boots; writes target/pvops-bench.json.
  miri     The raw-memory unit tests under Miri (installs the nightly miri component).
  fuzz     libFuzzer on the parsers of boot input (multiboot, start_info, memory map, cmdline).

Everything a command needs is installed on first use: the nightly rust-src component
(the kernel is built with -Zbuild-std), Debian packages (qemu-system-x86, the Xen build
dependencies), and a Xen 4.17 hypervisor with 32-bit PV support built from Debian's
source package plus a dom0 initramfs (first Xen run: ~2-3 minutes, then cached in
target/xen).

Exit status: 0 every guest PASSed, 1 a guest FAILed, 2 harness error (build, timeout,
tool failure), with a message saying which.";

const HELP_BUILD: &str = "\
cargo xtask build

Builds guest-demo in release mode for the i686 soft-float target (nightly, -Zbuild-std)
with every backend linked, and copies the ELF to target/guest-demo.elf. The same image
boots through multiboot1 (bare metal) and as a 32-bit PAE Xen PV guest.
Installs: the nightly rust-src component if missing. First run: ~30 s; then ~1 s.";

const HELP_DEMO: &str = "\
cargo xtask demo [native|xen|xen-pvh|xen-dom0|all] [--memory MIB] [--cmdline \"OPTS\"]

Builds guest-demo and boots it, printing its serial (native) or console (Xen) log:
  native     qemu-system-i386 -kernel (multiboot1), isa-debug-exit for the result
  xen        Xen 4.17 (PV32) under QEMU -> Linux dom0 -> xl create guest-demo as a PV domU
  xen-pvh    the same, as a PVH domU (type = \"pvh\": PHYS32_ENTRY, native MMU, Xen platform)
  xen-dom0   guest-demo itself as Xen's dom0 (about a second; a test fast path)
  all        native, then xen and xen-pvh in one dom0 boot (the default)
--memory MIB      native: QEMU -m (default 128); xen, xen-pvh: domU memory (default 64);
                  xen-dom0: dom0 memory (default 64)
--cmdline \"OPTS\"  appended to the guest's command line, e.g.
                  pvops.early_ioremap=swapper  (walk the static table: the 2008 bug)
                  pvops.skip_unpin             (keep pt_base pinned: the other 2008 bug)
                  pvops.batch=N                (Xen: N page-table updates per hypercall)
Installs: rust-src, qemu-system-x86; for Xen the build dependencies, Xen's source package
and the dom0 packages (first Xen run ~2-3 minutes; cached in target/xen; then ~15 s).
Exit status: 0 every guest PASSed, 1 a guest FAILed, 2 harness error.";

const HELP_TEST: &str = "\
cargo xtask test

Runs, printing each step and its time: toolchain and package setup, cargo fmt --check,
clippy without warnings (host workspace and the i686 kernel), rustdoc without warnings,
the host tests (simulated PAE machine, model of Xen's rules, property tests, fault
injection), Miri on the raw-memory tests, the codegen check of the native set_pte, and
real boots: bare QEMU (32/128/512/2048 MiB and the swapper regression), Xen dom0 fast
path, and Xen domUs (16/64/512/1024 MiB and both 2008 regressions) in one dom0 boot.
Ends with `boots: N passed, M failed`. Installs what it needs (as `demo`). First run on a
fresh machine: ~6-8 minutes (most of it building Xen); warm: ~1-2 minutes.
Exit status: 0 all passed, 2 otherwise.";

const HELP_BENCH: &str = "\
cargo xtask bench

Runs the criterion benches (native set_pte through the framework vs raw PAE stores on
host memory; Xen direct maps of 1024/65536/262144 PTEs on the model, batched, in batches
of 32 and one update per hypercall), the codegen check, the model's hypercall counts,
and real boots (native; Xen domU at 512 MiB batched and with pvops.batch=1 in one dom0
boot). Prints one table and writes target/pvops-bench.json (numbers; see the README).
Installs what it needs (as `demo`). Takes ~4 minutes (plus the first Xen build).";

const HELP_FUZZ: &str = "\
cargo xtask fuzz [--seconds N] [--capture]

Fuzzes every parser of loader-provided boot input with libFuzzer (cargo-fuzz), each target
for N seconds (default 60; N is per target, not in total): multiboot (info, memory map,
command line, then the frame allocator on the result), start_info (validation, and that what
it accepts lies inside the domain), hvm_start_info (PVH: info, memory map, command line,
modules; no boot structure left usable), memory_map (the map, its boot-data reservations and
the allocator), cmdline (the pvops.* options). Starts from the checked-in seeds in fuzz/seeds/<target>/ and keeps what it
finds in target/fuzz/corpus/<target>/; a crashing input goes to target/fuzz/artifacts/.
Prints per target `fuzz <target>: <runs> runs in <s> s, corpus <n> inputs (<m> seeds),
crashes <0|1>` and `fuzz: <targets> targets, <runs> runs, <crashes> crashes`.
--capture  first rebuilds guest-demo with the dump-boot-input feature, boots it on QEMU,
           as Xen dom0, as a Xen PV domU and as a Xen PVH domU, and rewrites fuzz/seeds/
           from what each loader handed over (PVOPS-BOOTINPUT lines).
Installs: g++ (apt-get, for libFuzzer) and cargo-fuzz (cargo install, ~1.5 minutes) if
missing; first build of the targets ~1.5 minutes, then seconds.
Exit status: 0 no crash, 1 a target crashed, 2 harness error.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 1 && args[1..].iter().any(|a| a == "--help" || a == "-h") {
        let help = match args[0].as_str() {
            "build" => HELP_BUILD,
            "demo" => HELP_DEMO,
            "test" => HELP_TEST,
            "bench" => HELP_BENCH,
            "fuzz" => HELP_FUZZ,
            _ => USAGE,
        };
        println!("{help}");
        return ExitCode::SUCCESS;
    }
    let result = match args.first().map(String::as_str) {
        Some("build") => cmd_build().map(|_| Verdict::Pass),
        Some("demo") => cmd_demo(&args[1..]),
        Some("test") => cmd_test(),
        Some("bench") => bench::bench().map(|_| Verdict::Pass),
        Some("miri") => miri::miri().map(|_| Verdict::Pass),
        Some("fuzz") => fuzz::cmd_fuzz(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(HarnessError(format!(
            "unknown command `{other}`\n\n{USAGE}"
        ))),
    };
    match result {
        Ok(Verdict::Pass) => ExitCode::SUCCESS,
        Ok(Verdict::Fail) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xtask: harness error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The outcome of guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
}

const TAG: &str = "PVOPS-DEMO";

/// The guest's result line, found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GuestLine {
    Pass(String),
    Fail(String),
}

/// The guest's result line for `backend` on `platform`:
/// `<tag>: PASS|FAIL backend=<backend> platform=<platform> ...`.
fn find_result(log: &str, tag: &str, backend: &str, platform: &str) -> Option<GuestLine> {
    let pass = format!("{tag}: PASS backend={backend} platform={platform} ");
    let fail = format!("{tag}: FAIL backend={backend} platform={platform} ");
    log.lines().find_map(|l| {
        if let Some(i) = l.find(&pass) {
            Some(GuestLine::Pass(l[i..].to_string()))
        } else {
            l.find(&fail).map(|i| GuestLine::Fail(l[i..].to_string()))
        }
    })
}

fn cmd_build() -> Res<PathBuf> {
    step("toolchains (nightly rust-src)", util::ensure_toolchains)?;
    let elf = step("build guest-demo (release, i686)", || {
        kernel::build("guest-demo", "guest-demo")
    })?;
    eprintln!("    kernel: {}", elf.display());
    Ok(elf)
}

struct DemoArgs {
    which: String,
    memory: Option<u32>,
    cmdline: String,
}

fn parse_demo(args: &[String]) -> Res<DemoArgs> {
    let mut d = DemoArgs {
        which: "all".into(),
        memory: None,
        cmdline: String::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "native" | "xen" | "xen-pvh" | "xen-dom0" | "all" => d.which = a.clone(),
            "--memory" => {
                let v = it
                    .next()
                    .ok_or_else(|| HarnessError("--memory needs a value in MiB".into()))?;
                d.memory = Some(v.parse().ok().filter(|m| *m > 0).ok_or_else(|| {
                    HarnessError(format!("--memory: `{v}` is not a size in MiB"))
                })?);
            }
            "--cmdline" => {
                d.cmdline = it
                    .next()
                    .ok_or_else(|| HarnessError("--cmdline needs a value".into()))?
                    .clone();
            }
            other => {
                return Err(HarnessError(format!(
                    "demo: unknown argument `{other}`\n\n{USAGE}"
                )))
            }
        }
    }
    Ok(d)
}

fn cmd_demo(args: &[String]) -> Res<Verdict> {
    let d = parse_demo(args)?;
    let elf = cmd_build()?;
    let mut verdicts = Vec::new();
    if d.which == "native" || d.which == "all" {
        verdicts.push(demo_native(&elf, d.memory.unwrap_or(128), &d.cmdline));
    }
    // The Xen domUs of one demo share one dom0 boot.
    let kinds: Vec<xen::GuestKind> = match d.which.as_str() {
        "xen" => vec![xen::GuestKind::Pv],
        "xen-pvh" => vec![xen::GuestKind::Pvh],
        "all" => vec![xen::GuestKind::Pv, xen::GuestKind::Pvh],
        _ => vec![],
    };
    if !kinds.is_empty() {
        verdicts.extend(demo_xen(&elf, d.memory.unwrap_or(64), &d.cmdline, &kinds));
    }
    if d.which == "xen-dom0" {
        verdicts.push(demo_xen_dom0(&elf, d.memory.unwrap_or(64), &d.cmdline));
    }
    // A harness error outranks a guest FAIL; a FAIL outranks PASS.
    let mut overall = Ok(Verdict::Pass);
    for v in verdicts {
        match v {
            Err(e) => {
                eprintln!("xtask: harness error: {e}");
                overall = Err(HarnessError(
                    "at least one run had a harness error (see above)".into(),
                ));
            }
            Ok(Verdict::Fail) if overall.is_ok() => overall = Ok(Verdict::Fail),
            Ok(_) => {}
        }
    }
    overall
}

/// Maps a log (+ the backend's own end signal) to a verdict: the guest line decides, and
/// a missing or contradicted line is a harness error.
fn judge(log: &str, backend: &str, platform: &str, exit_ok: Option<bool>) -> Res<Verdict> {
    match (find_result(log, TAG, backend, platform), exit_ok) {
        (Some(GuestLine::Pass(_)), None | Some(true)) => Ok(Verdict::Pass),
        (Some(GuestLine::Fail(_)), None | Some(false)) => Ok(Verdict::Fail),
        (Some(line), Some(ok)) => Err(HarnessError(format!(
            "{backend}: guest printed `{line:?}` but its exit said {}",
            if ok { "PASS" } else { "FAIL" }
        ))),
        (None, _) => Err(HarnessError(format!(
            "{platform}: the guest printed no `{TAG}: PASS|FAIL backend={backend} platform={platform}` line"
        ))),
    }
}

fn native_cmdline(extra: &str) -> String {
    extra.trim().to_string()
}

fn demo_native(elf: &Path, memory: u32, cmdline: &str) -> Res<Verdict> {
    step("qemu-system-x86 present", native::ensure_qemu)?;
    eprintln!("==> native: qemu-system-i386 -m {memory} (multiboot)");
    let run = native::boot(
        elf,
        memory,
        &native_cmdline(cmdline),
        true,
        Duration::from_secs(60),
    )?;
    let exit_ok = match run.status {
        Some(33) => Some(true),
        Some(35) => Some(false),
        other => {
            return Err(HarnessError(format!(
                "native: qemu exited with {other:?}, not through isa-debug-exit"
            )))
        }
    };
    eprintln!(
        "    native: qemu exit status {:?} in {:.2}s",
        run.status, run.seconds
    );
    judge(&run.log, "native", "bare", exit_ok)
}

fn xen_cache() -> PathBuf {
    util::root().join("target/xen")
}

/// What a domU of `kind` must print: `backend=<backend> platform=<platform>`.
fn domu_expect(kind: xen::GuestKind) -> (&'static str, &'static str) {
    match kind {
        xen::GuestKind::Pv => ("xen", "xen-pv"),
        xen::GuestKind::Pvh => ("native", "xen-pvh"),
    }
}

/// Boots guest-demo as one domU per kind (PV: `type = "pv"`; PVH: `type = "pvh"`), all in
/// one dom0 boot, prints each console log and judges each: the result line and the shutdown
/// reason (0 poweroff on PASS, 3 crash on FAIL) must agree.
fn demo_xen(elf: &Path, memory: u32, cmdline: &str, kinds: &[xen::GuestKind]) -> Vec<Res<Verdict>> {
    let env = match step(
        "xen: hypervisor with PV32 + dom0 (first run builds, a few minutes)",
        || xen::prepare(&xen_cache()).map_err(HarnessError),
    ) {
        Ok(env) => env,
        Err(e) => return vec![Err(e)],
    };
    let specs: Vec<xen::DomuSpec> = kinds
        .iter()
        .map(|k| xen::DomuSpec {
            name: format!("guest-demo-{}", k.xl_type()),
            kind: *k,
            elf: elf.to_path_buf(),
            memory_mib: memory,
            cmdline: cmdline.trim().to_string(),
        })
        .collect();
    let names: Vec<&str> = kinds
        .iter()
        .map(|k| match k {
            xen::GuestKind::Pv => "a PV domU",
            xen::GuestKind::Pvh => "a PVH domU",
        })
        .collect();
    eprintln!(
        "==> xen: Xen {} -> dom0 -> xl create guest-demo as {} ({memory} MiB)",
        env.version,
        names.join(", then as ")
    );
    let outcomes = match xen::run_domus(&env, &specs, Duration::from_secs(300)) {
        Ok(o) => o,
        Err(e) => return vec![Err(HarnessError(e))],
    };
    kinds
        .iter()
        .zip(outcomes)
        .map(|(kind, o)| {
            let (backend, platform) = domu_expect(*kind);
            eprintln!("==> {platform}: console log of {}", o.name);
            for line in o.console_log.lines() {
                println!("{line}");
            }
            eprintln!(
                "    {platform}: domU shut down with reason {:?} after {:?}s",
                o.shutdown_reason, o.seconds
            );
            let exit_ok = match o.shutdown_reason {
                Some(0) => Some(true),
                Some(3) => Some(false),
                _ => None,
            };
            judge(&o.console_log, backend, platform, exit_ok)
        })
        .collect()
}

fn demo_xen_dom0(elf: &Path, memory: u32, cmdline: &str) -> Res<Verdict> {
    let env = step(
        "xen: hypervisor with PV32 (first run builds, a few minutes)",
        || xen::prepare(&xen_cache()).map_err(HarnessError),
    )?;
    let o = xen::run_dom0(&env, elf, memory, cmdline.trim(), Duration::from_secs(60))
        .map_err(HarnessError)?;
    for line in o.serial_log.lines() {
        println!("{line}");
    }
    let exit_ok = match o.qemu_status {
        Some(33) => Some(true),
        Some(35) => Some(false),
        _ => None,
    };
    judge(&o.serial_log, "xen", "xen-pv", exit_ok)
}

/// One guest boot the test command checks.
struct BootCase {
    name: String,
    memory: u32,
    cmdline: String,
    expect: Expect,
}

enum Expect {
    Pass,
    /// FAIL whose line contains all of these.
    Fail(Vec<&'static str>),
}

impl BootCase {
    fn new(name: &str, memory: u32, cmdline: &str, expect: Expect) -> Self {
        BootCase {
            name: name.into(),
            memory,
            cmdline: cmdline.into(),
            expect,
        }
    }
    fn check(&self, log: &str, backend: &str, platform: &str) -> Result<String, String> {
        match (find_result(log, TAG, backend, platform), &self.expect) {
            (Some(GuestLine::Pass(l)), Expect::Pass) => {
                check_misuse(log, backend).map(|m| format!("{l} [{m}]"))
            }
            (Some(GuestLine::Fail(l)), Expect::Fail(needles))
                if needles.iter().all(|n| l.contains(n)) =>
            {
                Ok(l)
            }
            (Some(GuestLine::Pass(l) | GuestLine::Fail(l)), _) => {
                Err(format!("unexpected result: {l}"))
            }
            (None, _) => Err("no result line".into()),
        }
    }
}

/// A PASS must have gone through the misuse stage: at least ten refused operations, and under
/// Xen more of Xen's own refusals than of pvops's checks.
fn check_misuse(log: &str, backend: &str) -> Result<String, String> {
    if !log.lines().any(|l| l.contains("stage misuse ok")) {
        return Err("no `stage misuse ok` line".into());
    }
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("PVOPS-MISUSE: rejected "))
        .collect();
    let xen = rejected.iter().filter(|l| l.contains(": xen ")).count();
    let pvops = rejected.iter().filter(|l| l.contains(": pvops ")).count();
    if rejected.len() < 10 {
        return Err(format!("only {} misuse cases rejected", rejected.len()));
    }
    if backend == "xen" && xen <= pvops {
        return Err(format!(
            "misuse under Xen: {xen} of Xen's refusals vs {pvops} of pvops's"
        ));
    }
    Ok(format!(
        "misuse: {} rejected, {xen} by xen, {pvops} by pvops",
        rejected.len()
    ))
}

/// The tag of the example kernel's result lines.
const MINIMAL_TAG: &str = "MINIMAL-KERNEL";

/// `Ok(line)` when the log holds `<tag>: PASS backend=<backend> platform=<platform>` and
/// QEMU's status is 33.
fn expect_pass(
    log: &str,
    tag: &str,
    (backend, platform): (&str, &str),
    status: Option<i32>,
) -> Result<String, String> {
    match find_result(log, tag, backend, platform) {
        Some(GuestLine::Pass(l)) if status == Some(33) => Ok(l),
        Some(GuestLine::Pass(l)) => Err(format!("{l} but qemu status {status:?}, expected 33")),
        Some(GuestLine::Fail(l)) => Err(format!("unexpected result: {l}")),
        None => Err(format!("no {tag} result line (qemu status {status:?})")),
    }
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 5;

fn cmd_test() -> Res<Verdict> {
    let root = util::root();
    step(
        "toolchains (nightly rust-src + clippy, stable clippy + rustfmt)",
        util::ensure_toolchains,
    )?;
    step("qemu-system-x86 present", native::ensure_qemu)?;
    step("cargo fmt --check", || {
        util::run(
            util::cmd("cargo")
                .args(["fmt", "--all", "--", "--check"])
                .current_dir(&root),
        )?;
        util::run(
            util::cmd("cargo")
                .args([
                    "fmt",
                    "--manifest-path",
                    "guest-demo/Cargo.toml",
                    "--",
                    "--check",
                ])
                .current_dir(&root),
        )
    })?;
    step("cargo fmt --check (examples/minimal-kernel)", || {
        util::run(
            util::cmd("cargo")
                .args([
                    "fmt",
                    "--manifest-path",
                    "examples/minimal-kernel/Cargo.toml",
                    "--",
                    "--check",
                ])
                .current_dir(&root),
        )
    })?;
    step("cargo clippy (host workspace)", || {
        util::run(
            util::cmd("cargo")
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--quiet",
                    "--",
                    "-D",
                    "warnings",
                ])
                .current_dir(&root),
        )
    })?;
    step(
        "cargo clippy (i686 kernel: guest-demo and the backends)",
        || kernel::clippy("guest-demo"),
    )?;
    step(
        "cargo clippy (i686 kernel: examples/minimal-kernel)",
        || kernel::clippy("examples/minimal-kernel"),
    )?;
    step("rustdoc without warnings (library crates)", || {
        util::run(
            util::cmd("cargo")
                .args([
                    "doc",
                    "--no-deps",
                    "--quiet",
                    "-p",
                    "pvops-core",
                    "-p",
                    "backend-native",
                    "-p",
                    "backend-xen",
                    "-p",
                    "platform-pvh",
                ])
                .env("RUSTDOCFLAGS", "-D warnings")
                .current_dir(&root),
        )
    })?;
    step(
        "cargo package (pvops-core, backend-native, backend-xen, platform-pvh)",
        || {
            util::run(
                util::cmd("cargo")
                    .args([
                        "package",
                        "--quiet",
                        "--allow-dirty",
                        "-p",
                        "pvops-core",
                        "-p",
                        "backend-native",
                        "-p",
                        "backend-xen",
                        "-p",
                        "platform-pvh",
                    ])
                    .current_dir(&root),
            )
        },
    )?;
    step("cargo test (host: simulated machine, Xen model)", || {
        util::run(
            util::cmd("cargo")
                .args(["test", "--workspace", "--quiet"])
                .current_dir(&root),
        )
    })?;
    miri::miri()?;
    let fuzzed = fuzz::fuzz(FUZZ_SECONDS_IN_TEST)?;
    if let Some(c) = fuzzed.iter().find_map(|r| r.crash.as_ref()) {
        return Err(HarnessError(format!("fuzz: {c}")));
    }
    let elf = step("build guest-demo", || {
        kernel::build("guest-demo", "guest-demo")
    })?;
    let minimal_elf = step("build examples/minimal-kernel", || {
        kernel::build("examples/minimal-kernel", "minimal-kernel")
    })?;

    step("codegen: native set_pte is the raw PAE store", || {
        let c = kernel::codegen_check(&elf)?;
        eprintln!(
            "    framework: {} instructions{}: {}",
            c.framework.len(),
            if c.merged {
                " (the compiler merged both probes: identical code)"
            } else {
                ""
            },
            c.framework.join("; ")
        );
        if c.same_code {
            Ok(())
        } else {
            Err(HarnessError(format!(
                "different code:\n  framework: {}\n  raw:       {}",
                c.framework.join("; "),
                c.raw.join("; ")
            )))
        }
    })?;

    let mut passed = 0;
    let mut failed = Vec::new();
    let mut record = |name: &str, r: Result<String, String>| match r {
        Ok(line) => {
            eprintln!("    ok   {name}: {line}");
            passed += 1;
        }
        Err(e) => {
            eprintln!("    FAIL {name}: {e}");
            failed.push(name.to_string());
        }
    };

    let native_cases = [
        BootCase::new("native default", 128, "", Expect::Pass),
        BootCase::new("native 32 MiB", 32, "", Expect::Pass),
        BootCase::new("native 512 MiB", 512, "", Expect::Pass),
        BootCase::new("native 2048 MiB (lowmem only)", 2048, "", Expect::Pass),
        BootCase::new(
            "native pvops.early_ioremap=swapper",
            128,
            "pvops.early_ioremap=swapper",
            Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xff8"]),
        ),
    ];
    step("boots on bare QEMU", || {
        for c in &native_cases {
            let r = native::boot(&elf, c.memory, &c.cmdline, false, Duration::from_secs(60))
                .map_err(|e| e.to_string())
                .and_then(|run| {
                    let want = if matches!(c.expect, Expect::Pass) {
                        33
                    } else {
                        35
                    };
                    if run.status != Some(want) {
                        return Err(format!("qemu status {:?}, expected {want}", run.status));
                    }
                    c.check(&run.log, "native", "bare")
                });
            record(&c.name, r);
        }
        Ok(())
    })?;

    step("minimal-kernel on bare QEMU", || {
        let r = native::boot(&minimal_elf, 64, "", false, Duration::from_secs(60))
            .map_err(|e| e.to_string())
            .and_then(|run| expect_pass(&run.log, MINIMAL_TAG, ("native", "bare"), run.status));
        record("minimal-kernel native", r);
        Ok(())
    })?;
    let xen_ready = step(
        "xen: hypervisor with PV32 + dom0 (first run builds, a few minutes)",
        || xen::prepare(&xen_cache()).map_err(HarnessError),
    );
    match xen_ready {
        Err(e) => record("xen harness", Err(e.to_string())),
        Ok(env) => {
            let dom0_cases = [
                BootCase::new("xen dom0 default", 64, "", Expect::Pass),
                BootCase::new(
                    "xen dom0 pvops.early_ioremap=swapper",
                    64,
                    "pvops.early_ioremap=swapper",
                    Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xf56"]),
                ),
                BootCase::new(
                    "xen dom0 pvops.skip_unpin",
                    64,
                    "pvops.skip_unpin",
                    Expect::Fail(vec!["stage=pagetable_setup_done", "xen EBUSY"]),
                ),
            ];
            let _ = step("boots as Xen dom0 (fast path)", || {
                for c in &dom0_cases {
                    let r =
                        xen::run_dom0(&env, &elf, c.memory, &c.cmdline, Duration::from_secs(90))
                            .and_then(|o| {
                                let want = if matches!(c.expect, Expect::Pass) {
                                    33
                                } else {
                                    35
                                };
                                if o.qemu_status != Some(want) {
                                    return Err(format!(
                                        "qemu status {:?}, expected {want}",
                                        o.qemu_status
                                    ));
                                }
                                c.check(&o.serial_log, "xen", "xen-pv")
                            });
                    record(&c.name, r);
                }
                Ok(())
            });
            let _ = step("minimal-kernel as Xen dom0 (fast path)", || {
                let r = xen::run_dom0(&env, &minimal_elf, 64, "", Duration::from_secs(90))
                    .and_then(|o| {
                        expect_pass(&o.serial_log, MINIMAL_TAG, ("xen", "xen-pv"), o.qemu_status)
                    });
                record("minimal-kernel xen dom0", r);
                Ok(())
            });
            use xen::GuestKind::{Pv, Pvh};
            let domu_cases = [
                (Pv, BootCase::new("xen domU 64 MiB", 64, "", Expect::Pass)),
                (Pv, BootCase::new("xen domU 16 MiB", 16, "", Expect::Pass)),
                (Pv, BootCase::new("xen domU 512 MiB", 512, "", Expect::Pass)),
                (
                    Pv,
                    BootCase::new(
                        "xen domU 1024 MiB (beyond the direct map)",
                        1024,
                        "",
                        Expect::Pass,
                    ),
                ),
                (
                    Pv,
                    BootCase::new(
                        "xen domU pvops.early_ioremap=swapper",
                        64,
                        "pvops.early_ioremap=swapper",
                        Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xf56"]),
                    ),
                ),
                (
                    Pv,
                    BootCase::new(
                        "xen domU pvops.skip_unpin",
                        64,
                        "pvops.skip_unpin",
                        Expect::Fail(vec!["stage=pagetable_setup_done", "xen EBUSY"]),
                    ),
                ),
                (
                    Pvh,
                    BootCase::new("xen PVH domU 64 MiB", 64, "", Expect::Pass),
                ),
                (
                    Pvh,
                    BootCase::new(
                        "xen PVH domU 1024 MiB (beyond the direct map)",
                        1024,
                        "",
                        Expect::Pass,
                    ),
                ),
                (
                    Pvh,
                    BootCase::new(
                        "xen PVH domU pvops.early_ioremap=swapper",
                        64,
                        "pvops.early_ioremap=swapper",
                        Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xff8"]),
                    ),
                ),
            ];
            let specs: Vec<xen::DomuSpec> = domu_cases
                .iter()
                .enumerate()
                .map(|(i, (kind, c))| xen::DomuSpec {
                    name: format!("pvops-test-{i}"),
                    kind: *kind,
                    elf: elf.clone(),
                    memory_mib: c.memory,
                    cmdline: c.cmdline.clone(),
                })
                .collect();
            let outcomes = step("boots as Xen domUs (one dom0 boot, xl create each)", || {
                xen::run_domus(&env, &specs, Duration::from_secs(900)).map_err(HarnessError)
            });
            match outcomes {
                Err(e) => record("xen domU run", Err(e.to_string())),
                Ok(outcomes) => {
                    for ((kind, c), o) in domu_cases.iter().zip(&outcomes) {
                        let want = if matches!(c.expect, Expect::Pass) {
                            0
                        } else {
                            3
                        };
                        let (backend, platform) = domu_expect(*kind);
                        let r = c
                            .check(&o.console_log, backend, platform)
                            .and_then(|line| match o.shutdown_reason {
                                Some(r) if r == want => Ok(format!(
                                    "{line} [shutdown reason {r}, {:.1}s]",
                                    o.seconds.unwrap_or(0.0)
                                )),
                                other => Err(format!(
                                    "shutdown reason {other:?}, expected {want}: {:?}",
                                    o.error
                                )),
                            });
                        record(&c.name, r);
                    }
                }
            }
        }
    }

    eprintln!("boots: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        Ok(Verdict::Pass)
    } else {
        Err(HarnessError(format!("failed boots: {}", failed.join(", "))))
    }
}

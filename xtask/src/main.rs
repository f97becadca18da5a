//! xtask: the project's commands (`cargo xtask build | demo | run | test | bench | miri`).
//!
//! Exit status contract: 0 when every guest PASSed, 1 when a guest FAILed, 2 on a harness
//! error (build, timeout, tool failure), with a message saying which.

mod bench;
mod fuzz;
mod miri;
mod quickstart;

use xtask::harness::{self, Boot, Exit, Guest, Mode};
use xtask::{kernel, native, util};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use util::{step, HarnessError, Res};

const USAGE: &str = "\
cargo xtask <command> [options]      (cargo xtask <command> --help for details)

Commands:
  build    Build guest-demo (every backend linked) to target/guest-demo.elf.
  demo     Boot guest-demo on bare QEMU, then as a Xen PV and a PVH domU; print the logs.
  run      Boot any kernel ELF on bare QEMU or under Xen (the harness behind pvops-run).
  test     fmt, clippy, rustdoc, host tests, Miri, and real boots on QEMU and Xen.
  bench    Benches, the codegen check and real boots; writes target/pvops-bench.json.
  miri     The raw-memory unit tests under Miri (installs the nightly miri component).
  fuzz     libFuzzer on the parsers of boot input (multiboot, start_info, hvm_start_info, ...).

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
                 [--bootloader qemu|grub] [--module FILE]...

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
--bootloader qemu|grub  native: QEMU's own multiboot loader (-kernel, the default) or
                  GRUB 2 from an ISO made by grub-mkrescue in target/grub (-cdrom;
                  installs grub-pc-bin grub-common xorriso mtools on first use)
--module FILE     native: pass FILE as a multiboot module (repeatable); the guest prints
                  its length and first 16 bytes, which are checked against the file
Installs: rust-src, qemu-system-x86; for Xen the build dependencies, Xen's source package
and the dom0 packages (first Xen run ~2-3 minutes; cached in target/xen; then ~15 s).
Exit status: 0 every guest PASSed, 1 a guest FAILed, 2 harness error.";

const HELP_RUN_INTRO: &str = "cargo xtask run";

const HELP_TEST: &str = "\
cargo xtask test

Runs, printing each step and its time: toolchain and package setup, cargo fmt --check,
clippy without warnings (host workspace and the i686 kernel), rustdoc without warnings,
the host tests (simulated PAE machine, model of Xen's rules, property tests, fault
injection), Miri on the raw-memory tests, the codegen check of the native set_pte, and
real boots: bare QEMU (32/128/512/2048 MiB, through GRUB 2 with a module, with a 1.5 KiB
command line, the trap self-tests and the swapper regression), Xen dom0 fast path, Xen PV
domUs (16/64/512/1024 MiB and both 2008 regressions) and PVH domUs in one dom0 boot, and
the README's \"Use pvops in your kernel\" steps followed in a fresh directory outside the
repository (cargo run through pvops-run: native and a Xen domU).
Ends with `boots: N passed, M failed`. Installs what it needs (as `demo`). First run on a
fresh machine: ~8-10 minutes (most of it building Xen and the kernels); warm: ~4-5 minutes.
Exit status: 0 all passed, 2 otherwise.";

const HELP_BENCH: &str = "\
cargo xtask bench

Runs the codegen check (native set_pte is the raw PAE store), the criterion bench of Xen
direct maps of 1024/65536/131072 PTEs at the kernel's direct-map address on the model
(batched, in batches of 32 and one update per hypercall) and the model's hypercall counts,
and real boots (native at 512 MiB; Xen domUs at 512 MiB batched and with pvops.batch=1 in
one dom0 boot): the direct map's cycles (build_direct_map + write_cr3 +
pagetable_setup_done, the vCPU's not-running time taken out), the store phase per PTE on
both backends and calibration loops. Prints one table and writes target/pvops-bench.json
(numbers; see the README's Performance section).
Installs what it needs (as `demo`). Takes ~4 minutes (plus the first Xen build).";

const HELP_FUZZ: &str = "\
cargo xtask fuzz [--seconds N] [--capture]

Fuzzes every parser of loader-provided boot input with libFuzzer (cargo-fuzz), each target
for N seconds (default 60; N is per target, not in total): multiboot (info, memory map,
command line, then the frame allocator on the result), start_info (validation, and that what
it accepts lies inside the domain), hvm_start_info (PVH: info, memory map, command line,
modules; no boot structure left usable), memory_map (the map, its boot-data reservations and
the allocator), cmdline (the pvops.* options). Starts from the checked-in seeds in
fuzz/seeds/<target>/ and keeps what it finds in target/fuzz/corpus/<target>/; a crashing
input goes to target/fuzz/artifacts/<target>/.
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
            "run" => {
                println!("{HELP_RUN_INTRO} {}", harness::RUN_USAGE);
                return ExitCode::SUCCESS;
            }
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
        Some("run") => harness::parse_run_args(&args[1..])
            .and_then(|a| harness::run_one(&a))
            .map(|pass| if pass { Verdict::Pass } else { Verdict::Fail }),
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

/// The guest's result line for `mode`'s backend and platform:
/// `<tag>: PASS|FAIL backend=<backend> platform=<platform> ...`.
fn find_result(log: &str, tag: &str, mode: Mode) -> Option<GuestLine> {
    let (backend, platform) = (mode.backend(), mode.platform());
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
    bootloader: native::Bootloader,
    modules: Vec<PathBuf>,
}

fn parse_demo(args: &[String]) -> Res<DemoArgs> {
    let mut d = DemoArgs {
        which: "all".into(),
        memory: None,
        cmdline: String::new(),
        bootloader: native::Bootloader::Qemu,
        modules: Vec::new(),
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
            "--bootloader" => {
                let v = it.next().ok_or_else(|| {
                    HarnessError("--bootloader needs a value (qemu or grub)".into())
                })?;
                d.bootloader = native::Bootloader::parse(v)?;
            }
            "--module" => {
                let v = it
                    .next()
                    .ok_or_else(|| HarnessError("--module needs a file".into()))?;
                let p = PathBuf::from(v);
                if !p.is_file() {
                    return Err(HarnessError(format!("--module: `{v}` is not a file")));
                }
                d.modules.push(p);
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
    let mut verdicts: Vec<Res<Verdict>> = Vec::new();
    if d.which == "native" || d.which == "all" {
        if d.bootloader == native::Bootloader::Qemu && d.modules.is_empty() {
            verdicts.push(demo_boot(&elf, Mode::Native, d.memory, &d.cmdline));
        } else {
            verdicts.push(demo_native_loaded(&native::NativeBoot {
                elf: &elf,
                memory_mib: d.memory.unwrap_or(Mode::Native.default_memory()),
                cmdline: d.cmdline.trim(),
                cpus: 1,
                modules: &d.modules,
                bootloader: d.bootloader,
            }));
        }
    }
    // The Xen domUs of one demo share one dom0 boot.
    let domus: &[Mode] = match d.which.as_str() {
        "xen" => &[Mode::Xen],
        "xen-pvh" => &[Mode::XenPvh],
        "all" => &[Mode::Xen, Mode::XenPvh],
        _ => &[],
    };
    if !domus.is_empty() {
        verdicts.extend(demo_domus(&elf, domus, d.memory, &d.cmdline));
    }
    if d.which == "xen-dom0" {
        verdicts.push(demo_boot(&elf, Mode::XenDom0, d.memory, &d.cmdline));
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

/// Maps a log and the guest's exit to a verdict: the exit protocol and guest-demo's result
/// line must agree; a missing or contradicted line is a harness error.
fn judge(log: &str, mode: Mode, exit: &Exit) -> Res<Verdict> {
    let (backend, platform) = (mode.backend(), mode.platform());
    let exit_ok = *exit == Exit::Pass;
    match find_result(log, TAG, mode) {
        Some(GuestLine::Pass(_)) if exit_ok => Ok(Verdict::Pass),
        Some(GuestLine::Fail(_)) if !exit_ok => Ok(Verdict::Fail),
        Some(line) => Err(HarnessError(format!(
            "{platform}: guest printed `{line:?}` but its exit said {exit:?}"
        ))),
        None => Err(HarnessError(format!(
            "{platform}: the guest printed no `{TAG}: PASS|FAIL backend={backend} platform={platform}` line"
        ))),
    }
}

/// Boots guest-demo in one mode through the harness and prints its log.
fn demo_boot(elf: &Path, mode: Mode, memory: Option<u32>, cmdline: &str) -> Res<Verdict> {
    let guest = Guest {
        memory_mib: memory,
        cmdline: cmdline.trim().to_string(),
        ..Guest::new(elf)
    };
    let mem = memory.unwrap_or(mode.default_memory());
    match mode {
        Mode::Native => eprintln!("==> native: qemu-system-i386 -m {mem} (multiboot)"),
        Mode::Xen => {
            eprintln!("==> xen: Xen -> dom0 -> xl create guest-demo as a PV domU ({mem} MiB)")
        }
        Mode::XenDom0 => eprintln!("==> xen-dom0: guest-demo as Xen's dom0 ({mem} MiB)"),
        Mode::XenPvh => eprintln!("==> xen-pvh: xl create guest-demo as a PVH domU ({mem} MiB)"),
    }
    let echo = mode == Mode::Native;
    let b = harness::boot(mode, std::slice::from_ref(&guest), echo)?
        .remove(0)
        .map_err(|e| HarnessError(format!("{}: {e}", mode.name())))?;
    if !echo {
        for line in b.log.lines() {
            println!("{line}");
        }
    }
    eprintln!("    {}: {} after {:.2}s", mode.name(), b.ending, b.seconds);
    judge(&b.log, mode, &b.exit)
}

/// A native boot through [`native::boot_with`] (GRUB, modules) as the harness reports boots.
fn native_loaded_boot(b: &native::NativeBoot<'_>, echo: bool) -> Res<Boot> {
    let run = native::boot_with(b, echo, std::time::Duration::from_secs(60))?;
    let exit = match run.status {
        Some(33) => Exit::Pass,
        Some(35) => Exit::Fail("debug-exit 0x11".into()),
        other => Exit::Fail(format!(
            "qemu exited with {other:?}, not through isa-debug-exit"
        )),
    };
    Ok(Boot {
        log: run.log,
        exit,
        ending: format!("qemu status {:?}", run.status),
        seconds: run.seconds,
    })
}

/// `demo native` with `--bootloader grub` or `--module`: the log, the verdict, and each
/// module's line checked against its file.
fn demo_native_loaded(b: &native::NativeBoot<'_>) -> Res<Verdict> {
    let how = match b.bootloader {
        native::Bootloader::Qemu => "QEMU's multiboot loader",
        native::Bootloader::Grub => "GRUB 2 from an ISO",
    };
    eprintln!(
        "==> native: qemu-system-i386 -m {} ({how}, {} module(s))",
        b.memory_mib,
        b.modules.len()
    );
    let boot = native_loaded_boot(b, true)?;
    eprintln!("    native: {} after {:.2}s", boot.ending, boot.seconds);
    let verdict = judge(&boot.log, Mode::Native, &boot.exit)?;
    if verdict == Verdict::Pass {
        match check_modules(&boot.log, b.modules) {
            Ok(m) if !m.is_empty() => eprintln!("    native: modules as the files say: {m}"),
            Ok(_) => {}
            Err(e) => {
                eprintln!("    native: {e}");
                return Ok(Verdict::Fail);
            }
        }
    }
    Ok(verdict)
}

/// The guest line the demo prints for module `index`, computed from the file itself.
fn module_line(index: usize, file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("module {}: {e}", file.display()))?;
    let head: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "module {index}: {} bytes, head {head}",
        bytes.len()
    ))
}

/// Every module passed must appear in the log as the guest read it through early_ioremap.
fn check_modules(log: &str, modules: &[PathBuf]) -> Result<String, String> {
    let mut seen = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let want = module_line(i, m)?;
        let prefix = format!("module {i}: ");
        match log.lines().find_map(|l| l.find(&prefix).map(|at| &l[at..])) {
            Some(got) if got.trim_end() == want => seen.push(want),
            Some(got) => return Err(format!("guest printed `{got}`, the file says `{want}`")),
            None => return Err(format!("no `{prefix}...` line for {}", m.display())),
        }
    }
    Ok(seen.join("; "))
}

/// Boots guest-demo as one domU per mode (PV, PVH), all in one dom0 boot, prints each console
/// log and judges each: the result line and the shutdown reason must agree.
fn demo_domus(elf: &Path, modes: &[Mode], memory: Option<u32>, cmdline: &str) -> Vec<Res<Verdict>> {
    let guests: Vec<(Mode, Guest)> = modes
        .iter()
        .map(|&m| {
            let g = Guest {
                memory_mib: memory,
                cmdline: cmdline.trim().to_string(),
                ..Guest::new(elf)
            };
            (m, g)
        })
        .collect();
    let names: Vec<&str> = modes
        .iter()
        .map(|m| {
            if *m == Mode::XenPvh {
                "a PVH domU"
            } else {
                "a PV domU"
            }
        })
        .collect();
    eprintln!(
        "==> xen: Xen -> dom0 -> xl create guest-demo as {} ({} MiB)",
        names.join(", then as "),
        memory.unwrap_or(Mode::Xen.default_memory())
    );
    let boots = match harness::boot_domus(&guests) {
        Ok(b) => b,
        Err(e) => return vec![Err(e)],
    };
    modes
        .iter()
        .zip(boots)
        .map(|(&mode, b)| {
            let b = b.map_err(|e| HarnessError(format!("{}: {e}", mode.name())))?;
            eprintln!("==> {}: console log", mode.platform());
            for line in b.log.lines() {
                println!("{line}");
            }
            eprintln!("    {}: {} after {:.2}s", mode.name(), b.ending, b.seconds);
            judge(&b.log, mode, &b.exit)
        })
        .collect()
}

/// One guest boot the test command checks.
struct BootCase {
    name: String,
    memory: u32,
    cmdline: String,
    expect: Expect,
    /// Native only: who loads the image.
    bootloader: native::Bootloader,
    /// Native only: files passed as multiboot modules (the module lines are checked).
    modules: Vec<PathBuf>,
    /// A line the log must also hold (e.g. a self-test's).
    requires: Option<&'static str>,
    /// Xen domUs: boot with [`TEST_MODULE`] as the xl `ramdisk` and require its
    /// `mem: reserved module` line.
    module: bool,
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
            bootloader: native::Bootloader::Qemu,
            modules: Vec::new(),
            requires: None,
            module: false,
        }
    }
    /// Native: boot through `bootloader` with `modules`.
    fn loaded_by(mut self, bootloader: native::Bootloader, modules: &[PathBuf]) -> Self {
        self.bootloader = bootloader;
        self.modules = modules.to_vec();
        self
    }
    /// The log must also hold a line containing `line`.
    fn requiring(mut self, line: &'static str) -> Self {
        self.requires = Some(line);
        self
    }
    /// The same case, booted with a module (see [`BootCase::module`]).
    fn with_module(mut self) -> Self {
        self.module = true;
        self
    }
    /// The guest this case boots.
    fn guest(&self, elf: &Path) -> Guest {
        Guest {
            memory_mib: Some(self.memory),
            cmdline: self.cmdline.clone(),
            ramdisk: self.module.then(|| util::root().join(TEST_MODULE)),
            ..Guest::new(elf)
        }
    }

    /// The exit protocol must say what the case expects, and the log must hold the result line.
    fn judge(&self, boot: Result<Boot, String>, mode: Mode) -> Result<String, String> {
        let b = boot?;
        let want_pass = matches!(self.expect, Expect::Pass);
        if (b.exit == Exit::Pass) != want_pass {
            return Err(format!(
                "the guest's exit says {:?} ({}), expected {}",
                b.exit,
                b.ending,
                if want_pass { "PASS" } else { "FAIL" }
            ));
        }
        let line = self
            .check(&b.log, mode)
            .map(|l| format!("{l} [{}, {:.1}s]", b.ending, b.seconds))?;
        if !self.module {
            return Ok(line);
        }
        match b
            .log
            .lines()
            .find(|l| l.contains("mem: reserved module pa="))
        {
            Some(m) => Ok(format!("{line} [{}]", m.trim())),
            None => Err(format!(
                "{line}: no `mem: reserved module pa=..` line for the ramdisk"
            )),
        }
    }

    fn check(&self, log: &str, mode: Mode) -> Result<String, String> {
        let backend = mode.backend();
        if let Some(want) = self.requires {
            if !log.lines().any(|l| l.contains(want)) {
                return Err(format!("no `{want}` line"));
            }
        }
        match (find_result(log, TAG, mode), &self.expect) {
            (Some(GuestLine::Pass(l)), Expect::Pass) => {
                let spaces = check_address_spaces(log)?;
                let m = check_misuse(log, backend)?;
                let r = check_reserved(
                    log,
                    mode.platform(),
                    self.modules.len() + usize::from(self.module),
                )?;
                if self.modules.is_empty() {
                    return Ok(format!("{l} [{m}] [{r}] [{spaces}]"));
                }
                let mods = check_modules(log, &self.modules)?;
                Ok(format!("{l} [{m}] [{r}] [{spaces}] [{mods}]"))
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

/// A PASS must have printed one well-formed `mem: reserved <what> pa=0x<start>-0x<end>` line
/// for each structure its loader hands over: bare metal the multiboot info, memory map and
/// command line (and each module); Xen PV start_info and the p2m list, a domU also its
/// console and xenstore rings; Xen PVH hvm_start_info.
fn check_reserved(log: &str, platform: &str, modules: usize) -> Result<String, String> {
    let mut seen: Vec<String> = Vec::new();
    for l in log.lines() {
        let Some(at) = l.find("mem: reserved ") else {
            continue;
        };
        let rest = &l[at + "mem: reserved ".len()..];
        let bad = || format!("malformed line `{}`", &l[at..]);
        let (what, range) = rest.rsplit_once(" pa=").ok_or_else(bad)?;
        let (start, end) = range.trim_end().split_once('-').ok_or_else(bad)?;
        let hex = |s: &str| {
            s.strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        };
        match (hex(start), hex(end)) {
            (Some(s), Some(e)) if s < e => seen.push(what.to_string()),
            _ => return Err(bad()),
        }
    }
    let mut want: Vec<&str> = match platform {
        "bare" => vec!["multiboot info", "multiboot mmap", "multiboot cmdline"],
        "xen-pvh" => vec!["hvm_start_info"],
        _ => vec!["start_info", "p2m list"],
    };
    if platform == "xen-pv" && log.contains("unprivileged (domU)") {
        want.extend(["console ring", "xenstore ring"]);
    }
    // The M2P of frames not ours, read up to max_mfn: an unmapped entry must read as none
    // (guest-demo's probe), where it used to be a page fault.
    if platform == "xen-pv" && !log.contains("xen: m2p of frames not ours") {
        return Err("no `xen: m2p of frames not ours` line".into());
    }
    for w in &want {
        if !seen.iter().any(|s| s == w) {
            return Err(format!("no `mem: reserved {w} pa=..` line"));
        }
    }
    let mods = seen.iter().filter(|s| s.ends_with("module")).count();
    if mods != modules {
        return Err(format!(
            "{mods} reserved module ranges, {modules} modules passed"
        ));
    }
    Ok(format!("{} ranges reserved", seen.len()))
}

/// A PASS must have gone through the address_spaces stage whole: its line ends with
/// `round_trips=10 map_rounds=50 frames_leaked=0`. Returns the line's figures.
fn check_address_spaces(log: &str) -> Result<String, String> {
    const WANT: &str = "round_trips=10 map_rounds=50 frames_leaked=0";
    let line = log
        .lines()
        .find_map(|l| {
            l.find("stage address_spaces ok ")
                .map(|at| l[at..].trim_end())
        })
        .ok_or("no `stage address_spaces ok` line")?;
    if !line.ends_with(WANT) {
        return Err(format!("`{line}` does not end with `{WANT}`"));
    }
    Ok(line.to_string())
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

/// A module whose length is not a page multiple and whose bytes are not all alike, so a
/// wrong length, offset or page shows in the module line.
fn test_module_bytes() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The module the test boots a PVH domU with (xl `ramdisk`), under the checkout.
const TEST_MODULE: &str = "target/pvh-test-module.bin";

/// The tag of the example kernel's result lines.
const MINIMAL_TAG: &str = "MINIMAL-KERNEL";

/// `Ok(line)` when the boot PASSed through its exit protocol and the log holds
/// `<tag>: PASS backend=<backend>`.
fn expect_pass(b: &Boot, tag: &str, mode: Mode) -> Result<String, String> {
    match (find_result(&b.log, tag, mode), &b.exit) {
        (Some(GuestLine::Pass(l)), Exit::Pass) => Ok(format!("{l} [{}]", b.ending)),
        (Some(GuestLine::Pass(l)), exit) => Err(format!("{l} but the exit says {exit:?}")),
        (Some(GuestLine::Fail(l)), _) => Err(format!("unexpected result: {l}")),
        (None, _) => Err(format!("no {tag} result line ({})", b.ending)),
    }
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 5;

/// What examples/minimal-kernel (built without the bug re-creation features) answers to a
/// 2008 switch: it refuses it before the boot path.
const NOT_BUILT_IN: [&str; 2] = ["stage=banner", "built without"];

/// Boots `elf` with `cmdline`; `Ok(line)` when it FAILed through its exit protocol with a
/// `<tag>: FAIL` line holding every needle.
fn expect_refusal(
    mode: Mode,
    elf: &Path,
    cmdline: &str,
    tag: &str,
    needles: &[&str],
) -> Result<String, String> {
    let guest = Guest {
        memory_mib: Some(64),
        cmdline: cmdline.into(),
        ..Guest::new(elf)
    };
    let b = harness::boot(mode, &[guest], false)
        .map_err(|e| e.to_string())
        .and_then(|mut v| v.remove(0))?;
    match (find_result(&b.log, tag, mode), &b.exit) {
        (Some(GuestLine::Fail(l)), Exit::Fail(_)) if needles.iter().all(|n| l.contains(n)) => {
            Ok(format!("{l} [{}]", b.ending))
        }
        (Some(GuestLine::Pass(l) | GuestLine::Fail(l)), exit) => {
            Err(format!("unexpected result: {l} (exit {exit:?})"))
        }
        (None, _) => Err(format!("no {tag} result line ({})", b.ending)),
    }
}

/// The library crates `cargo package` verifies, in dependency order.
const PACKAGED: [&str; 6] = [
    "pvops-core",
    "backend-native",
    "backend-xen",
    "platform-pvh",
    "pvops",
    "pvops-build",
];

/// `target/package-<hash of the packaged crates' files>` (older ones removed). cargo unpacks
/// each verified dependency from its temporary registry into `~/.cargo/registry/src/<hash of
/// the registry's path>/<name>-<version>` and never unpacks the same name and version again,
/// so with one fixed target directory a crate verified against a dependency's earlier sources
/// fails (seen: `pvops` against a pvops-core without `KernelStage`). A directory per content
/// gives a registry path per content.
fn package_target_dir() -> Res<PathBuf> {
    let root = util::root();
    let mut files = Vec::new();
    for krate in PACKAGED {
        collect_files(&root.join(krate), &mut files);
    }
    files.sort();
    // FNV-1a over paths and contents: stable across runs and Rust releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let data = std::fs::read(f).unwrap_or_default();
        for b in f.to_string_lossy().bytes().chain(data) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let name = format!("package-{h:016x}");
    let target = root.join("target");
    if let Ok(entries) = std::fs::read_dir(&target) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("package-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(target.join(name))
}

/// Every file under `dir` except build outputs.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                collect_files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// Boots one test case through the harness and judges it (a native case with GRUB or modules
/// through [`native::boot_with`]).
fn boot_case(mode: Mode, elf: &Path, c: &BootCase) -> Result<String, String> {
    if mode == Mode::Native && (c.bootloader != native::Bootloader::Qemu || !c.modules.is_empty()) {
        let b = native::NativeBoot {
            elf,
            memory_mib: c.memory,
            cmdline: &c.cmdline,
            cpus: 1,
            modules: &c.modules,
            bootloader: c.bootloader,
        };
        return c.judge(
            native_loaded_boot(&b, false).map_err(|e| e.to_string()),
            mode,
        );
    }
    let boot = harness::boot(mode, &[c.guest(elf)], false)
        .map_err(|e| e.to_string())
        .and_then(|mut v| v.remove(0));
    c.judge(boot, mode)
}

/// Boots `elf` once with `memory` MiB and no command line.
fn boot_one(mode: Mode, elf: &Path, memory: u32) -> Result<Boot, String> {
    let guest = Guest {
        memory_mib: Some(memory),
        ..Guest::new(elf)
    };
    harness::boot(mode, &[guest], false)
        .map_err(|e| e.to_string())
        .and_then(|mut v| v.remove(0))
}

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
                    "-p",
                    "pvops",
                    "-p",
                    "pvops-build",
                ])
                .env("RUSTDOCFLAGS", "-D warnings")
                .current_dir(&root),
        )
    })?;
    step(
        "cargo package (pvops-core, backend-native, backend-xen, platform-pvh, pvops, pvops-build)",
        || {
            util::run(
                util::cmd("cargo")
                    .args(["package", "--quiet", "--allow-dirty"])
                    .args(PACKAGED.iter().flat_map(|p| ["-p", p]))
                    .args(["--target-dir"])
                    .arg(package_target_dir()?)
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

    step(
        "GRUB 2 present (grub-pc-bin, xorriso, mtools)",
        native::ensure_grub,
    )?;
    let module = root.join("target/test-module.bin");
    std::fs::write(&module, test_module_bytes())
        .map_err(|e| HarnessError(format!("{}: {e}", module.display())))?;
    // About 1.5 KiB of plain ASCII (a ~1 KiB line was refused before) and a module.
    let long_cmdline = (0..64)
        .map(|i| format!("filler.word{i:02}=abcdefghijklm"))
        .collect::<Vec<_>>()
        .join(" ");
    let native_cases = [
        BootCase::new("native default", 128, "", Expect::Pass),
        BootCase::new(
            "native GRUB 2 ISO, one module",
            128,
            "console=ttyS0 grub.word=1",
            Expect::Pass,
        )
        .loaded_by(native::Bootloader::Grub, std::slice::from_ref(&module)),
        BootCase::new(
            "native QEMU -kernel, one module, 1.5 KiB command line",
            128,
            &long_cmdline,
            Expect::Pass,
        )
        .loaded_by(native::Bootloader::Qemu, std::slice::from_ref(&module)),
        BootCase::new(
            "native interrupts on (8259 masked)",
            128,
            "demo.selftest=irq",
            Expect::Pass,
        )
        .requiring("selftest irq: interrupts enabled for"),
        BootCase::new(
            "native double fault on its own stack",
            128,
            "demo.selftest=double_fault",
            Expect::Fail(vec!["double fault (on its own stack)", "esp=0x00000ff0"]),
        ),
        BootCase::new(
            "native fault inside the fault printer",
            128,
            "demo.selftest=fault_in_printer",
            Expect::Fail(vec!["fault inside the fault printer: page fault"]),
        ),
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
            record(&c.name, boot_case(Mode::Native, &elf, c));
        }
        Ok(())
    })?;

    step("minimal-kernel on bare QEMU", || {
        let r = boot_one(Mode::Native, &minimal_elf, 64)
            .and_then(|b| expect_pass(&b, MINIMAL_TAG, Mode::Native));
        record("minimal-kernel native", r);
        let r = expect_refusal(
            Mode::Native,
            &minimal_elf,
            "pvops.early_ioremap=swapper",
            MINIMAL_TAG,
            &NOT_BUILT_IN,
        );
        record(
            "minimal-kernel native pvops.early_ioremap=swapper (refused)",
            r,
        );
        Ok(())
    })?;
    match harness::xen_env() {
        Err(e) => record("xen harness", Err(e.to_string())),
        Ok(_) => {
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
                    record(&c.name, boot_case(Mode::XenDom0, &elf, c));
                }
                Ok(())
            });
            let _ = step("minimal-kernel as Xen dom0 (fast path)", || {
                let r = boot_one(Mode::XenDom0, &minimal_elf, 64)
                    .and_then(|b| expect_pass(&b, MINIMAL_TAG, Mode::XenDom0));
                record("minimal-kernel xen dom0", r);
                let r = expect_refusal(
                    Mode::XenDom0,
                    &minimal_elf,
                    "pvops.skip_unpin",
                    MINIMAL_TAG,
                    &NOT_BUILT_IN,
                );
                record("minimal-kernel xen dom0 pvops.skip_unpin (refused)", r);
                Ok(())
            });
            // PV and PVH domUs in one dom0 boot.
            let domu_cases = [
                (
                    Mode::Xen,
                    BootCase::new("xen domU 64 MiB", 64, "", Expect::Pass),
                ),
                (
                    Mode::Xen,
                    BootCase::new("xen domU 16 MiB", 16, "", Expect::Pass),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU with a module (xl ramdisk: start_info mod_start/mod_len)",
                        64,
                        "",
                        Expect::Pass,
                    )
                    .with_module(),
                ),
                (
                    Mode::Xen,
                    BootCase::new("xen domU 512 MiB", 512, "", Expect::Pass),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU 1024 MiB (beyond the direct map)",
                        1024,
                        "",
                        Expect::Pass,
                    ),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU pvops.early_ioremap=swapper",
                        64,
                        "pvops.early_ioremap=swapper",
                        Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xf56"]),
                    ),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU pvops.skip_unpin",
                        64,
                        "pvops.skip_unpin",
                        Expect::Fail(vec!["stage=pagetable_setup_done", "xen EBUSY"]),
                    ),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new("xen PVH domU 64 MiB", 64, "", Expect::Pass),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU with a module (xl ramdisk)",
                        64,
                        "",
                        Expect::Pass,
                    )
                    .with_module(),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU 1024 MiB (beyond the direct map)",
                        1024,
                        "",
                        Expect::Pass,
                    ),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU pvops.early_ioremap=swapper",
                        64,
                        "pvops.early_ioremap=swapper",
                        Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xff8"]),
                    ),
                ),
            ];
            // The module of the PVH module case: a recognisable head, then 5000 bytes (two pages).
            let module_bytes: Vec<u8> = b"PVOPS-TEST-MODULE\n"
                .iter()
                .copied()
                .chain((0..5000u32).map(|i| (i * 7) as u8))
                .collect();
            let module = util::root().join(TEST_MODULE);
            if let Err(e) = std::fs::write(&module, module_bytes) {
                record(
                    "xen domU module file",
                    Err(format!("{}: {e}", module.display())),
                );
            }
            let guests: Vec<(Mode, Guest)> = domu_cases
                .iter()
                .map(|(m, c)| (*m, c.guest(&elf)))
                .collect();
            let boots = step(
                "boots as Xen domUs, PV and PVH (one dom0 boot, xl create each)",
                || harness::boot_domus(&guests),
            );
            match boots {
                Err(e) => record("xen domU run", Err(e.to_string())),
                Ok(boots) => {
                    for ((mode, c), b) in domu_cases.iter().zip(boots) {
                        record(&c.name, c.judge(b, *mode));
                    }
                }
            }
        }
    }

    let quick = step(
        "quick start: the README's steps in a fresh directory (cargo run: native, xen)",
        quickstart::follow,
    );
    match quick {
        Err(e) => record("quick start", Err(e.to_string())),
        Ok(q) => {
            for (line, secs, pass) in q.passes {
                record(
                    &format!("quick start `{line}`"),
                    Ok(format!("{pass} [{secs:.1}s from an empty directory]")),
                );
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

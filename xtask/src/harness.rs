//! The one harness: boots any kernel ELF on bare QEMU or under Xen and judges it by the guest's
//! exit protocol (QEMU's isa-debug-exit status, the Xen domU's shutdown reason).
//!
//! `cargo xtask run`, the `pvops-run` runner, `cargo xtask demo` and `cargo xtask test` all boot
//! through [`boot`]; only what they check on top of the exit (demo and test also read
//! guest-demo's result lines) differs.

use crate::native;
use crate::util::{root, step, HarnessError, Res};
use crate::xen;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// isa-debug-exit: QEMU exits with `(v << 1) | 1` after the guest writes `v` to port 0xf4.
/// pvops's backends write 0x10 for PASS and 0x11 for FAIL.
pub const QEMU_STATUS_PASS: i32 = (0x10 << 1) | 1;
/// QEMU's status after the guest wrote pvops's FAIL value (0x11) to the debug-exit port.
pub const QEMU_STATUS_FAIL: i32 = (0x11 << 1) | 1;
/// `xl`'s shutdown reason codes (Xen's `SHUTDOWN_*`): a pvops guest powers off on PASS and
/// crashes on FAIL.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Xen's `SHUTDOWN_crash`.
pub const SHUTDOWN_CRASH: u32 = 3;
/// Lines of the guest's output quoted in a harness error.
const ERROR_TAIL_LINES: usize = 40;

/// Where a kernel boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bare QEMU (`qemu-system-i386 -kernel`, multiboot1).
    Native,
    /// A Xen PV domU started with `xl create` from a Linux dom0, all inside QEMU.
    Xen,
    /// The kernel itself as Xen's dom0 (a fast path: no dom0 Linux, no toolstack).
    XenDom0,
    /// A Xen PVH domU (`xl create` with `type = "pvh"`).
    XenPvh,
}

impl Mode {
    /// Every mode, in the order the usage text lists them.
    pub const ALL: [Mode; 4] = [Mode::Native, Mode::Xen, Mode::XenDom0, Mode::XenPvh];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Xen => "xen",
            Mode::XenDom0 => "xen-dom0",
            Mode::XenPvh => "xen-pvh",
        }
    }

    /// The mode named `s`, if any.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Memory when none is given: QEMU `-m` (native), domU memory (xen), dom0_mem (xen-dom0).
    pub fn default_memory(self) -> u32 {
        match self {
            Mode::Native => 128,
            Mode::Xen | Mode::XenDom0 | Mode::XenPvh => 64,
        }
    }

    /// The backend name a pvops guest prints in its result lines in this mode (PVH runs the
    /// native MMU).
    pub fn backend(self) -> &'static str {
        match self {
            Mode::Native | Mode::XenPvh => "native",
            Mode::Xen | Mode::XenDom0 => "xen",
        }
    }

    /// The platform name a pvops guest prints in its result lines (`platform=`) in this mode.
    pub fn platform(self) -> &'static str {
        match self {
            Mode::Native => "bare",
            Mode::Xen | Mode::XenDom0 => "xen-pv",
            Mode::XenPvh => "xen-pvh",
        }
    }

    fn timeout(self, guests: usize) -> Duration {
        match self {
            Mode::Native => Duration::from_secs(60),
            Mode::XenDom0 => Duration::from_secs(90),
            // One dom0 boot (~10 s) plus up to a minute per domU.
            Mode::Xen | Mode::XenPvh => Duration::from_secs(240 + 60 * guests as u64),
        }
    }
}

/// One kernel to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// The kernel ELF (32-bit; multiboot1 for native, Xen PV notes for xen/xen-dom0).
    pub elf: PathBuf,
    /// MiB of memory; `None` = [`Mode::default_memory`].
    pub memory_mib: Option<u32>,
    /// The guest's command line.
    pub cmdline: String,
    /// Virtual CPUs: QEMU `-smp` (native, xen-dom0), the xl config's `vcpus` (xen).
    pub vcpus: u32,
    /// A file for the xl config's `ramdisk` (xen, xen-pvh only): a PV guest's initrd, a PVH
    /// guest's module 0 in `hvm_start_info`'s module list.
    pub ramdisk: Option<PathBuf>,
}

impl Guest {
    /// `elf` with the defaults: mode's memory, empty command line, one vCPU.
    pub fn new(elf: &Path) -> Self {
        Guest {
            elf: elf.to_path_buf(),
            memory_mib: None,
            cmdline: String::new(),
            vcpus: 1,
            ramdisk: None,
        }
    }
}

/// What the guest said through its exit protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// debug-exit 0x10 (QEMU status 33), or a domU that powered off.
    Pass,
    /// debug-exit 0x11 (QEMU status 35), or a domU that crashed or ended otherwise; says which.
    Fail(String),
}

/// One finished boot.
#[derive(Clone, Debug, PartialEq)]
pub struct Boot {
    /// The guest's output: serial (native), the domU's console log (xen), Xen's and the
    /// guest's serial output (xen-dom0). CR stripped.
    pub log: String,
    /// The verdict of the guest's exit protocol.
    pub exit: Exit,
    /// How the guest ended, e.g. `qemu status 33` or `shutdown reason 0 (poweroff)`.
    pub ending: String,
    /// Seconds the guest ran (QEMU run, or `xl create -F` inside dom0).
    pub seconds: f64,
}

/// The Xen cache shared by every command (and every worktree that links it): `PVOPS_XEN_CACHE`
/// if set, else `<pvops checkout>/target/xen`.
pub fn xen_cache() -> PathBuf {
    std::env::var_os("PVOPS_XEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/xen"))
}

/// The hypervisor and dom0, built and cached on first use (prints progress); prepared once per
/// process.
pub fn xen_env() -> Res<xen::XenEnv> {
    static ENV: std::sync::OnceLock<xen::XenEnv> = std::sync::OnceLock::new();
    if let Some(env) = ENV.get() {
        return Ok(env.clone());
    }
    let env = step(
        "xen: hypervisor with PV32 + dom0 (first run builds, a few minutes)",
        || xen::prepare(&xen_cache()).map_err(HarnessError),
    )?;
    Ok(ENV.get_or_init(|| env).clone())
}

/// Boots each guest in `mode` and returns one result per guest, in order. All Xen domUs share
/// ONE QEMU boot of Xen + dom0 (`xl create` one after the other). `echo` copies native serial
/// output to stdout as it arrives. `Err` is a harness failure of the whole run; a per-guest
/// `Err` is a harness failure of that guest (it never reported an exit).
pub fn boot(mode: Mode, guests: &[Guest], echo: bool) -> Res<Vec<Result<Boot, String>>> {
    for g in guests {
        if g.ramdisk.is_some() && !matches!(mode, Mode::Xen | Mode::XenPvh) {
            return Err(HarnessError(format!(
                "{}: a ramdisk is for xen and xen-pvh domUs only",
                mode.name()
            )));
        }
        if g.vcpus == 0 {
            return Err(HarnessError(format!(
                "{}: --vcpus must be at least 1",
                mode.name()
            )));
        }
        if !g.elf.is_file() {
            return Err(HarnessError(format!(
                "{}: kernel {} does not exist",
                mode.name(),
                g.elf.display()
            )));
        }
    }
    let memory = |g: &Guest| g.memory_mib.unwrap_or(mode.default_memory());
    let timeout = mode.timeout(guests.len());
    match mode {
        Mode::Native => {
            static QEMU_CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
            if QEMU_CHECKED.get().is_none() {
                step("qemu-system-x86 present", native::ensure_qemu)?;
                let _ = QEMU_CHECKED.set(());
            }
            Ok(guests
                .iter()
                .map(|g| {
                    let run = native::boot_smp(
                        &g.elf,
                        memory(g),
                        g.cmdline.trim(),
                        g.vcpus,
                        echo,
                        timeout,
                    )
                    .map_err(|e| e.to_string())?;
                    Ok(Boot {
                        exit: debug_exit(run.status).map_err(|e| with_tail(e, &run.log))?,
                        ending: format!("qemu status {:?}", run.status),
                        log: run.log,
                        seconds: run.seconds,
                    })
                })
                .collect())
        }
        Mode::XenDom0 => {
            let env = xen_env()?;
            Ok(guests
                .iter()
                .map(|g| {
                    let mut opts = xen::BootOptions::new(timeout);
                    opts.cpus = g.vcpus;
                    let o = xen::run_dom0_with(&env, &g.elf, memory(g), g.cmdline.trim(), &opts)?;
                    Ok(Boot {
                        exit: debug_exit(o.qemu_status).map_err(|e| with_tail(e, &o.serial_log))?,
                        ending: format!("qemu status {:?}", o.qemu_status),
                        log: o.serial_log,
                        seconds: o.seconds,
                    })
                })
                .collect())
        }
        Mode::Xen | Mode::XenPvh => {
            let domus: Vec<(Mode, Guest)> = guests.iter().map(|g| (mode, g.clone())).collect();
            boot_domus(&domus)
        }
    }
}

/// Boots Xen domUs of both kinds (PV for [`Mode::Xen`], PVH for [`Mode::XenPvh`]) in ONE QEMU
/// boot of Xen + dom0, `xl create` one after the other; one result per guest, in order.
pub fn boot_domus(guests: &[(Mode, Guest)]) -> Res<Vec<Result<Boot, String>>> {
    let mut specs = Vec::new();
    for (i, (mode, g)) in guests.iter().enumerate() {
        let kind = match mode {
            Mode::Xen => xen::GuestKind::Pv,
            Mode::XenPvh => xen::GuestKind::Pvh,
            other => {
                return Err(HarnessError(format!(
                    "{} is not a domU mode (xen, xen-pvh)",
                    other.name()
                )))
            }
        };
        if g.vcpus == 0 || !g.elf.is_file() {
            return Err(HarnessError(format!(
                "{}: kernel {} does not exist or --vcpus is 0",
                mode.name(),
                g.elf.display()
            )));
        }
        specs.push(xen::DomuSpec {
            name: domu_name(&g.elf, i, guests.len()),
            kind,
            elf: g.elf.clone(),
            memory_mib: g.memory_mib.unwrap_or(mode.default_memory()),
            cmdline: g.cmdline.trim().to_string(),
            vcpus: g.vcpus,
            ramdisk: g.ramdisk.clone(),
        });
    }
    let env = xen_env()?;
    let outcomes =
        xen::run_domus(&env, &specs, Mode::Xen.timeout(specs.len())).map_err(HarnessError)?;
    Ok(outcomes.into_iter().map(domu_boot).collect())
}

/// `e` with the last lines of the guest's output (a harness error must show what the guest said).
fn with_tail(e: String, log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "{e}; last output:\n{}",
        lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..].join("\n")
    )
}

/// The verdict of QEMU's exit status: pvops's debug-exit values, or a harness error when the
/// guest did not end through the debug-exit port.
fn debug_exit(status: Option<i32>) -> Result<Exit, String> {
    match status {
        Some(QEMU_STATUS_PASS) => Ok(Exit::Pass),
        Some(QEMU_STATUS_FAIL) => Ok(Exit::Fail(
            "the guest wrote FAIL (0x11) to the debug-exit port".into(),
        )),
        Some(s) if s & 1 == 1 && s > 1 => Ok(Exit::Fail(format!(
            "the guest wrote {:#x} to the debug-exit port (pvops's PASS is 0x10)",
            s >> 1
        ))),
        other => Err(format!(
            "qemu ended with status {other:?}, not through the isa-debug-exit port \
             (the guest never reported PASS or FAIL)"
        )),
    }
}

/// The verdict of a domU's shutdown reason: poweroff is PASS, any other shutdown FAIL, no
/// shutdown at all (xl failed, time limit) a harness error.
fn domu_boot(o: xen::DomuOutcome) -> Result<Boot, String> {
    let seconds = o.seconds.unwrap_or(0.0);
    match (o.shutdown_reason, &o.error) {
        (Some(r), None) => Ok(Boot {
            exit: if r == SHUTDOWN_POWEROFF {
                Exit::Pass
            } else {
                Exit::Fail(format!(
                    "the domU shut down with reason {r} ({}), not poweroff",
                    reason_name(r)
                ))
            },
            ending: format!("shutdown reason {r} ({})", reason_name(r)),
            log: o.console_log,
            seconds,
        }),
        (_, Some(e)) => Err(format!("domU {}: {e}", o.name)),
        (None, None) => Err(format!("domU {}: no shutdown reason reported", o.name)),
    }
}

/// Xen's name of a shutdown reason code.
pub fn reason_name(r: u32) -> &'static str {
    match r {
        0 => "poweroff",
        1 => "reboot",
        2 => "suspend",
        3 => "crash",
        4 => "watchdog",
        5 => "soft_reset",
        _ => "unknown",
    }
}

/// A valid xl domain name from the kernel's file name (`[A-Za-z0-9_.-]`, at most 40 bytes).
fn domu_name(elf: &Path, index: usize, count: usize) -> String {
    let stem = elf
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if name.is_empty() || name.starts_with('-') {
        name.insert_str(0, "kernel");
    }
    if count > 1 {
        name.push_str(&format!("-{index}"));
    }
    name
}

/// Arguments of `cargo xtask run` and `pvops-run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    /// Where to boot.
    pub mode: Mode,
    /// The kernel and its options.
    pub guest: Guest,
}

/// Usage of the runner (shared by `cargo xtask run --help` and `pvops-run --help`).
pub const RUN_USAGE: &str = "\
<ELF> [native|xen|xen-dom0|xen-pvh] [--memory MIB] [--cmdline \"OPTS\"] [--vcpus N]

Boots any pvops kernel ELF and prints its serial (native) or console (xen) log:
  native     qemu-system-i386 -kernel (multiboot1) with isa-debug-exit (the default)
  xen        Xen 4.17 (PV32) under QEMU -> Linux dom0 -> xl create the ELF as a PV domU
  xen-dom0   the ELF itself as Xen's dom0 (about a second; a test fast path)
  xen-pvh    Xen 4.17 under QEMU -> Linux dom0 -> xl create the ELF as a PVH domU
--memory MIB      native: QEMU -m (default 128); xen: domU memory (default 64);
                  xen-dom0: dom0 memory (default 64)
--cmdline \"OPTS\"  the guest's command line
--vcpus N         native, xen-dom0: QEMU -smp N; xen, xen-pvh: the domU's vcpus
                  (default 1)
The mode may also come from PVOPS_RUN_MODE (the argument wins).
PASS/FAIL come from the guest's exit protocol: QEMU's isa-debug-exit status (33 PASS,
35 FAIL) on native and xen-dom0, the domU's shutdown reason under xen and xen-pvh
(poweroff PASS, crash or any other reason FAIL). Xen and the dom0 are built and cached as for
`cargo xtask demo` (first run ~2-3 minutes, then seconds; cache in target/xen of the pvops
checkout, or PVOPS_XEN_CACHE).
Exit status: 0 PASS, 1 FAIL, 2 harness error (no exit reported, timeout, tool failure).";

/// Parses `<ELF> [mode] [--memory MIB] [--cmdline OPTS] [--vcpus N]` (any order after the ELF;
/// cargo's runner protocol puts the ELF first and `cargo run -- ARGS` after it).
pub fn parse_run_args(args: &[String]) -> Res<RunArgs> {
    let usage = || format!("usage: {RUN_USAGE}");
    let mut elf = None;
    let mut mode = None;
    let mut memory = None;
    let mut cmdline = String::new();
    let mut vcpus = 1;
    let mut it = args.iter();
    let number = |flag: &str, v: Option<&String>| -> Res<u32> {
        let v = v.ok_or_else(|| HarnessError(format!("{flag} needs a value\n\n{}", usage())))?;
        v.parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| HarnessError(format!("{flag}: `{v}` is not a positive number")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--memory" => memory = Some(number("--memory", it.next())?),
            "--vcpus" => vcpus = number("--vcpus", it.next())?,
            "--cmdline" => {
                cmdline = it
                    .next()
                    .ok_or_else(|| HarnessError(format!("--cmdline needs a value\n\n{}", usage())))?
                    .clone()
            }
            m if Mode::parse(m).is_some() && elf.is_some() => mode = Mode::parse(m),
            other if other.starts_with('-') => {
                return Err(HarnessError(format!(
                    "unknown option `{other}`\n\n{}",
                    usage()
                )))
            }
            path if elf.is_none() => elf = Some(PathBuf::from(path)),
            other => {
                return Err(HarnessError(format!(
                    "unknown argument `{other}` (modes: native, xen, xen-dom0, xen-pvh)\n\n{}",
                    usage()
                )))
            }
        }
    }
    let elf = elf.ok_or_else(|| HarnessError(format!("no kernel ELF given\n\n{}", usage())))?;
    let mode = match mode {
        Some(m) => m,
        None => match std::env::var("PVOPS_RUN_MODE") {
            Ok(m) if !m.is_empty() => Mode::parse(&m).ok_or_else(|| {
                HarnessError(format!(
                    "PVOPS_RUN_MODE=`{m}` is not a mode (native, xen, xen-dom0, xen-pvh)"
                ))
            })?,
            _ => Mode::Native,
        },
    };
    Ok(RunArgs {
        mode,
        guest: Guest {
            elf,
            memory_mib: memory,
            cmdline,
            vcpus,
            ramdisk: None,
        },
    })
}

/// Boots one kernel as the runner does: prints its log to stdout and one verdict line to
/// stderr. `Ok(true)` PASS, `Ok(false)` FAIL, `Err` harness error.
pub fn run_one(a: &RunArgs) -> Res<bool> {
    let g = &a.guest;
    eprintln!(
        "==> {}: {} ({} MiB, {} vCPU{}{})",
        a.mode.name(),
        g.elf.display(),
        g.memory_mib.unwrap_or(a.mode.default_memory()),
        g.vcpus,
        if g.vcpus == 1 { "" } else { "s" },
        if g.cmdline.trim().is_empty() {
            String::new()
        } else {
            format!(", cmdline \"{}\"", g.cmdline.trim())
        }
    );
    let echo = a.mode == Mode::Native;
    let result = boot(a.mode, std::slice::from_ref(g), echo)?
        .into_iter()
        .next()
        .ok_or_else(|| HarnessError("no result".into()))?;
    let b = result.map_err(|e| HarnessError(format!("{}: {e}", a.mode.name())))?;
    if !echo {
        for line in b.log.lines() {
            println!("{line}");
        }
    }
    match &b.exit {
        Exit::Pass => eprintln!(
            "    {}: PASS ({}, {:.1}s)",
            a.mode.name(),
            b.ending,
            b.seconds
        ),
        Exit::Fail(why) => eprintln!("    {}: FAIL: {why} ({:.1}s)", a.mode.name(), b.seconds),
    }
    Ok(b.exit == Exit::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runner_arguments() {
        let a = parse_run_args(&args(&[
            "k.elf",
            "xen",
            "--memory",
            "512",
            "--cmdline",
            "a=1 b",
            "--vcpus",
            "2",
        ]))
        .unwrap();
        assert_eq!(a.mode, Mode::Xen);
        assert_eq!(a.guest.elf, PathBuf::from("k.elf"));
        assert_eq!(a.guest.memory_mib, Some(512));
        assert_eq!(a.guest.cmdline, "a=1 b");
        assert_eq!(a.guest.vcpus, 2);
        assert!(parse_run_args(&args(&["k.elf", "--memory", "0"])).is_err());
        assert!(parse_run_args(&args(&["k.elf", "bogus"])).is_err());
        assert!(parse_run_args(&args(&["--vcpus"])).is_err());
        assert!(parse_run_args(&args(&[])).is_err());
    }

    #[test]
    fn exit_protocols() {
        assert_eq!(debug_exit(Some(33)), Ok(Exit::Pass));
        assert!(matches!(debug_exit(Some(35)), Ok(Exit::Fail(_))));
        assert!(debug_exit(Some(0)).is_err());
        assert!(debug_exit(None).is_err());
        let o = |r: Option<u32>, e: Option<&str>| xen::DomuOutcome {
            name: "k".into(),
            shutdown_reason: r,
            error: e.map(String::from),
            ..Default::default()
        };
        assert_eq!(domu_boot(o(Some(0), None)).unwrap().exit, Exit::Pass);
        assert!(matches!(
            domu_boot(o(Some(3), None)).unwrap().exit,
            Exit::Fail(_)
        ));
        assert!(matches!(
            domu_boot(o(Some(1), None)).unwrap().exit,
            Exit::Fail(_)
        ));
        assert!(domu_boot(o(None, Some("xl create failed"))).is_err());
        assert!(domu_boot(o(None, None)).is_err());
    }

    #[test]
    fn domain_names_are_valid() {
        assert_eq!(domu_name(Path::new("/a/my kernel.elf"), 0, 1), "my_kernel");
        assert_eq!(domu_name(Path::new("/a/-x"), 2, 3), "kernel-x-2");
        assert_eq!(
            domu_name(Path::new("/a/guest-demo.elf"), 0, 1),
            "guest-demo"
        );
    }
}

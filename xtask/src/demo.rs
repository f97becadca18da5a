//! `cargo xtask demo`: boots guest-demo in the modes asked for and judges each boot by its
//! exit and its result line; also the result-line parser the test command shares.

use crate::{cmd_build, Verdict, TAG, USAGE};
use std::path::{Path, PathBuf};
use util::{HarnessError, Res};
use xtask::harness::{self, Boot, Exit, Guest, Mode};
use xtask::{native, util};

/// The guest's result line, found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GuestLine {
    /// `<tag>: PASS ...`
    Pass(String),
    /// `<tag>: FAIL ...`
    Fail(String),
}

/// The guest's result line for `mode`'s backend and platform:
/// `<tag>: PASS|FAIL backend=<backend> platform=<platform> ...`.
pub(crate) fn find_result(log: &str, tag: &str, mode: Mode) -> Option<GuestLine> {
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

pub(crate) fn cmd_demo(args: &[String]) -> Res<Verdict> {
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
pub(crate) fn native_loaded_boot(b: &native::NativeBoot<'_>, echo: bool) -> Res<Boot> {
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
pub(crate) fn check_modules(log: &str, modules: &[PathBuf]) -> Result<String, String> {
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

//! The guest boots `cargo xtask test` checks: a case (memory, command line, loader, modules,
//! what it must print) and the judges of its log (result line, reserved ranges, misuse stage).

use crate::demo::{check_modules, find_result, native_loaded_boot, GuestLine};
use crate::TAG;
use std::path::{Path, PathBuf};
use xtask::harness::{self, Boot, Exit, Guest, Mode};
use xtask::{native, util};

/// One guest boot the test command checks.
pub(super) struct BootCase {
    pub(super) name: String,
    memory: u32,
    cmdline: String,
    expect: Expect,
    /// Native only: who loads the image.
    bootloader: native::Bootloader,
    /// Files passed as modules: native multiboot modules (through `bootloader`), or a Xen
    /// domU's one xl `ramdisk` ([`BootCase::with_module`]). Whatever the loader, each needs
    /// its `mem: reserved .. module` range and the guest's `module <i>:` line, compared with
    /// the file by [`check_modules`].
    modules: Vec<PathBuf>,
    /// Lines the log must also hold (e.g. a self-test's), each a substring of one line.
    requires: Vec<&'static str>,
    /// The run of the misuse fixture this PASS records ([`crate::fixture::RUNS`]).
    fixture: Option<&'static str>,
    /// The boot runs the differential test (`demo.difftest=`): its records are replayed on
    /// the model and must agree.
    difftest: bool,
    /// The image to boot instead of the release guest-demo (its debug build).
    image: Option<PathBuf>,
}

/// Logs of the passing boots the misuse fixture is recorded from: (run, log).
pub(super) static FIXTURE_LOGS: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

pub(super) enum Expect {
    /// PASS.
    Pass,
    /// FAIL whose line contains all of these.
    Fail(Vec<&'static str>),
}

impl BootCase {
    pub(super) fn new(name: &str, memory: u32, cmdline: &str, expect: Expect) -> Self {
        BootCase {
            name: name.into(),
            memory,
            cmdline: cmdline.into(),
            expect,
            bootloader: native::Bootloader::Qemu,
            modules: Vec::new(),
            requires: Vec::new(),
            fixture: None,
            difftest: false,
            image: None,
        }
    }
    /// Boots `elf` (e.g. guest-demo's debug build) instead of the ELF the boot is given.
    pub(super) fn booting(mut self, elf: &Path) -> Self {
        self.image = Some(elf.to_path_buf());
        self
    }
    /// The ELF this case boots: its own image, else `elf`.
    fn elf<'a>(&'a self, elf: &'a Path) -> &'a Path {
        self.image.as_deref().unwrap_or(elf)
    }
    /// Its PASS log records run `run` of the misuse fixture.
    pub(super) fn recording(mut self, run: &'static str) -> Self {
        self.fixture = Some(run);
        self
    }
    /// Its log holds differential-test records to replay on the model (see
    /// [`BootCase::difftest`]).
    pub(super) fn comparing_with_the_model(mut self) -> Self {
        self.difftest = true;
        self
    }
    /// Native: boot through `bootloader` with `modules`.
    pub(super) fn loaded_by(mut self, bootloader: native::Bootloader, modules: &[PathBuf]) -> Self {
        self.bootloader = bootloader;
        self.modules = modules.to_vec();
        self
    }
    /// The log must also hold a line containing `line` (each call adds one).
    pub(super) fn requiring(mut self, line: &'static str) -> Self {
        self.requires.push(line);
        self
    }
    /// A Xen domU case booted with [`TEST_MODULE`] as its xl `ramdisk` (start_info
    /// `mod_start`/`mod_len` under PV, `hvm_start_info`'s module list under PVH).
    pub(super) fn with_module(mut self) -> Self {
        self.modules = vec![util::root().join(TEST_MODULE)];
        self
    }
    /// The guest this case boots through [`harness`] (a native case with modules boots
    /// through [`native::boot_with`] instead): a domU's module is its ramdisk.
    pub(super) fn guest(&self, elf: &Path) -> Guest {
        Guest {
            memory_mib: Some(self.memory),
            cmdline: self.cmdline.clone(),
            ramdisk: self.modules.first().cloned(),
            ..Guest::new(self.elf(elf))
        }
    }

    /// The exit protocol must say what the case expects, and the log must hold the result line.
    pub(super) fn judge(&self, boot: Result<Boot, String>, mode: Mode) -> Result<String, String> {
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
        let mut line = self
            .check(&b.log, mode)
            .map(|l| format!("{l} [{}, {:.1}s]", b.ending, b.seconds))?;
        if let (Some(run), true) = (self.fixture, want_pass) {
            if let Ok(mut logs) = FIXTURE_LOGS.lock() {
                logs.push((run.to_string(), b.log.clone()));
            }
        }
        if self.difftest {
            let name = format!("test-{}", mode.name());
            let o = crate::difftest::compare(&name, &b.log).map_err(|e| e.to_string())?;
            if !o.agreed {
                return Err(format!("{} (log in target/difftest/{name}.log)", o.summary));
            }
            line = format!("{} [{line}]", o.summary);
        }
        Ok(line)
    }

    fn check(&self, log: &str, mode: Mode) -> Result<String, String> {
        let backend = mode.backend();
        for want in &self.requires {
            if !log.lines().any(|l| l.contains(want)) {
                return Err(format!("no `{want}` line"));
            }
        }
        match (find_result(log, TAG, mode), &self.expect) {
            (Some(GuestLine::Pass(l)), Expect::Pass) => {
                let spaces = check_address_spaces(log)?;
                let m = check_misuse(log, backend)?;
                let r = check_reserved(log, mode.platform(), self.modules.len())?;
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
/// command line (and the module list, each module and its string); Xen PV start_info and the
/// p2m list, a domU also its console and xenstore rings (and the module); Xen PVH
/// hvm_start_info, its memory map and command line (and the module list and each module).
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
    // With modules: their list, and each one's name string (QEMU's -initrd and GRUB's
    // `module` both pass one); PVH always has its memory map and a command line (xl writes
    // one even when it is empty).
    match platform {
        "bare" if modules > 0 => want.push("multiboot module list"),
        "xen-pvh" => {
            want.extend(["memmap", "cmdline"]);
            if modules > 0 {
                want.push("modlist");
            }
        }
        _ => {}
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
    let strings = seen
        .iter()
        .filter(|s| *s == "multiboot module string")
        .count();
    if platform == "bare" && strings != modules {
        return Err(format!(
            "{strings} reserved module strings, {modules} modules passed"
        ));
    }
    Ok(format!("{} ranges reserved", seen.len()))
}

/// A PASS must have gone through the address_spaces stage whole (issue 10): its line ends
/// with `round_trips=10 map_rounds=50 frames_leaked=0`. Returns the line.
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

/// pvops's own refusals of bad operations on the live table a PASS must show (every
/// backend): the generic cases of `pvops-selftest` that are not skipped.
const MIN_PVOPS_REFUSALS: usize = 5;
/// Xen's own refusals (through the raw hypercall layer) a Xen PV PASS must show.
const MIN_XEN_REFUSALS: usize = 10;

/// A PASS must have gone through the misuse stage: every counted case drives a backend
/// operation (page tables, cr3, hypercalls, early_ioremap on the live table); at least
/// [`MIN_PVOPS_REFUSALS`] of pvops's refusals on every backend and, under Xen PV, at least
/// [`MIN_XEN_REFUSALS`] of Xen's. Skipped cases are reported, never counted; the stage
/// line's `cases=` must be the refused plus the allowed ones.
fn check_misuse(log: &str, backend: &str) -> Result<String, String> {
    let Some(stage) = log.lines().find(|l| l.contains("stage misuse ok")) else {
        return Err("no `stage misuse ok` line".into());
    };
    let count = |what: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("PVOPS-MISUSE: {what} ")))
            .count()
    };
    let (allowed, skipped) = (count("allowed"), count("skipped"));
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("PVOPS-MISUSE: rejected "))
        .collect();
    let xen = rejected.iter().filter(|l| l.contains(": xen ")).count();
    let pvops = rejected.iter().filter(|l| l.contains(": pvops ")).count();
    let field = |k: &str| {
        stage
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.parse::<usize>().ok())
    };
    if field("cases=") != Some(rejected.len() + allowed) || field("skipped=") != Some(skipped) {
        return Err(format!(
            "`{}` does not match its {} rejected, {allowed} allowed and {skipped} skipped lines",
            stage.trim(),
            rejected.len()
        ));
    }
    if pvops < MIN_PVOPS_REFUSALS {
        return Err(format!(
            "only {pvops} of pvops's refusals on the live table (at least {MIN_PVOPS_REFUSALS})"
        ));
    }
    if backend == "xen" && xen < MIN_XEN_REFUSALS {
        return Err(format!(
            "misuse under Xen: only {xen} of Xen's refusals (at least {MIN_XEN_REFUSALS})"
        ));
    }
    Ok(format!(
        "misuse: {} rejected ({xen} by xen, {pvops} by pvops), {allowed} allowed, {skipped} skipped (not counted)",
        rejected.len()
    ))
}

/// A module whose length is not a page multiple and whose bytes are not all alike, so a
/// wrong length, offset or page shows in the module line.
pub(super) fn test_module_bytes() -> Vec<u8> {
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

/// The module file every module case boots with ([`test_module_bytes`]; native: a multiboot
/// module, Xen domUs: the xl `ramdisk`), under the checkout.
pub(super) const TEST_MODULE: &str = "target/test-module.bin";

/// The tag of the example kernel's result lines.
pub(super) const MINIMAL_TAG: &str = "MINIMAL-KERNEL";

/// `Ok(line)` when the boot PASSed through its exit protocol and the log holds
/// `<tag>: PASS backend=<backend>`.
pub(super) fn expect_pass(b: &Boot, tag: &str, mode: Mode) -> Result<String, String> {
    match (find_result(&b.log, tag, mode), &b.exit) {
        (Some(GuestLine::Pass(l)), Exit::Pass) => Ok(format!("{l} [{}]", b.ending)),
        (Some(GuestLine::Pass(l)), exit) => Err(format!("{l} but the exit says {exit:?}")),
        (Some(GuestLine::Fail(l)), _) => Err(format!("unexpected result: {l}")),
        (None, _) => Err(format!("no {tag} result line ({})", b.ending)),
    }
}

/// What examples/minimal-kernel (built without the bug re-creation features) answers to a
/// 2008 switch: it refuses it before the boot path.
pub(super) const NOT_BUILT_IN: [&str; 2] = ["stage=banner", "built without"];

/// Boots `elf` with `cmdline`; `Ok(line)` when it FAILed through its exit protocol with a
/// `<tag>: FAIL` line holding every needle.
pub(super) fn expect_refusal(
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

/// Boots one test case through the harness and judges it (a native case with GRUB or modules
/// through [`native::boot_with`]).
pub(super) fn boot_case(mode: Mode, elf: &Path, c: &BootCase) -> Result<String, String> {
    if mode == Mode::Native && (c.bootloader != native::Bootloader::Qemu || !c.modules.is_empty()) {
        let b = native::NativeBoot {
            elf: c.elf(elf),
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
pub(super) fn boot_one(mode: Mode, elf: &Path, memory: u32) -> Result<Boot, String> {
    let guest = Guest {
        memory_mib: Some(memory),
        ..Guest::new(elf)
    };
    harness::boot(mode, &[guest], false)
        .map_err(|e| e.to_string())
        .and_then(|mut v| v.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Xen PV domU's console log, booted by `xl create` with [`test_module_bytes`] as its
    /// `ramdisk` (a real run of this harness).
    const PV_DOMU_WITH_MODULE: &str = include_str!("testdata/xen-domu-module.log");

    /// The case of that boot, its module written to a file of its own.
    fn pv_module_case(name: &str) -> BootCase {
        let file = std::env::temp_dir().join(format!("pvops-{}-{name}.bin", std::process::id()));
        std::fs::write(&file, test_module_bytes()).expect("write the module file");
        let mut c = BootCase::new(name, 64, "", Expect::Pass).with_module();
        c.modules = vec![file];
        c
    }

    #[test]
    fn a_domu_modules_head_is_compared_with_the_file() {
        let c = pv_module_case("ok");
        let line = c
            .check(PV_DOMU_WITH_MODULE, Mode::Xen)
            .expect("the real log passes");
        assert!(
            line.contains("module 0: 5000 bytes, head 193e3ab51f37d0bf39b8eeb4d33cb85f"),
            "{line}"
        );
        // One byte of the head the guest read, changed: the case fails (it passed when only
        // the `mem: reserved module` range of a domU was checked).
        let c = pv_module_case("head");
        let wrong = PV_DOMU_WITH_MODULE.replace(
            "head 193e3ab51f37d0bf39b8eeb4d33cb85f",
            "head 193e3ab51f37d0bf39b8eeb4d33cb85e",
        );
        assert_ne!(wrong, PV_DOMU_WITH_MODULE);
        let e = c.check(&wrong, Mode::Xen).expect_err("a wrong head");
        assert!(e.contains("the file says"), "{e}");
        // The module line missing altogether.
        let c = pv_module_case("none");
        let none: String = PV_DOMU_WITH_MODULE
            .lines()
            .filter(|l| !l.starts_with("module 0:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = c.check(&none, Mode::Xen).expect_err("no module line");
        assert!(e.contains("no `module 0: ...` line"), "{e}");
        // The module's reserved range missing.
        let c = pv_module_case("range");
        let unreserved: String = PV_DOMU_WITH_MODULE
            .lines()
            .filter(|l| !l.starts_with("mem: reserved module "))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = c
            .check(&unreserved, Mode::Xen)
            .expect_err("no module range");
        assert!(
            e.contains("0 reserved module ranges, 1 modules passed"),
            "{e}"
        );
        for name in ["ok", "head", "none", "range"] {
            let _ = std::fs::remove_file(pv_module_case(name).modules[0].as_path());
        }
    }

    /// The reserved ranges of a PVH domU booted with a module, as it printed them (a
    /// `harness::boot_domus` run with `target/test-module.bin` as its ramdisk).
    const PVH_RESERVED: &str = "\
mem: reserved module pa=0x3b9000-0x3ba388
mem: reserved hvm_start_info pa=0x3bb000-0x3bb038
mem: reserved cmdline pa=0x3bb038-0x3bb039
mem: reserved modlist pa=0x3bb040-0x3bb060
mem: reserved memmap pa=0x3bb880-0x3bb8f8
";

    #[test]
    fn every_structure_of_the_loader_must_be_reserved() {
        assert_eq!(
            check_reserved(PVH_RESERVED, "xen-pvh", 1),
            Ok("5 ranges reserved".into())
        );
        for gone in ["modlist", "memmap", "cmdline"] {
            let log: String = PVH_RESERVED
                .lines()
                .filter(|l| !l.contains(&format!(" {gone} pa=")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(
                check_reserved(&log, "xen-pvh", 1),
                Err(format!("no `mem: reserved {gone} pa=..` line")),
            );
        }
        // A native boot with one module (`cargo xtask demo native --module
        // target/test-module.bin`: the lines QEMU's loader gave).
        let native = "\
mem: reserved multiboot mmap pa=0x9000-0x9090
mem: reserved multiboot info pa=0x9500-0x9574
mem: reserved multiboot module list pa=0x3b9000-0x3b9010
mem: reserved multiboot module string pa=0x3b9010-0x3b9027
mem: reserved multiboot cmdline pa=0x3b9027-0x3b904d
mem: reserved multiboot module pa=0x3ba000-0x3bb388
";
        assert_eq!(
            check_reserved(native, "bare", 1),
            Ok("6 ranges reserved".into())
        );
        let no_string: String = native
            .lines()
            .filter(|l| !l.contains("module string"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            check_reserved(&no_string, "bare", 1),
            Err("0 reserved module strings, 1 modules passed".into())
        );
    }

    #[test]
    fn a_case_with_a_module_boots_it_as_the_domus_ramdisk() {
        let c = BootCase::new("m", 64, "", Expect::Pass).with_module();
        let g = c.guest(Path::new("k.elf"));
        assert_eq!(g.ramdisk, Some(util::root().join(TEST_MODULE)));
        let g = BootCase::new("n", 64, "", Expect::Pass).guest(Path::new("k.elf"));
        assert_eq!(g.ramdisk, None);
    }
}

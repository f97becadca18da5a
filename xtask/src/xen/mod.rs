//! Xen test harness for xtask: builds a 32-bit-PV-capable Xen and a Linux dom0 from Debian's
//! archive and boots guests on them under QEMU (TCG).
//!
//! Debian's own hypervisor is built without `CONFIG_PV32`, so [`prepare`] builds the hypervisor
//! from Debian's Xen source package with `CONFIG_PV32=y` and packs a small dom0 initramfs from
//! Debian's Xen tool and kernel packages (unpacked, never installed). Two ways to boot a guest:
//!
//! * [`run_dom0`]: the guest ELF *is* dom0 (about a second per run; no toolstack).
//! * [`run_domus`]: Linux dom0 + `xl create -F` for each guest, all in one QEMU boot; the dom0
//!   relays each domU's console log back over the serial line between `@@XH` marker lines.
//!
//! Everything lives under the cache directory given to [`prepare`]:
//! `apt/` (private apt state), `debs/` (downloaded dom0 packages), `hypervisor/<version>-<key>/xen`
//! (key = version + config fragment + compiler), `dom0/<version>-<kernel>-<key>/{vmlinux,dom0.cpio}`
//! (key = version + kernel + init script), `logs/`, `tmp/` (scratch, removed after use) and
//! `resolved.txt` (the versions picked from the archive, reused for up to a week).
//! Only the standard library is used; every failure is returned as an `Err` naming the step.
//!
//! The parts: `debian` (host packages, private apt state, version resolution), `hypervisor`
//! (the PV32 build), `dom0` (kernel and initramfs), `cpio` (the newc writer), `cache` (layout,
//! lock, scratch directories), `job` (input checks, the per-run job archive), `qemu` (a bounded
//! QEMU run), `relay` (dom0's `@@XH` lines to outcomes), `util` (commands, files, hashing).

// The API is wider than any one xtask command uses (e.g. the `_with` variants).
#![allow(dead_code)]

mod cache;
mod cpio;
mod debian;
mod dom0;
mod hypervisor;
mod job;
mod qemu;
mod relay;
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cache::{link_into, lock_cache, Layout, ScratchDir};
use debian::{ensure_host_packages, resolve_versions};
use dom0::ensure_dom0;
use hypervisor::ensure_hypervisor;
use job::{
    check_cmdline, check_elf, check_env, domu_qemu_args, qemu_mem_for_domus, validate_specs,
    write_job_initrd,
};
use qemu::{clean_serial, module_arg, qemu_args, run_qemu};
use relay::parse_relay;
use util::tail_lines;

// Constants shared by more than one part of the harness.
const XEN_SOURCE_PACKAGE: &str = "xen";
/// Appended to Debian's `debian/xen-kconfig` (defconfig + CONFIG_DEBUG=n).
const XEN_CONFIG_FRAGMENT: &str = "CONFIG_PV32=y\n";
/// The dom0 `/init` template (placeholders `@NAME@` are filled in by [`dom0::render_init`]).
const DOM0_INIT_TEMPLATE: &str = include_str!("../../assets/xen/dom0-init.sh");
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Xen command-line options shared by both paths (`bootscrub=false`: no point under TCG).
const XEN_BASE_OPTIONS: &str = "console=com1 bootscrub=false";
/// QEMU `-m` for the dom0 path: dom0_mem + this, at least [`QEMU_MIN_DOM0_PATH_MIB`].
const QEMU_DOM0_PATH_HEADROOM_MIB: u32 = 128;
const QEMU_MIN_DOM0_PATH_MIB: u32 = 256;
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// What the dom0 init reports as xl's status when `xl create -F` never returned.
const XL_HUNG_STATUS: i32 = 999;
/// Lower bound of a fair-share domU time limit inside dom0 (centiseconds).
const MIN_DOMU_CS: u64 = 1000;
const MAX_DOMU_MEMORY_MIB: u32 = 64 * 1024;
const MIN_DOM0_MEM_MIB: u32 = 4;
/// Most vCPUs a guest may ask for (QEMU's `-smp` and a domU's `vcpus`).
const MAX_VCPUS: u32 = 128;
/// Serial lines quoted in an error message.
const ERROR_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Everything needed to boot Xen under QEMU. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenEnv {
    /// The hypervisor (`xen/xen`, a multiboot ELF for QEMU's `-kernel`), built with CONFIG_PV32=y.
    pub xen: PathBuf,
    /// The dom0 Linux kernel (ELF vmlinux, or the bzImage if it could not be unpacked).
    pub dom0_kernel: PathBuf,
    /// The dom0 initramfs (newc cpio) holding busybox, the Xen toolstack and `/init`.
    pub dom0_initrd: PathBuf,
    /// Debian version of the Xen source the hypervisor and tools come from.
    pub version: String,
}

/// Install missing host packages, resolve the Xen version from Debian's archive (private apt
/// state), build the hypervisor with CONFIG_PV32=y and the dom0 initramfs (both cached under
/// `cache`, e.g. `<workspace>/target/xen`). Prints each step with its duration to stderr.
/// With a warm cache this takes a second or two and needs no network.
pub fn prepare(cache: &Path) -> Result<XenEnv, String> {
    let total = Instant::now();
    fs::create_dir_all(cache)
        .map_err(|e| format!("xen: cannot create {}: {e}", cache.display()))?;
    let root = fs::canonicalize(cache)
        .map_err(|e| format!("xen: cannot resolve {}: {e}", cache.display()))?;
    let _lock = lock_cache(&root)?;
    ensure_host_packages(&root.join("logs"))?;
    let layout = Layout::new(root)?;
    let resolved = resolve_versions(&layout)?;
    let xen = ensure_hypervisor(&layout, &resolved)?;
    let (dom0_kernel, dom0_initrd) = ensure_dom0(&layout, &resolved)?;
    eprintln!("xen: ready in {:.1}s", total.elapsed().as_secs_f64());
    Ok(XenEnv {
        xen,
        dom0_kernel,
        dom0_initrd,
        version: resolved.xen_version,
    })
}

/// How `xl create` starts a domU (its `type =`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuestKind {
    /// `type = "pv"`: a 32-bit PAE PV guest (XEN_ELFNOTE_ENTRY, ring 1).
    #[default]
    Pv,
    /// `type = "pvh"`: an HVM container entered at XEN_ELFNOTE_PHYS32_ENTRY, paging off.
    Pvh,
}

impl GuestKind {
    /// The xl config's `type` value.
    pub fn xl_type(self) -> &'static str {
        match self {
            GuestKind::Pv => "pv",
            GuestKind::Pvh => "pvh",
        }
    }
}

/// One domU to start with `xl create -F`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomuSpec {
    /// Domain name: 1–48 characters of `[A-Za-z0-9_.-]`, unique within one run.
    pub name: String,
    /// PV or PVH.
    pub kind: GuestKind,
    /// The kernel ELF (32-bit PAE PV notes for `Pv`, a PHYS32_ENTRY note for `Pvh`).
    pub elf: PathBuf,
    /// `memory =` in the xl config.
    pub memory_mib: u32,
    /// The guest's command line (printable ASCII, at most 1023 bytes).
    pub cmdline: String,
    /// `vcpus =` in the xl config (1 to 128; Xen time-shares them on QEMU's one CPU).
    pub vcpus: u32,
    /// A file for xl's `ramdisk =`: a PV guest's initrd (`start_info.mod_start`), a PVH
    /// guest's module 0 in `hvm_start_info`'s module list.
    pub ramdisk: Option<PathBuf>,
}

/// What became of one domU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomuOutcome {
    /// The spec's name.
    pub name: String,
    /// The domU's whole console log (from xenconsoled's log file), CR stripped.
    pub console_log: String,
    /// "Domain N has shut down, reason code R" from `xl create -F`, if seen
    /// (0 poweroff, 1 reboot, 2 suspend, 3 crash, 4 watchdog).
    pub shutdown_reason: Option<u32>,
    /// Seconds the `xl create -F` took inside dom0, if known.
    pub seconds: Option<f64>,
    /// True when the domU did not shut down within its time limit and dom0 destroyed it.
    pub timed_out: bool,
    /// Output of `xl -v create -F` (and of `xl destroy` after a time-out), CR stripped.
    pub xl_log: String,
    /// Why this domU did not end with a shutdown reason, or what went wrong on the way:
    /// `xl create` failed (its message is quoted), the time limit hit, or the relay lost bytes.
    /// `None` when xl reported a shutdown and the console log arrived whole. A failing domU
    /// does not stop the later ones in the same run.
    pub error: Option<String>,
}

/// Knobs for a QEMU run beyond the timeout. `BootOptions::new(timeout)` gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// Bounds the whole QEMU run; on expiry QEMU is killed and an `Err` quotes the serial tail.
    pub timeout: Duration,
    /// Also copy the raw serial output to stderr as it arrives (the strings are returned anyway).
    pub stream: bool,
    /// `run_domus` only: time limit of each domU inside dom0 (at least 1 s), after which dom0
    /// runs `xl destroy` on it. `None` (default): each domU gets an equal share of what is left
    /// of `timeout` (minus ~15 s for Xen's boot and the final relay) when it starts, at least
    /// 10 s, so one hung domU cannot eat the time of the ones after it.
    pub domu_timeout: Option<Duration>,
    /// `run_dom0` only: QEMU `-smp` and Xen's `dom0_max_vcpus` (1 to 128; default 1). The domU
    /// path always runs QEMU with one CPU (a domU's `vcpus` are time-shared by Xen).
    pub cpus: u32,
}

impl BootOptions {
    /// Defaults: no streaming, fair-share domU limits.
    pub fn new(timeout: Duration) -> Self {
        BootOptions {
            timeout,
            stream: false,
            domu_timeout: None,
            cpus: 1,
        }
    }
}

/// ONE QEMU boot: Xen + Linux dom0, which runs `xl create -F` for each spec in order and relays
/// each console log back. QEMU's `-m` is sized from the largest domU. A domU that fails to start
/// or times out is reported in its [`DomuOutcome::error`]; `Err` means the run itself failed
/// (bad spec, QEMU or dom0 setup failure, timeout), with the tail of the serial log.
pub fn run_domus(
    env: &XenEnv,
    specs: &[DomuSpec],
    timeout: Duration,
) -> Result<Vec<DomuOutcome>, String> {
    run_domus_with(env, specs, &BootOptions::new(timeout))
}

/// [`run_domus`] with streaming and per-domU time limits (see [`BootOptions`]).
pub fn run_domus_with(
    env: &XenEnv,
    specs: &[DomuSpec],
    opts: &BootOptions,
) -> Result<Vec<DomuOutcome>, String> {
    validate_specs(specs)?;
    check_env(env)?;
    let scratch = ScratchDir::new("domus")?;
    let initrd = scratch.path().join("dom0.cpio");
    write_job_initrd(env, specs, opts, &initrd)?;
    let kernel = link_into(&scratch, &env.dom0_kernel, "vmlinux")?;
    let max_domu = specs.iter().map(|s| s.memory_mib).max().unwrap_or(0);
    let args = domu_qemu_args(env, &kernel, &initrd, qemu_mem_for_domus(max_domu));
    let run = run_qemu(&args, opts.timeout, opts.stream)?;
    let text = clean_serial(&run.serial, false);
    parse_relay(&text, specs).map_err(|e| {
        format!(
            "xen: run_domus: {e} (QEMU status {:?} after {:.1}s); serial tail:\n{}",
            run.status,
            run.seconds,
            tail_lines(&text, ERROR_TAIL_LINES)
        )
    })
}

/// Result of [`run_dom0`].
#[derive(Clone, Debug, PartialEq)]
pub struct Dom0Outcome {
    /// Everything on the serial line (Xen's and the guest's output), CR and ANSI escapes stripped.
    pub serial_log: String,
    /// QEMU's exit status: `(v << 1) | 1` after the guest wrote `v` to port 0xf4; `None` if
    /// QEMU was ended by a signal.
    pub qemu_status: Option<i32>,
    /// Wall-clock seconds of the QEMU run.
    pub seconds: f64,
}

/// Boot `elf` directly as dom0 (`-kernel xen -initrd "<elf> <cmdline>"` + isa-debug-exit).
/// The guest ends the run itself via the debug-exit port; when `timeout` expires first, QEMU
/// is killed and `Err` quotes the serial tail.
pub fn run_dom0(
    env: &XenEnv,
    elf: &Path,
    dom0_mem_mib: u32,
    cmdline: &str,
    timeout: Duration,
) -> Result<Dom0Outcome, String> {
    run_dom0_with(env, elf, dom0_mem_mib, cmdline, &BootOptions::new(timeout))
}

/// [`run_dom0`] with streaming (see [`BootOptions`]; `domu_timeout` is ignored).
pub fn run_dom0_with(
    env: &XenEnv,
    elf: &Path,
    dom0_mem_mib: u32,
    cmdline: &str,
    opts: &BootOptions,
) -> Result<Dom0Outcome, String> {
    check_env(env)?;
    check_elf(elf).map_err(|e| format!("xen: run_dom0: {e}"))?;
    check_cmdline(cmdline).map_err(|e| format!("xen: run_dom0: {e}"))?;
    if !(MIN_DOM0_MEM_MIB..=MAX_DOMU_MEMORY_MIB).contains(&dom0_mem_mib) {
        return Err(format!(
            "xen: run_dom0: dom0_mem {dom0_mem_mib} MiB is out of range"
        ));
    }
    let scratch = ScratchDir::new("dom0")?;
    let guest = link_into(&scratch, elf, "guest.elf")?;
    let mem = (dom0_mem_mib + QEMU_DOM0_PATH_HEADROOM_MIB).max(QEMU_MIN_DOM0_PATH_MIB);
    if !(1..=MAX_VCPUS).contains(&opts.cpus) {
        return Err(format!(
            "xen: run_dom0: {} CPUs is out of range (1-{MAX_VCPUS})",
            opts.cpus
        ));
    }
    let mut append = format!("{XEN_BASE_OPTIONS} dom0_mem={dom0_mem_mib}M,max:{dom0_mem_mib}M");
    if opts.cpus > 1 {
        append.push_str(&format!(" dom0_max_vcpus={}", opts.cpus));
    }
    let module = module_arg(&guest, cmdline)?;
    let args = qemu_args(&env.xen, &append, &module, mem, opts.cpus);
    let run = run_qemu(&args, opts.timeout, opts.stream)?;
    Ok(Dom0Outcome {
        serial_log: clean_serial(&run.serial, true),
        qemu_status: run.status,
        seconds: run.seconds,
    })
}

//! Xen test harness for xtask: builds a 32-bit-PV-capable Xen and a Linux dom0 from Debian's archive and boots guests on them under QEMU (TCG).
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

// The API is wider than any one xtask command uses (e.g. the `_with` variants).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/// Debian packages the harness runs or builds with.
const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "build-essential",
    "bison",
    "flex",
    "python3",
    "dpkg-dev",
    "xz-utils",
];
const QEMU: &str = "qemu-system-x86_64";
/// QEMU options of every run: TCG (KVM does not work here), one CPU, serial on stdio.
const QEMU_BASE_ARGS: &str = "-accel tcg -cpu qemu64 -smp 1 -no-reboot -nodefaults \
                              -display none -serial stdio -monitor none";
/// Mirror and suite used when the machine's apt sources do not name one.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_SUITE: &str = "bookworm";
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEB_ARCH: &str = "amd64";
const MULTIARCH: &str = "x86_64-linux-gnu";
const XEN_SOURCE_PACKAGE: &str = "xen";
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
/// Appended to Debian's `debian/xen-kconfig` (defconfig + CONFIG_DEBUG=n).
const XEN_CONFIG_FRAGMENT: &str = "CONFIG_PV32=y\n";
const XEN_CONFIG_CHECK: &str = "CONFIG_PV32=y";
/// How long a version resolved from the archive is reused before asking the archive again.
const RESOLVE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// apt/dpkg lock contention (e.g. an install running in the background): retry this often.
const APT_LOCK_RETRIES: u32 = 90;
const APT_LOCK_PAUSE: Duration = Duration::from_secs(10);

/// The dom0 `/init` template (placeholders `@NAME@` are filled in by [`render_init`]).
const DOM0_INIT_TEMPLATE: &str = include_str!("../assets/xen/dom0-init.sh");
/// Bump when the rules for what goes into the dom0 initramfs change (part of its cache key).
const DOM0_LAYOUT_VERSION: &str = "2";
/// Kernel modules dom0 needs, in `insmod` order (there is no modules.dep in the initramfs).
const DOM0_MODULES: &[&str] = &["xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev"];
/// Directories of the dom0 root file system (besides those holding files).
const DOM0_DIRS: &str = "bin sbin usr/bin usr/sbin dev proc sys run tmp etc root var/lib/xen \
                         var/lib/xenstored var/log/xen/console lib/modules lib64";
/// Binaries taken from `usr/lib/xen-<major.minor>/bin`.
const DOM0_XEN_TOOLS: &[&str] = &["xl", "xenstored", "xenconsoled", "xen-init-dom0"];
/// Xen tool packages (pinned to the hypervisor's version); `{mm}` = major.minor.
const DOM0_XEN_PACKAGES: &[&str] = &[
    "xen-utils-{mm}",
    "libxenmisc{mm}",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenstore4",
    "libxentoollog1",
    "libxendevicemodel1",
    "libxenhypfs1",
    "libxentoolcore1",
    "xenstore-utils",
];
/// Other dom0 packages (whatever version the archive has).
const DOM0_OTHER_PACKAGES: &[&str] = &["libyajl2", "busybox-static"];
/// glibc dlopens this at exit; without it `xl` aborts after the domU ran.
const LIBGCC_S: &str = "libgcc_s.so.1";
const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0];
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// dom0 memory in the `run_domus` path (Linux + toolstack in an initramfs).
const DOM0_MEM_MIB: u32 = 256;
const DOM0_LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen loglevel=4";
/// Xen command-line options shared by both paths (`bootscrub=false`: no point under TCG).
const XEN_BASE_OPTIONS: &str = "console=com1 bootscrub=false";
/// QEMU `-m` for the domU path: dom0 + largest domU + 1/8 of it + this, rounded up.
const QEMU_DOMU_HEADROOM_MIB: u32 = 64;
const QEMU_MEM_ROUND_MIB: u32 = 128;
const QEMU_MIN_MIB: u32 = 512;
/// QEMU `-m` for the dom0 path: dom0_mem + this, at least [`QEMU_MIN_DOM0_PATH_MIB`].
const QEMU_DOM0_PATH_HEADROOM_MIB: u32 = 128;
const QEMU_MIN_DOM0_PATH_MIB: u32 = 256;
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Values the dom0 init writes to the debug-exit port (QEMU exits with `(v << 1) | 1`).
const EXIT_DONE: u8 = 0x10;
const EXIT_FATAL: u8 = 0x11;
const EXIT_WATCHDOG: u8 = 0x12;
/// What the dom0 init reports as xl's status when `xl create -F` never returned.
const XL_HUNG_STATUS: i32 = 999;

/// Wall time from QEMU's start to dom0's kernel start (measured ~2 s), with margin: dom0's
/// watchdog fires at `timeout - XEN_BOOT_ALLOWANCE` of dom0 uptime, i.e. just before the
/// host would kill QEMU, so a run that overruns still ends with dom0's own report.
const XEN_BOOT_ALLOWANCE: Duration = Duration::from_secs(5);
/// Time kept, before dom0's watchdog, for relaying the last log and powering off.
const FINISH_ALLOWANCE: Duration = Duration::from_secs(10);
/// Lower bound of a fair-share domU time limit inside dom0 (centiseconds).
const MIN_DOMU_CS: u64 = 1000;
/// Lower bound of an explicit [`BootOptions::domu_timeout`] (centiseconds).
const MIN_EXPLICIT_DOMU_CS: u64 = 100;
/// Guest limits checked before a run.
const MAX_GUEST_CMDLINE: usize = 1023;
const MAX_DOMU_NAME: usize = 48;
const MAX_DOMU_MEMORY_MIB: u32 = 64 * 1024;
const MIN_DOM0_MEM_MIB: u32 = 4;
/// Serial lines quoted in an error message.
const ERROR_TAIL_LINES: usize = 60;
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const LOCK_POLL: Duration = Duration::from_millis(500);
const LOCK_PID_GRACE: Duration = Duration::from_secs(10);

/// Marker lines between dom0 and [`parse_relay`].
const MARK: &str = "@@XH ";

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
    step("checking host packages", ensure_host_packages)?;
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

/// One domU to start with `xl create -F`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomuSpec {
    /// Domain name: 1–48 characters of `[A-Za-z0-9_.-]`, unique within one run.
    pub name: String,
    /// The 32-bit PAE PV kernel ELF.
    pub elf: PathBuf,
    /// `memory =` in the xl config.
    pub memory_mib: u32,
    /// The guest's command line (printable ASCII, at most 1023 bytes).
    pub cmdline: String,
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
}

impl BootOptions {
    /// Defaults: no streaming, fair-share domU limits.
    pub fn new(timeout: Duration) -> Self {
        BootOptions {
            timeout,
            stream: false,
            domu_timeout: None,
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
    let append = format!("{XEN_BASE_OPTIONS} dom0_mem={dom0_mem_mib}M,max:{dom0_mem_mib}M");
    let module = module_arg(&guest, cmdline)?;
    let args = qemu_args(&env.xen, &append, &module, mem);
    let run = run_qemu(&args, opts.timeout, opts.stream)?;
    Ok(Dom0Outcome {
        serial_log: clean_serial(&run.serial, true),
        qemu_status: run.status,
        seconds: run.seconds,
    })
}

// ---------------------------------------------------------------------------------------------
// Steps, commands and small helpers
// ---------------------------------------------------------------------------------------------

/// Run `f`, printing "xen: what... done in N.Ns" around it.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    eprint!("xen: {what}... ");
    let start = Instant::now();
    let result = f();
    let secs = start.elapsed().as_secs_f64();
    match &result {
        Ok(_) => eprintln!("done in {secs:.1}s"),
        Err(_) => eprintln!("failed after {secs:.1}s"),
    }
    result
}

/// `prog arg arg...` for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion, returning its stdout; `Err` names `what` and quotes the output.
fn run_cmd(cmd: &mut Command, what: &str) -> Result<String, String> {
    run_with_stdin(cmd.stdin(Stdio::null()), what)
}

/// [`run_cmd`] for a command whose stdin the caller has set up.
fn run_with_stdin(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run `{}`: {e}", describe(cmd)))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(format!(
        "{what}: `{}` failed ({}):\n{}",
        describe(cmd),
        out.status,
        tail_lines(&text, 30)
    ))
}

/// Run a command with its output going to `log`; `Err` quotes the log's tail.
fn run_logged(cmd: &mut Command, what: &str, log: &Path) -> Result<(), String> {
    let file = fs::File::create(log).map_err(|e| format!("{what}: {}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| format!("{what}: {e}"))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|e| format!("{what}: cannot run `{}`: {e}", describe(cmd)))?;
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "{what}: `{}` failed ({status}); full log {}:\n{}",
        describe(cmd),
        log.display(),
        tail_lines(&text, 40)
    ))
}

/// Run an apt/dpkg command, retrying while another apt or dpkg holds a lock.
fn run_apt(mut make: impl FnMut() -> Command, what: &str, log: &Path) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        match run_logged(&mut make(), what, log) {
            Err(e) if attempt < APT_LOCK_RETRIES && is_lock_error(&e) => {
                if attempt == 0 {
                    eprint!("(waiting for the apt/dpkg lock) ");
                }
                attempt += 1;
                thread::sleep(APT_LOCK_PAUSE);
            }
            other => return other,
        }
    }
}

fn is_lock_error(message: &str) -> bool {
    message.contains("Could not get lock") || message.contains("Unable to lock")
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("xen: {what} {}: {e}", path.display())
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| io_err("cannot read", path, e))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    fs::write(path, data).map_err(|e| io_err("cannot write", path, e))
}

fn make_dir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| io_err("cannot create", path, e))
}

/// Remove a directory tree if it exists.
fn clear_dir(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("cannot remove", path, e)),
        _ => Ok(()),
    }
}

/// A fresh empty directory.
fn fresh_dir(path: &Path) -> Result<(), String> {
    clear_dir(path)?;
    make_dir(path)
}

/// FNV-1a, stable across Rust releases (unlike `DefaultHasher`): used for cache keys.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        h ^= 0xff; // separator, so ("ab","c") != ("a","bc")
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// A version string made safe for a file name.
fn path_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+.~-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// "4.17" from "4.17.5+72-g01140da4e8-1".
fn major_minor(version: &str) -> Result<String, String> {
    let upstream = version.split(':').next_back().unwrap_or(version);
    let mut parts = upstream.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) if !a.is_empty() && b.chars().all(|c| c.is_ascii_digit()) => {
            Ok(format!("{a}.{b}"))
        }
        _ => Err(format!(
            "xen: cannot take major.minor from version {version:?}"
        )),
    }
}

/// An exclusive lock on the cache while preparing: the directory `<cache>/lock` holding the
/// owner's pid (std has no file locking at this crate's MSRV). Another xtask waits for it; a
/// lock left by a dead process is taken over. Removed on drop.
struct CacheLock(PathBuf);

fn lock_cache(root: &Path) -> Result<CacheLock, String> {
    let dir = root.join("lock");
    let mut waited = false;
    loop {
        match fs::create_dir(&dir) {
            Ok(()) => {
                write_file(&dir.join("pid"), std::process::id().to_string().as_bytes())?;
                return Ok(CacheLock(dir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if lock_is_stale(&dir) {
                    let _ = fs::remove_file(&dir);
                    clear_dir(&dir)?;
                    continue;
                }
                if !waited {
                    eprintln!(
                        "xen: waiting for another xtask preparing {}",
                        root.display()
                    );
                    waited = true;
                }
                thread::sleep(LOCK_POLL);
            }
            Err(e) => return Err(io_err("cannot create", &dir, e)),
        }
    }
}

/// Not a directory, or its owner is gone (or never wrote its pid within a grace period).
fn lock_is_stale(dir: &Path) -> bool {
    if !dir.is_dir() {
        return true;
    }
    match fs::read_to_string(dir.join("pid")) {
        Ok(owner) if !owner.trim().is_empty() => !owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists()),
        _ => fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > LOCK_PID_GRACE),
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Host packages
// ---------------------------------------------------------------------------------------------

fn ensure_host_packages() -> Result<(), String> {
    let missing = missing_host_packages()?;
    if missing.is_empty() {
        return Ok(());
    }
    eprint!("installing {} ... ", missing.join(" "));
    let log = std::env::temp_dir().join("xtask-xen-apt.log");
    run_apt(
        || {
            let mut c = Command::new("apt-get");
            c.args(["-q", "update"]);
            c
        },
        "xen: apt-get update",
        &log,
    )?;
    run_apt(
        || {
            let mut c = Command::new("apt-get");
            c.env("DEBIAN_FRONTEND", "noninteractive")
                .args(["-q", "-y", "--no-install-recommends", "install"])
                .args(&missing);
            c
        },
        "xen: apt-get install",
        &log,
    )
}

fn missing_host_packages() -> Result<Vec<String>, String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
        .args(HOST_PACKAGES)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("xen: cannot run dpkg-query: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_suffix(" installed"))
        .map(|p| p.split(':').next().unwrap_or(p))
        .collect();
    Ok(HOST_PACKAGES
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| p.to_string())
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Cache layout and version resolution
// ---------------------------------------------------------------------------------------------

/// Where things go under the cache directory.
struct Layout {
    root: PathBuf,
    /// Compiler + linker identification, part of the hypervisor's cache key.
    toolchain: String,
}

/// The versions picked from the archive.
#[derive(Clone, Debug)]
struct Resolved {
    xen_version: String,
    kernel_package: String,
}

impl Layout {
    fn new(root: PathBuf) -> Result<Self, String> {
        let first_line = |prog: &str| -> Result<String, String> {
            let out = run_cmd(Command::new(prog).arg("--version"), "xen: toolchain check")?;
            Ok(out.lines().next().unwrap_or("").to_string())
        };
        let toolchain = format!("{}\n{}", first_line("gcc")?, first_line("ld")?);
        Ok(Layout { root, toolchain })
    }

    fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }
    fn debs_dir(&self) -> PathBuf {
        self.root.join("debs")
    }
    fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    fn scratch(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(name)
    }
    fn resolved_file(&self) -> PathBuf {
        self.root.join("resolved.txt")
    }
    fn hypervisor_dir(&self, r: &Resolved) -> PathBuf {
        let key = stable_hash(&[
            r.xen_version.as_bytes(),
            XEN_CONFIG_FRAGMENT.as_bytes(),
            self.toolchain.as_bytes(),
        ]);
        self.root
            .join("hypervisor")
            .join(format!("{}-{key:016x}", path_safe(&r.xen_version)))
    }
    fn dom0_dir(&self, r: &Resolved) -> PathBuf {
        let key = stable_hash(&[
            r.xen_version.as_bytes(),
            r.kernel_package.as_bytes(),
            DOM0_INIT_TEMPLATE.as_bytes(),
            DOM0_LAYOUT_VERSION.as_bytes(),
        ]);
        self.root.join("dom0").join(format!(
            "{}-{}-{key:016x}",
            path_safe(&r.xen_version),
            path_safe(&r.kernel_package)
        ))
    }
    /// Both artifacts built for `r`?
    fn ready(&self, r: &Resolved) -> bool {
        let dom0 = self.dom0_dir(r);
        self.hypervisor_dir(r).join("xen").is_file()
            && dom0.join("vmlinux").is_file()
            && dom0.join("dom0.cpio").is_file()
    }
}

impl Resolved {
    fn to_text(&self) -> String {
        format!(
            "xen_version={}\nkernel_package={}\n",
            self.xen_version, self.kernel_package
        )
    }
    fn parse(text: &str) -> Option<Self> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .filter(|v| !v.is_empty())
        };
        Some(Resolved {
            xen_version: field("xen_version")?,
            kernel_package: field("kernel_package")?,
        })
    }
}

/// The cached resolution when it is recent and built; otherwise ask the archive (falling back
/// to a built cached resolution when the archive cannot be reached).
fn resolve_versions(layout: &Layout) -> Result<Resolved, String> {
    let file = layout.resolved_file();
    let cached = fs::read_to_string(&file)
        .ok()
        .and_then(|t| Resolved::parse(&t));
    let age = fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::MAX);
    if let Some(r) = cached.as_ref().filter(|r| layout.ready(r)) {
        if age < RESOLVE_MAX_AGE {
            return Ok(r.clone());
        }
    }
    let fresh = step(
        "resolving Xen and dom0 kernel versions from Debian's archive",
        || resolve_online(layout),
    );
    match fresh {
        Ok(r) => {
            write_file(&file, r.to_text().as_bytes())?;
            eprintln!(
                "xen: Xen source {}, dom0 kernel {}",
                r.xen_version, r.kernel_package
            );
            Ok(r)
        }
        Err(e) => match cached.filter(|r| layout.ready(r)) {
            Some(r) => {
                eprintln!(
                    "xen: warning: {e}\nxen: keeping the cached Xen {}",
                    r.xen_version
                );
                Ok(r)
            }
            None => Err(e),
        },
    }
}

fn resolve_online(layout: &Layout) -> Result<Resolved, String> {
    let apt = PrivateApt::setup(layout)?;
    apt.update()?;
    let showsrc = run_cmd(
        apt.command("apt-cache")
            .args(["showsrc", XEN_SOURCE_PACKAGE]),
        "xen: apt-cache showsrc",
    )?;
    let xen_version = newest_source_version(&showsrc, XEN_SOURCE_PACKAGE)?;
    let depends = run_cmd(
        apt.command("apt-cache")
            .args(["depends", KERNEL_META_PACKAGE]),
        "xen: apt-cache depends",
    )?;
    let kernel_package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| {
            format!("xen: no linux-image-* dependency of {KERNEL_META_PACKAGE}:\n{depends}")
        })?
        .to_string();
    Ok(Resolved {
        xen_version,
        kernel_package,
    })
}

/// The highest `Version:` among the `Package: <name>` records of `apt-cache showsrc`.
fn newest_source_version(showsrc: &str, name: &str) -> Result<String, String> {
    let mut versions = Vec::new();
    for record in showsrc.split("\n\n") {
        let field = |key: &str| {
            record
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
        };
        if field("Package:") == Some(name) {
            if let Some(v) = field("Version:") {
                versions.push(v.to_string());
            }
        }
    }
    let mut best: Option<String> = None;
    for v in versions {
        let newer = match &best {
            None => true,
            Some(b) => Command::new("dpkg")
                .args(["--compare-versions", &v, "gt", b])
                .status()
                .map(|s| s.success())
                .map_err(|e| format!("xen: cannot run dpkg --compare-versions: {e}"))?,
        };
        if newer {
            best = Some(v);
        }
    }
    best.ok_or_else(|| format!("xen: Debian's archive lists no source package {name:?}"))
}

/// apt with its own sources.list, lists and archives under `<cache>/apt`, so the machine's apt
/// configuration is neither used nor changed.
struct PrivateApt {
    dir: PathBuf,
    log: PathBuf,
}

impl PrivateApt {
    fn setup(layout: &Layout) -> Result<Self, String> {
        let dir = layout.apt_dir();
        for sub in ["lists/partial", "archives/partial"] {
            make_dir(&dir.join(sub))?;
        }
        make_dir(&layout.logs_dir())?;
        let (mirror, suite) = system_mirror();
        let mut list = String::new();
        for kind in ["deb", "deb-src"] {
            for s in [suite.clone(), format!("{suite}-updates")] {
                list.push_str(&format!(
                    "{kind} [arch={DEB_ARCH} signed-by={ARCHIVE_KEYRING}] {mirror} {s} main\n"
                ));
            }
        }
        let sources = dir.join("sources.list");
        if fs::read_to_string(&sources).ok().as_deref() != Some(list.as_str()) {
            write_file(&sources, list.as_bytes())?;
        }
        Ok(PrivateApt {
            dir,
            log: layout.logs_dir().join("apt.log"),
        })
    }

    /// `tool` (apt-get or apt-cache) with the private state options.
    fn command(&self, tool: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut c = Command::new(tool);
        c.env("DEBIAN_FRONTEND", "noninteractive").args([
            "-q".to_string(),
            format!("-o=Dir::Etc::sourcelist={}", d("sources.list")),
            "-o=Dir::Etc::sourceparts=-".to_string(),
            format!("-o=Dir::State::Lists={}", d("lists")),
            format!("-o=Dir::Cache::archives={}", d("archives")),
            "-o=Dir::Cache::pkgcache=".to_string(),
            "-o=Dir::Cache::srcpkgcache=".to_string(),
            "-o=APT::Sandbox::User=root".to_string(),
            "-o=Acquire::Languages=none".to_string(),
        ]);
        c
    }

    fn update(&self) -> Result<(), String> {
        run_apt(
            || {
                let mut c = self.command("apt-get");
                c.arg("update");
                c
            },
            "xen: apt-get update (private state)",
            &self.log,
        )
    }
}

/// The Debian mirror and suite this machine uses (first `.../debian` URI in its apt sources).
fn system_mirror() -> (String, String) {
    let suite = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SUITE.to_string());
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mirror = files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(str::split_whitespace)
                .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
                .map(|w| w.trim_end_matches('/').to_string())
                .filter(|w| w.ends_with("/debian"))
                .collect::<Vec<_>>()
        })
        .next()
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string());
    (mirror, suite)
}

// ---------------------------------------------------------------------------------------------
// Hypervisor
// ---------------------------------------------------------------------------------------------

fn ensure_hypervisor(layout: &Layout, r: &Resolved) -> Result<PathBuf, String> {
    let dir = layout.hypervisor_dir(r);
    let xen = dir.join("xen");
    if xen.is_file() {
        eprintln!(
            "xen: hypervisor {} (cached) {}",
            r.xen_version,
            xen.display()
        );
        return Ok(xen);
    }
    let work = layout.scratch("xen-src");
    let src = step(&format!("fetching Xen source {}", r.xen_version), || {
        fetch_xen_source(layout, r, &work)
    })?;
    step(
        &format!(
            "building hypervisor {} with CONFIG_PV32=y (first run, 1-2 min)",
            r.xen_version
        ),
        || build_hypervisor(layout, &src, &dir),
    )?;
    clear_dir(&work)?;
    Ok(xen)
}

/// `apt-get source` into `work`; returns the unpacked source tree.
fn fetch_xen_source(layout: &Layout, r: &Resolved, work: &Path) -> Result<PathBuf, String> {
    fresh_dir(work)?;
    let apt = PrivateApt::setup(layout)?;
    let spec = format!("{XEN_SOURCE_PACKAGE}={}", r.xen_version);
    run_apt(
        || {
            let mut c = apt.command("apt-get");
            c.args(["source", "--only-source", &spec]).current_dir(work);
            c
        },
        "xen: apt-get source",
        &layout.logs_dir().join("xen-source.log"),
    )?;
    let entries = fs::read_dir(work).map_err(|e| io_err("cannot list", work, e))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("xen").join("Makefile").is_file())
        .ok_or_else(|| {
            format!(
                "xen: apt-get source left no Xen source tree in {}",
                work.display()
            )
        })
}

/// Configure (Debian's config + PV32) and build `xen/xen`, then publish it into `out`.
fn build_hypervisor(layout: &Layout, src: &Path, out: &Path) -> Result<(), String> {
    let kconfig = src.join("debian").join("xen-kconfig");
    let mut config = String::from_utf8_lossy(&read_file(&kconfig)?).into_owned();
    config.push('\n');
    config.push_str(XEN_CONFIG_FRAGMENT);
    let dot_config = src.join("xen").join(".config");
    write_file(&dot_config, config.as_bytes())?;
    let jobs = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let log = layout.logs_dir().join("xen-build.log");
    let make = |args: &[String]| {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(src.join("xen"))
            .arg("XEN_TARGET_ARCH=x86_64")
            .args(args);
        for var in [
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "CFLAGS",
            "CPPFLAGS",
            "LDFLAGS",
        ] {
            c.env_remove(var);
        }
        c
    };
    run_logged(
        &mut make(&["olddefconfig".into()]),
        "xen: make olddefconfig",
        &log,
    )?;
    let effective = String::from_utf8_lossy(&read_file(&dot_config)?).into_owned();
    if !effective.lines().any(|l| l == XEN_CONFIG_CHECK) {
        return Err(format!(
            "xen: {XEN_CONFIG_CHECK} did not survive olddefconfig ({})",
            dot_config.display()
        ));
    }
    run_logged(
        &mut make(&[format!("-j{jobs}")]),
        "xen: make (hypervisor)",
        &log,
    )?;
    let tmp = out.with_extension("tmp");
    fresh_dir(&tmp)?;
    let built = src.join("xen").join("xen");
    fs::copy(&built, tmp.join("xen")).map_err(|e| io_err("cannot copy", &built, e))?;
    write_file(&tmp.join("config"), effective.as_bytes())?;
    clear_dir(out)?;
    fs::rename(&tmp, out).map_err(|e| io_err("cannot publish", out, e))
}

// ---------------------------------------------------------------------------------------------
// dom0 kernel and initramfs
// ---------------------------------------------------------------------------------------------

fn ensure_dom0(layout: &Layout, r: &Resolved) -> Result<(PathBuf, PathBuf), String> {
    let dir = layout.dom0_dir(r);
    let (kernel, initrd) = (dir.join("vmlinux"), dir.join("dom0.cpio"));
    if kernel.is_file() && initrd.is_file() {
        eprintln!("xen: dom0 {} (cached) {}", r.kernel_package, dir.display());
        return Ok((kernel, initrd));
    }
    let debs = step(
        &format!(
            "fetching dom0 packages (Xen tools {}, {})",
            r.xen_version, r.kernel_package
        ),
        || fetch_dom0_debs(layout, r),
    )?;
    step("building dom0 kernel and initramfs", || {
        build_dom0(layout, r, &debs, &dir)
    })?;
    prune_siblings(&dir);
    Ok((kernel, initrd))
}

/// Remove older builds next to `keep` (each dom0 build is ~70 MB; its key changes with the
/// init script). Best effort: a failure here only costs disk space.
fn prune_siblings(keep: &Path) {
    let Some(parent) = keep.parent() else { return };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.path() != keep && e.path().is_dir() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// (package, pinned version) pairs for dom0.
fn dom0_packages(r: &Resolved) -> Result<Vec<(String, Option<String>)>, String> {
    let mm = major_minor(&r.xen_version)?;
    let mut list: Vec<(String, Option<String>)> = DOM0_XEN_PACKAGES
        .iter()
        .map(|p| (p.replace("{mm}", &mm), Some(r.xen_version.clone())))
        .collect();
    list.extend(DOM0_OTHER_PACKAGES.iter().map(|p| (p.to_string(), None)));
    list.push((r.kernel_package.clone(), None));
    Ok(list)
}

/// The newest downloaded .deb of `package` (at `version` if given) in `dir`.
fn find_deb(dir: &Path, package: &str, version: Option<&str>) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let infix = version.map(|v| format!("_{}_", v.replace(':', "%3a")));
    let mut found: Vec<(SystemTime, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = name.starts_with(&prefix)
                && name.ends_with(".deb")
                && infix.as_ref().is_none_or(|i| name.contains(i.as_str()));
            let mtime = e.metadata().and_then(|m| m.modified()).ok()?;
            ok.then(|| (mtime, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn fetch_dom0_debs(layout: &Layout, r: &Resolved) -> Result<Vec<PathBuf>, String> {
    let dir = layout.debs_dir();
    make_dir(&dir)?;
    let packages = dom0_packages(r)?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|(p, v)| find_deb(&dir, p, v.as_deref()).is_none())
        .map(|(p, v)| match v {
            Some(v) => format!("{p}={v}"),
            None => p.clone(),
        })
        .collect();
    if !missing.is_empty() {
        let apt = PrivateApt::setup(layout)?;
        run_apt(
            || {
                let mut c = apt.command("apt-get");
                c.arg("download").args(&missing).current_dir(&dir);
                c
            },
            "xen: apt-get download (dom0 packages)",
            &layout.logs_dir().join("dom0-download.log"),
        )?;
    }
    packages
        .iter()
        .map(|(p, v)| {
            find_deb(&dir, p, v.as_deref())
                .ok_or_else(|| format!("xen: {p} was not downloaded into {}", dir.display()))
        })
        .collect()
}

/// Unpack the debs, extract vmlinux, pack the initramfs, publish both into `out`.
fn build_dom0(layout: &Layout, r: &Resolved, debs: &[PathBuf], out: &Path) -> Result<(), String> {
    let staging = layout.scratch("dom0-staging");
    fresh_dir(&staging)?;
    let kernel_prefix = format!("{}_", r.kernel_package);
    for deb in debs {
        let is_kernel = deb
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&kernel_prefix));
        if is_kernel {
            extract_kernel_deb(deb, &staging)?;
        } else {
            run_cmd(
                Command::new("dpkg-deb").arg("-x").arg(deb).arg(&staging),
                "xen: dpkg-deb -x",
            )?;
        }
    }
    let tmp = out.with_extension("tmp");
    fresh_dir(&tmp)?;
    let vmlinuz = find_file(&staging.join("boot"), &|n| n.starts_with("vmlinuz-"))
        .ok_or("xen: no boot/vmlinuz-* in the kernel package")?;
    extract_vmlinux(&vmlinuz, &tmp.join("vmlinux"))?;
    let mm = major_minor(&r.xen_version)?;
    let tree = dom0_tree(&staging, &mm)?;
    write_file(&tmp.join("dom0.cpio"), &tree.to_newc())?;
    clear_dir(out)?;
    fs::rename(&tmp, out).map_err(|e| io_err("cannot publish", out, e))?;
    clear_dir(&staging)
}

/// Only the kernel image and the modules dom0 needs: `dpkg-deb --fsys-tarfile | tar -x`.
fn extract_kernel_deb(deb: &Path, staging: &Path) -> Result<(), String> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null()) // a broken pipe after a tar failure is only noise
        .spawn()
        .map_err(|e| format!("xen: cannot run dpkg-deb: {e}"))?;
    let pipe = dpkg.stdout.take().ok_or("xen: dpkg-deb gave no stdout")?;
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(staging)
        .arg("--wildcards")
        .arg("./boot/vmlinuz-*");
    for m in DOM0_MODULES {
        tar.arg(format!("*/{m}.ko*"));
    }
    let result = run_with_stdin(tar.stdin(pipe), "xen: tar -x (kernel package)");
    let status = dpkg.wait().map_err(|e| format!("xen: dpkg-deb: {e}"))?;
    result?;
    if !status.success() {
        return Err(format!(
            "xen: dpkg-deb --fsys-tarfile {} failed ({status})",
            deb.display()
        ));
    }
    Ok(())
}

/// First file (depth-first, sorted) under `dir` whose name satisfies `pred`.
fn find_file(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() && !p.is_symlink() {
            if let Some(found) = find_file(&p, pred) {
                return Some(found);
            }
        } else if pred(&name) {
            return Some(p);
        }
    }
    None
}

/// The ELF vmlinux inside a bzImage (its xz payload); the bzImage itself if that fails
/// (it boots too, only ~2–3 s slower because Xen decompresses it).
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), String> {
    let data = read_file(bzimage)?;
    let unpacked = data
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .and_then(|start| unxz(&data[start..]).ok())
        .filter(|elf| elf.starts_with(ELF_MAGIC));
    match unpacked {
        Some(elf) => write_file(out, &elf),
        None => {
            eprint!("(could not unpack vmlinux, using the bzImage) ");
            write_file(out, &data)
        }
    }
}

/// `xz -dc --single-stream` (ignores what follows the stream).
fn unxz(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("xen: cannot run xz: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("xen: xz gave no stdin")?;
    let input = data.to_vec();
    let writer = thread::spawn(move || {
        // xz stops reading after the stream: a broken pipe here is expected.
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("xen: xz: {e}"))?;
    let _ = writer.join();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("xen: xz -d failed ({})", out.status))
    }
}

/// The dom0 root file system, from the unpacked packages in `staging`.
fn dom0_tree(staging: &Path, mm: &str) -> Result<CpioTree, String> {
    let mut t = CpioTree::default();
    let bin_dir = format!("usr/lib/xen-{mm}/bin");
    for d in DOM0_DIRS.split_whitespace() {
        t.dir(d);
    }
    t.dir(&format!("lib/{MULTIARCH}"));
    t.dir(&bin_dir);
    t.char_dev("dev/console", 0o600, 5, 1);
    t.file(
        "bin/busybox",
        read_file(&staging.join("bin/busybox"))?,
        0o755,
    );
    t.symlink("bin/sh", "busybox");
    t.file("init", render_init(&bin_dir).into_bytes(), 0o755);
    t.file("etc/xen/xl.conf", Vec::new(), 0o644); // xl complains when it is missing

    for m in DOM0_MODULES {
        let name = format!("{m}.ko");
        let found = find_file(&staging.join("lib/modules"), &|n| {
            n == name || n == format!("{name}.xz")
        })
        .or_else(|| {
            find_file(&staging.join("usr/lib/modules"), &|n| {
                n == name || n == format!("{name}.xz")
            })
        })
        .ok_or_else(|| format!("xen: kernel module {name} not in the kernel package"))?;
        let mut data = read_file(&found)?;
        if found.extension().is_some_and(|e| e == "xz") {
            data = unxz(&data)?;
        }
        t.file(&format!("lib/modules/{name}"), data, 0o644);
    }

    let mut elfs = Vec::new();
    for tool in DOM0_XEN_TOOLS {
        let rel = format!("{bin_dir}/{tool}");
        t.file(&rel, read_file(&staging.join(&rel))?, 0o755);
        elfs.push(staging.join(&rel));
    }
    add_xenstore_clients(&mut t, staging, &mut elfs)?;
    add_libraries(&mut t, staging, &elfs)?;
    Ok(t)
}

/// `usr/bin/xenstore*`: the client binary and its read/write/... links.
fn add_xenstore_clients(
    t: &mut CpioTree,
    staging: &Path,
    elfs: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let dir = staging.join("usr/bin");
    let entries = fs::read_dir(&dir).map_err(|e| io_err("cannot list", &dir, e))?;
    let mut count = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("xenstore") {
            continue;
        }
        let path = e.path();
        let rel = format!("usr/bin/{name}");
        if path.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| io_err("cannot read link", &path, e))?;
            t.symlink(&rel, &target.to_string_lossy());
        } else {
            t.file(&rel, read_file(&path)?, 0o755);
            elfs.push(path);
        }
        count += 1;
    }
    if count == 0 {
        return Err("xen: no usr/bin/xenstore* in xenstore-utils".into());
    }
    Ok(())
}

/// The shared libraries of `elfs` (per `ldd`, packaged ones first) plus libgcc_s.
fn add_libraries(t: &mut CpioTree, staging: &Path, elfs: &[PathBuf]) -> Result<(), String> {
    let lib_path = [
        format!("usr/lib/{MULTIARCH}"),
        format!("lib/{MULTIARCH}"),
        "usr/lib".to_string(),
    ]
    .iter()
    .map(|d| staging.join(d).display().to_string())
    .collect::<Vec<_>>()
    .join(":");
    let mut libs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for elf in elfs {
        let out = run_cmd(
            Command::new("ldd")
                .arg(elf)
                .env("LD_LIBRARY_PATH", &lib_path),
            "xen: ldd",
        )?;
        for line in out.lines() {
            let line = line.trim();
            if line.contains("not found") {
                return Err(format!("xen: {}: library {line}", elf.display()));
            }
            let (dest, src) = match line.split_once(" => ") {
                Some((soname, rest)) => {
                    let path = rest.split(" (").next().unwrap_or("").trim();
                    if path.is_empty() {
                        continue;
                    }
                    (
                        format!("lib/{MULTIARCH}/{}", soname.trim()),
                        PathBuf::from(path),
                    )
                }
                None if line.starts_with('/') => {
                    let path = line.split(" (").next().unwrap_or("").trim();
                    (
                        path.trim_start_matches('/').to_string(),
                        PathBuf::from(path),
                    )
                }
                None => continue, // linux-vdso.so.1, statically linked
            };
            libs.insert(dest, src);
        }
    }
    let gcc_s = [
        format!("/lib/{MULTIARCH}/{LIBGCC_S}"),
        format!("/usr/lib/{MULTIARCH}/{LIBGCC_S}"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| format!("xen: host has no {LIBGCC_S} (package libgcc-s1)"))?;
    libs.insert(format!("lib/{MULTIARCH}/{LIBGCC_S}"), gcc_s);
    for (dest, src) in libs {
        t.file(&dest, read_file(&src)?, 0o755);
    }
    Ok(())
}

/// The dom0 `/init` with its placeholders filled in.
fn render_init(xen_bin_dir: &str) -> String {
    DOM0_INIT_TEMPLATE
        .replace("@XEN_BIN_DIR@", &format!("/{xen_bin_dir}"))
        .replace("@DEBUG_EXIT_PORT@", &DEBUG_EXIT_PORT.to_string())
        .replace("@EXIT_FATAL@", &EXIT_FATAL.to_string())
        .replace("@EXIT_WATCHDOG@", &EXIT_WATCHDOG.to_string())
        .replace("@EXIT_DONE@", &EXIT_DONE.to_string())
        .replace("@MIN_DOMU_CS@", &MIN_DOMU_CS.to_string())
        .replace("@XL_HUNG_STATUS@", &XL_HUNG_STATUS.to_string())
        .replace("@MODULES@", &DOM0_MODULES.join(" "))
}

// ---------------------------------------------------------------------------------------------
// newc cpio writer
// ---------------------------------------------------------------------------------------------

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

struct CpioEntry {
    mode: u32,
    data: Vec<u8>,
    rdev: (u32, u32),
}

/// An in-memory file tree written as one newc archive; parents are added automatically and,
/// as paths are kept sorted, always come before their children.
#[derive(Default)]
struct CpioTree {
    entries: BTreeMap<String, CpioEntry>,
}

impl CpioTree {
    fn add(&mut self, path: &str, mode: u32, data: Vec<u8>, rdev: (u32, u32)) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !self.entries.contains_key(parent) {
                self.dir(parent);
            }
        }
        self.entries
            .insert(path.to_string(), CpioEntry { mode, data, rdev });
    }
    fn dir(&mut self, path: &str) {
        self.add(path, S_IFDIR | 0o755, Vec::new(), (0, 0));
    }
    fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) {
        self.add(path, S_IFREG | perm, data, (0, 0));
    }
    fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, S_IFLNK | 0o777, target.as_bytes().to_vec(), (0, 0));
    }
    fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.add(path, S_IFCHR | perm, Vec::new(), (major, minor));
    }

    fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in self.entries.iter().enumerate() {
            newc_entry(&mut out, ino as u32 + 1, name, e);
        }
        let trailer = CpioEntry {
            mode: 0,
            data: Vec::new(),
            rdev: (0, 0),
        };
        newc_entry(&mut out, 0, "TRAILER!!!", &trailer);
        out
    }
}

fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, e: &CpioEntry) {
    let nlink = if e.mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let fields = [
        ino,
        e.mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        e.data.len() as u32,
        0, // dev major
        0, // dev minor
        e.rdev.0,
        e.rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(&e.data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

// ---------------------------------------------------------------------------------------------
// Per-run job archive (domU path)
// ---------------------------------------------------------------------------------------------

fn check_env(env: &XenEnv) -> Result<(), String> {
    for (what, p) in [
        ("hypervisor", &env.xen),
        ("dom0 kernel", &env.dom0_kernel),
        ("dom0 initramfs", &env.dom0_initrd),
    ] {
        if !p.is_file() {
            return Err(format!(
                "xen: {what} {} is missing (run prepare first)",
                p.display()
            ));
        }
    }
    Ok(())
}

fn check_elf(elf: &Path) -> Result<(), String> {
    let mut magic = [0u8; 4];
    fs::File::open(elf)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot read guest {}: {e}", elf.display()))?;
    if magic != ELF_MAGIC {
        return Err(format!("guest {} is not an ELF file", elf.display()));
    }
    Ok(())
}

fn check_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.len() > MAX_GUEST_CMDLINE {
        return Err(format!(
            "guest command line is {} bytes, more than {MAX_GUEST_CMDLINE}",
            cmdline.len()
        ));
    }
    if let Some(c) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "guest command line has a non-printable or non-ASCII character {c:?}"
        ));
    }
    Ok(())
}

fn validate_specs(specs: &[DomuSpec]) -> Result<(), String> {
    if specs.is_empty() {
        return Err("xen: run_domus: no domU given".into());
    }
    for (i, s) in specs.iter().enumerate() {
        let bad = |why: String| Err(format!("xen: run_domus: domU #{i} {:?}: {why}", s.name));
        let name_ok = !s.name.is_empty()
            && s.name.len() <= MAX_DOMU_NAME
            && !s.name.starts_with(['-', '.'])
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return bad(format!(
                "name must be 1-{MAX_DOMU_NAME} characters of [A-Za-z0-9_.-]"
            ));
        }
        if specs[..i].iter().any(|o| o.name == s.name) {
            return bad("name used twice".into());
        }
        if s.memory_mib == 0 || s.memory_mib > MAX_DOMU_MEMORY_MIB {
            return bad(format!("memory {} MiB is out of range", s.memory_mib));
        }
        check_elf(&s.elf).or_else(bad)?;
        check_cmdline(&s.cmdline).or_else(bad)?;
    }
    Ok(())
}

/// A string literal for an xl config file.
fn xl_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn xl_config(index: usize, s: &DomuSpec) -> String {
    format!(
        "name = {}\ntype = \"pv\"\nkernel = \"/job/{index}/kernel\"\nmemory = {}\nvcpus = 1\n\
         cmdline = {}\non_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"destroy\"\n",
        xl_quote(&s.name),
        s.memory_mib,
        xl_quote(&s.cmdline)
    )
}

/// dom0's initramfs for this run: the cached one + a second archive with `/job`.
fn write_job_initrd(
    env: &XenEnv,
    specs: &[DomuSpec],
    opts: &BootOptions,
    out: &Path,
) -> Result<(), String> {
    // Both in dom0 uptime, which starts about when the dom0 kernel does.
    let watchdog = opts.timeout.saturating_sub(XEN_BOOT_ALLOWANCE);
    let deadline_cs = (watchdog.saturating_sub(FINISH_ALLOWANCE).as_millis() / 10) as u64;
    let watchdog_s = watchdog.as_secs().max(1);
    let limit_cs = opts.domu_timeout.map_or(0, |d| {
        ((d.as_millis() / 10) as u64).max(MIN_EXPLICIT_DOMU_CS)
    });
    let mut job = CpioTree::default();
    job.file(
        "job/params.sh",
        format!(
            "COUNT={}\nDEADLINE_CS={}\nDOMU_LIMIT_CS={limit_cs}\nWATCHDOG_S={watchdog_s}\n",
            specs.len(),
            deadline_cs.max(MIN_DOMU_CS)
        )
        .into_bytes(),
        0o644,
    );
    let mut run = String::new();
    for (i, s) in specs.iter().enumerate() {
        job.file(&format!("job/{i}/kernel"), read_file(&s.elf)?, 0o644);
        job.file(&format!("job/{i}/cfg"), xl_config(i, s).into_bytes(), 0o644);
        run.push_str(&format!("run_domu {i} {}\n", s.name));
    }
    job.file("job/run.sh", run.into_bytes(), 0o644);
    let mut data = read_file(&env.dom0_initrd)?;
    pad4(&mut data);
    data.extend_from_slice(&job.to_newc());
    write_file(out, &data)
}

/// QEMU `-m` for a domU run: xl runs the domUs one after another, so the largest one counts
/// (-m 512 leaves ~244 MB for domUs; a 1024 MiB domU gets -m 1536).
fn qemu_mem_for_domus(max_domu_mib: u32) -> u32 {
    let need = DOM0_MEM_MIB + max_domu_mib + max_domu_mib / 8 + QEMU_DOMU_HEADROOM_MIB;
    need.div_ceil(QEMU_MEM_ROUND_MIB)
        .saturating_mul(QEMU_MEM_ROUND_MIB)
        .max(QEMU_MIN_MIB)
}

fn domu_qemu_args(env: &XenEnv, kernel: &Path, initrd: &Path, mem_mib: u32) -> Vec<String> {
    let append = format!("{XEN_BASE_OPTIONS} dom0_mem={DOM0_MEM_MIB}M,max:{DOM0_MEM_MIB}M");
    let modules = format!(
        "{} {DOM0_LINUX_CMDLINE},{}",
        kernel.display(),
        initrd.display()
    );
    qemu_args(&env.xen, &append, &modules, mem_mib)
}

// ---------------------------------------------------------------------------------------------
// QEMU
// ---------------------------------------------------------------------------------------------

fn qemu_args(xen: &Path, append: &str, modules: &str, mem_mib: u32) -> Vec<String> {
    let mut args: Vec<String> = QEMU_BASE_ARGS
        .split_whitespace()
        .map(String::from)
        .collect();
    args.extend([
        "-m".to_string(),
        mem_mib.to_string(),
        "-kernel".to_string(),
        xen.display().to_string(),
        "-append".to_string(),
        append.to_string(),
        "-initrd".to_string(),
        modules.to_string(),
        "-device".to_string(),
        format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"),
    ]);
    args
}

/// A multiboot module argument "path cmdline" (QEMU splits modules at ',', so commas are doubled).
fn module_arg(path: &Path, cmdline: &str) -> Result<String, String> {
    let p = path.display().to_string();
    if p.contains([' ', ',']) {
        return Err(format!(
            "xen: path {p:?} has a space or comma, which QEMU's -initrd cannot take"
        ));
    }
    if cmdline.is_empty() {
        Ok(p)
    } else {
        Ok(format!("{p} {}", cmdline.replace(',', ",,")))
    }
}

struct QemuRun {
    serial: Vec<u8>,
    status: Option<i32>,
    seconds: f64,
}

/// Run QEMU with its serial console on stdout, killing it after `timeout`.
fn run_qemu(args: &[String], timeout: Duration, stream: bool) -> Result<QemuRun, String> {
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("xen: cannot start {QEMU}: {e}"))?;
    let serial = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().ok_or("xen: QEMU gave no stdout")?;
    let stderr = child.stderr.take().ok_or("xen: QEMU gave no stderr")?;
    let out_thread = spawn_collector(stdout, Arc::clone(&serial), stream);
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let err_thread = spawn_collector(stderr, Arc::clone(&err_buf), false);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => break None,
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("xen: waiting for QEMU failed: {e}"));
            }
        }
    };
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    let seconds = start.elapsed().as_secs_f64();
    let serial = std::mem::take(&mut *serial.lock().unwrap_or_else(|p| p.into_inner()));
    let stderr_text =
        String::from_utf8_lossy(&err_buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    if timed_out {
        return Err(format!(
            "xen: QEMU timed out after {:.0}s; serial tail:\n{}{}",
            timeout.as_secs_f64(),
            tail_lines(&clean_serial(&serial, true), ERROR_TAIL_LINES),
            stderr_note(&stderr_text)
        ));
    }
    let status = status.and_then(|s| s.code());
    if serial.is_empty() && status != Some(0) {
        return Err(format!(
            "xen: QEMU failed (status {status:?}) before any serial output{}",
            stderr_note(&stderr_text)
        ));
    }
    Ok(QemuRun {
        serial,
        status,
        seconds,
    })
}

fn stderr_note(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("\nQEMU stderr:\n{}", tail_lines(stderr, 20))
    }
}

fn spawn_collector(
    mut src: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
    stream: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match src.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream {
                        let mut e = std::io::stderr().lock();
                        let _ = e.write_all(&chunk[..n]);
                        let _ = e.flush();
                    }
                    buf.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
}

/// Serial bytes as text: CRs removed, and ANSI escape sequences too when `strip_ansi`.
fn clean_serial(raw: &[u8], strip_ansi: bool) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' if strip_ansi => match chars.next() {
                Some('[') => {
                    // CSI: parameters and intermediates up to a final byte in '@'..='~'.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC '\'.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------

/// A private temporary directory (no spaces or commas, for QEMU's -initrd), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> Result<Self, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-xen-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(ScratchDir(dir))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A symlink named `name` in `scratch` pointing at `target` (a path QEMU can take).
fn link_into(scratch: &ScratchDir, target: &Path, name: &str) -> Result<PathBuf, String> {
    let abs = fs::canonicalize(target).map_err(|e| io_err("cannot resolve", target, e))?;
    let link = scratch.path().join(name);
    std::os::unix::fs::symlink(&abs, &link).map_err(|e| io_err("cannot link", &link, e))?;
    if link.display().to_string().contains([' ', ',']) {
        return Err(format!(
            "xen: temp directory {} has a space or comma",
            link.display()
        ));
    }
    Ok(link)
}

// ---------------------------------------------------------------------------------------------
// Relay parsing (domU path)
// ---------------------------------------------------------------------------------------------

/// One domU's block as relayed by dom0.
#[derive(Default)]
struct Block {
    begin: BTreeMap<String, String>,
    xl: Vec<String>,
    con: Vec<String>,
    end: Option<BTreeMap<String, String>>,
}

/// Turn the serial text of a domU run into outcomes; `Err` when dom0 failed or the run ended
/// before every domU was reported.
fn parse_relay(text: &str, specs: &[DomuSpec]) -> Result<Vec<DomuOutcome>, String> {
    let mut blocks: Vec<Block> = specs.iter().map(|_| Block::default()).collect();
    let mut done = false;
    for line in text.lines() {
        let Some(pos) = line.find(MARK) else { continue };
        let rest = &line[pos + MARK.len()..];
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "fatal" => return Err(format!("dom0 failed: {rest}")),
            "done" => done = true,
            "begin" | "xl" | "con" | "end" => {
                let (idx, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(block) = idx.parse::<usize>().ok().and_then(|i| blocks.get_mut(i)) else {
                    continue;
                };
                match kind {
                    "begin" => block.begin = parse_fields(body),
                    "xl" => block.xl.push(body.to_string()),
                    "con" => block.con.push(body.to_string()),
                    _ => block.end = Some(parse_fields(body)),
                }
            }
            _ => {}
        }
    }
    let mut outcomes = Vec::new();
    for (spec, block) in specs.iter().zip(blocks) {
        let Some(end) = &block.end else {
            return Err(format!(
                "the run ended before domU {:?} was reported",
                spec.name
            ));
        };
        outcomes.push(block_outcome(spec, &block, end));
    }
    if !done {
        return Err("dom0 did not report the end of its jobs".into());
    }
    Ok(outcomes)
}

/// `k=v k=v` fields of an end line.
fn parse_fields(body: &str) -> BTreeMap<String, String> {
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn block_outcome(spec: &DomuSpec, block: &Block, end: &BTreeMap<String, String>) -> DomuOutcome {
    let num = |k: &str| end.get(k).and_then(|v| v.parse::<i64>().ok());
    let status = num("status");
    let timed_out = num("timed_out") == Some(1);
    let mut console_log = block.con.join("\n");
    if !block.con.is_empty() && num("nl") != Some(0) {
        console_log.push('\n');
    }
    let xl_log = block.xl.join("\n");
    let shutdown_reason = xl_log.lines().find_map(shutdown_reason_in);
    let mut errors = Vec::new();
    if timed_out {
        let limit = block
            .begin
            .get("limit_cs")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        errors.push(format!(
            "did not shut down within its {:.0} s limit; dom0 destroyed it",
            limit / 100.0
        ));
    }
    match status {
        Some(0) => {}
        Some(s) if i32::try_from(s) == Ok(XL_HUNG_STATUS) => {
            errors.push("xl create -F never returned".into())
        }
        Some(s) => errors.push(format!(
            "xl create failed (status {s}):\n{}",
            xl_errors(&xl_log)
        )),
        None => errors.push("xl status unknown".into()),
    }
    if shutdown_reason.is_none() && errors.is_empty() {
        errors.push(format!(
            "xl reported no shutdown reason:\n{}",
            tail_lines(&xl_log, 15)
        ));
    }
    // Bytes that were not UTF-8 became U+FFFD, which changes the length: no check then.
    let comparable = !console_log.contains(char::REPLACEMENT_CHARACTER);
    if let Some(bytes) = num("bytes").filter(|_| comparable) {
        if bytes != console_log.len() as i64 {
            errors.push(format!(
                "console relay incomplete: {} of {bytes} bytes",
                console_log.len()
            ));
        }
    }

    DomuOutcome {
        name: spec.name.clone(),
        console_log,
        shutdown_reason,
        seconds: num("cs")
            .filter(|_| status.is_some_and(|s| i32::try_from(s) != Ok(XL_HUNG_STATUS)))
            .map(|cs| cs as f64 / 100.0),
        timed_out,
        xl_log,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// The error lines of an xl log (its tail when none says "error").
fn xl_errors(xl_log: &str) -> String {
    let errors: Vec<&str> = xl_log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("error"))
        .collect();
    if errors.is_empty() {
        tail_lines(xl_log, 15)
    } else {
        errors.join("\n")
    }
}

/// R from "Domain N has shut down, reason code R ...".
fn shutdown_reason_in(line: &str) -> Option<u32> {
    const NEEDLE: &str = "has shut down, reason code ";
    let rest = &line[line.find(NEEDLE)? + NEEDLE.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_parents_first_and_aligned() {
        let mut t = CpioTree::default();
        t.file("a/b/c", b"xyz".to_vec(), 0o644);
        let data = t.to_newc();
        assert_eq!(data.len() % 4, 0);
        let text = String::from_utf8_lossy(&data);
        let (a, ab, abc) = (
            text.find("a\0").unwrap(),
            text.find("a/b\0").unwrap(),
            text.find("a/b/c\0").unwrap(),
        );
        assert!(a < ab && ab < abc);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn ansi_and_cr_are_stripped() {
        assert_eq!(clean_serial(b"\x1b[1;32mok\x1b[0m\r\n", true), "ok\n");
        assert_eq!(clean_serial(b"a\r\nb", false), "a\nb");
    }

    #[test]
    fn reason_code_parsed() {
        assert_eq!(
            shutdown_reason_in("Domain 3 has shut down, reason code 3 0x3"),
            Some(3)
        );
        assert_eq!(shutdown_reason_in("nothing"), None);
    }

    #[test]
    fn relay_parsed() {
        let spec = DomuSpec {
            name: "g".into(),
            elf: PathBuf::new(),
            memory_mib: 16,
            cmdline: String::new(),
        };
        let serial = "junk\n@@XH begin 0 g limit_cs=100\n@@XH xl 0 Domain 1 has shut down, reason code 0 0x0\n\
                      @@XH con 0 hello\n@@XH con 0 \n@@XH end 0 status=0 cs=420 timed_out=0 bytes=7 nl=1\n@@XH done\n";
        let out = parse_relay(serial, &[spec]).unwrap();
        assert_eq!(out[0].console_log, "hello\n\n");
        assert_eq!(out[0].shutdown_reason, Some(0));
        assert_eq!(out[0].seconds, Some(4.2));
        assert_eq!(out[0].error, None);
    }

    #[test]
    fn relay_fatal_is_an_error() {
        let spec = DomuSpec {
            name: "g".into(),
            elf: PathBuf::new(),
            memory_mib: 16,
            cmdline: String::new(),
        };
        let err = parse_relay(
            "@@XH fatal insmod xenfs failed\n",
            std::slice::from_ref(&spec),
        )
        .unwrap_err();
        assert!(err.contains("insmod xenfs failed"));
        assert!(parse_relay("@@XH ready\n", &[spec]).is_err());
    }

    #[test]
    fn version_helpers() {
        assert_eq!(major_minor("4.17.5+72-g01140da4e8-1").unwrap(), "4.17");
        assert!(major_minor("garbage").is_err());
        assert_eq!(xl_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}

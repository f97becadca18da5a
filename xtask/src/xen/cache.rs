//! The Xen cache directory: its layout (`apt/`, `debs/`, `hypervisor/`, `dom0/`, `logs/`, `tmp/`),
//! the lock held while preparing it, and per-run scratch directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};
use std::{fs, thread};

use super::debian::Resolved;
use super::util::{clear_dir, io_err, path_safe, run_cmd, stable_hash, write_file};
use super::{DOM0_INIT_TEMPLATE, XEN_CONFIG_FRAGMENT};

/// Bump when the rules for what goes into the dom0 initramfs change (part of its cache key).
const DOM0_LAYOUT_VERSION: &str = "2";
const LOCK_POLL: Duration = Duration::from_millis(500);
const LOCK_PID_GRACE: Duration = Duration::from_secs(10);

/// An exclusive lock on the cache while preparing: the directory `<cache>/lock` holding the
/// owner's pid (std has no file locking at this crate's MSRV). Another xtask waits for it; a
/// lock left by a dead process is taken over. Removed on drop.
pub(super) struct CacheLock(PathBuf);

pub(super) fn lock_cache(root: &Path) -> Result<CacheLock, String> {
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
pub(super) fn lock_is_stale(dir: &Path) -> bool {
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

/// Where things go under the cache directory.
pub(super) struct Layout {
    pub(super) root: PathBuf,
    /// Compiler + linker identification, part of the hypervisor's cache key.
    pub(super) toolchain: String,
}

impl Layout {
    pub(super) fn new(root: PathBuf) -> Result<Self, String> {
        let first_line = |prog: &str| -> Result<String, String> {
            let out = run_cmd(Command::new(prog).arg("--version"), "xen: toolchain check")?;
            Ok(out.lines().next().unwrap_or("").to_string())
        };
        let toolchain = format!("{}\n{}", first_line("gcc")?, first_line("ld")?);
        Ok(Layout { root, toolchain })
    }

    pub(super) fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }
    pub(super) fn debs_dir(&self) -> PathBuf {
        self.root.join("debs")
    }
    pub(super) fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub(super) fn scratch(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(name)
    }
    pub(super) fn resolved_file(&self) -> PathBuf {
        self.root.join("resolved.txt")
    }
    pub(super) fn hypervisor_dir(&self, r: &Resolved) -> PathBuf {
        let key = stable_hash(&[
            r.xen_version.as_bytes(),
            XEN_CONFIG_FRAGMENT.as_bytes(),
            self.toolchain.as_bytes(),
        ]);
        self.root
            .join("hypervisor")
            .join(format!("{}-{key:016x}", path_safe(&r.xen_version)))
    }
    pub(super) fn dom0_dir(&self, r: &Resolved) -> PathBuf {
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
    pub(super) fn ready(&self, r: &Resolved) -> bool {
        let dom0 = self.dom0_dir(r);
        self.hypervisor_dir(r).join("xen").is_file()
            && dom0.join("vmlinux").is_file()
            && dom0.join("dom0.cpio").is_file()
    }
}

/// A private temporary directory (no spaces or commas, for QEMU's -initrd), removed on drop.
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(super) fn new(tag: &str) -> Result<Self, String> {
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
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A symlink named `name` in `scratch` pointing at `target` (a path QEMU can take).
pub(super) fn link_into(
    scratch: &ScratchDir,
    target: &Path,
    name: &str,
) -> Result<PathBuf, String> {
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

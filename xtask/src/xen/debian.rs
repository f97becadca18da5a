//! Debian's archive: host packages, a private apt state and the Xen/kernel versions resolved from
//! it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use super::cache::Layout;
use super::util::{make_dir, run_apt, run_cmd, step, write_file};
use super::XEN_SOURCE_PACKAGE;

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
/// Mirror and suite used when the machine's apt sources do not name one.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_SUITE: &str = "bookworm";
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEB_ARCH: &str = "amd64";
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
/// How long a version resolved from the archive is reused before asking the archive again.
const RESOLVE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Installs the missing host packages: one progress line per apt step, apt's output in
/// `<logs>/apt-update.log` and `<logs>/apt-install.log` (an error quotes the log's tail and
/// names the file).
pub(super) fn ensure_host_packages(logs: &Path) -> Result<(), String> {
    let missing = step("checking host packages", missing_host_packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    make_dir(logs)?;
    let update_log = logs.join("apt-update.log");
    step(
        &format!("apt-get update (log {})", update_log.display()),
        || {
            run_apt(
                || {
                    let mut c = Command::new("apt-get");
                    c.args(["-q", "update"]);
                    c
                },
                "xen: apt-get update",
                &update_log,
            )
        },
    )?;
    let install_log = logs.join("apt-install.log");
    step(
        &format!(
            "apt-get install {} (log {})",
            missing.join(" "),
            install_log.display()
        ),
        || {
            run_apt(
                || {
                    let mut c = Command::new("apt-get");
                    c.env("DEBIAN_FRONTEND", "noninteractive")
                        .args(["-q", "-y", "--no-install-recommends", "install"])
                        .args(&missing);
                    c
                },
                "xen: apt-get install",
                &install_log,
            )
        },
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

/// The versions picked from the archive.
#[derive(Clone, Debug)]
pub(super) struct Resolved {
    pub(super) xen_version: String,
    pub(super) kernel_package: String,
}

impl Resolved {
    pub(super) fn to_text(&self) -> String {
        format!(
            "xen_version={}\nkernel_package={}\n",
            self.xen_version, self.kernel_package
        )
    }
    pub(super) fn parse(text: &str) -> Option<Self> {
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
pub(super) fn resolve_versions(layout: &Layout) -> Result<Resolved, String> {
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

pub(super) fn resolve_online(layout: &Layout) -> Result<Resolved, String> {
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
pub(super) fn newest_source_version(showsrc: &str, name: &str) -> Result<String, String> {
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
pub(super) struct PrivateApt {
    pub(super) dir: PathBuf,
    pub(super) log: PathBuf,
}

impl PrivateApt {
    pub(super) fn setup(layout: &Layout) -> Result<Self, String> {
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
    pub(super) fn command(&self, tool: &str) -> Command {
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

    pub(super) fn update(&self) -> Result<(), String> {
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
pub(super) fn system_mirror() -> (String, String) {
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

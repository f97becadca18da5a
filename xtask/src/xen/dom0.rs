//! The dom0: Debian's Xen tool and kernel packages unpacked (never installed) into a vmlinux and an
//! initramfs with `/init`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;
use std::{fs, thread};

use super::cache::Layout;
use super::cpio::CpioTree;
use super::debian::{PrivateApt, Resolved};
use super::util::{
    clear_dir, fresh_dir, io_err, major_minor, make_dir, read_file, run_apt, run_cmd,
    run_with_stdin, step, write_file,
};
use super::{DEBUG_EXIT_PORT, DOM0_INIT_TEMPLATE, ELF_MAGIC, MIN_DOMU_CS, XL_HUNG_STATUS};

const MULTIARCH: &str = "x86_64-linux-gnu";
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
/// Values the dom0 init writes to the debug-exit port (QEMU exits with `(v << 1) | 1`).
const EXIT_DONE: u8 = 0x10;
const EXIT_FATAL: u8 = 0x11;
const EXIT_WATCHDOG: u8 = 0x12;

pub(super) fn ensure_dom0(layout: &Layout, r: &Resolved) -> Result<(PathBuf, PathBuf), String> {
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
pub(super) fn prune_siblings(keep: &Path) {
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
pub(super) fn dom0_packages(r: &Resolved) -> Result<Vec<(String, Option<String>)>, String> {
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
pub(super) fn find_deb(dir: &Path, package: &str, version: Option<&str>) -> Option<PathBuf> {
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

pub(super) fn fetch_dom0_debs(layout: &Layout, r: &Resolved) -> Result<Vec<PathBuf>, String> {
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
pub(super) fn build_dom0(
    layout: &Layout,
    r: &Resolved,
    debs: &[PathBuf],
    out: &Path,
) -> Result<(), String> {
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
pub(super) fn extract_kernel_deb(deb: &Path, staging: &Path) -> Result<(), String> {
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
pub(super) fn find_file(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
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
pub(super) fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), String> {
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
pub(super) fn unxz(data: &[u8]) -> Result<Vec<u8>, String> {
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
pub(super) fn dom0_tree(staging: &Path, mm: &str) -> Result<CpioTree, String> {
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
pub(super) fn add_xenstore_clients(
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
pub(super) fn add_libraries(
    t: &mut CpioTree,
    staging: &Path,
    elfs: &[PathBuf],
) -> Result<(), String> {
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
pub(super) fn render_init(xen_bin_dir: &str) -> String {
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

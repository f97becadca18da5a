//! The hypervisor: Xen's source package fetched and built with `CONFIG_PV32=y`, cached by version,
//! config and compiler.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{fs, thread};

use super::cache::Layout;
use super::debian::{PrivateApt, Resolved};
use super::util::{clear_dir, fresh_dir, io_err, read_file, run_apt, run_logged, step, write_file};
use super::{XEN_CONFIG_FRAGMENT, XEN_SOURCE_PACKAGE};

const XEN_CONFIG_CHECK: &str = "CONFIG_PV32=y";

pub(super) fn ensure_hypervisor(layout: &Layout, r: &Resolved) -> Result<PathBuf, String> {
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
pub(super) fn fetch_xen_source(
    layout: &Layout,
    r: &Resolved,
    work: &Path,
) -> Result<PathBuf, String> {
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
pub(super) fn build_hypervisor(layout: &Layout, src: &Path, out: &Path) -> Result<(), String> {
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

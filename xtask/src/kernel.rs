//! Building kernel images (guest-demo, and later other kernels) for the i686 target.

use crate::util::{cmd, root, run, Res};
use std::path::PathBuf;

/// Builds the release kernel in `dir` (a crate with the pvops target config) and copies the
/// ELF to `target/<name>.elf`; returns that path.
pub fn build(dir: &str, bin: &str) -> Res<PathBuf> {
    let root = root();
    let crate_dir = root.join(dir);
    let target_json = crate_dir.join("i686-pvops.json");
    let target_dir = root.join("target/kernel");
    run(cmd("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--release",
            "--quiet",
            "--target",
        ])
        .arg(&target_json)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&crate_dir))?;
    let built = target_dir.join("i686-pvops/release").join(bin);
    let out = root.join("target").join(format!("{bin}.elf"));
    std::fs::copy(&built, &out)
        .map_err(|e| format!("copy {} -> {}: {e}", built.display(), out.display()))?;
    Ok(out)
}

/// Runs clippy on the kernel crate for the real i686 target (the hardware code only exists there).
pub fn clippy(dir: &str) -> Res<()> {
    let root = root();
    let crate_dir = root.join(dir);
    run(cmd("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--release",
            "--quiet",
            "--target",
        ])
        .arg(crate_dir.join("i686-pvops.json"))
        .arg("--target-dir")
        .arg(root.join("target/kernel"))
        .args(["--", "-D", "warnings"])
        .current_dir(&crate_dir))
}

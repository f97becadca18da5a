//! Building kernel images (guest-demo, and later other kernels) for the i686 target.

use crate::util::{cmd, root, run, Res};
use std::path::PathBuf;

/// The one target spec of every pvops kernel (shipped by pvops-build), from the workspace root.
pub const TARGET_JSON: &str = "pvops-build/i686-pvops.json";

/// Builds the release kernel in `dir` (a crate with the pvops target config) and copies the
/// ELF to `target/<name>.elf`; returns that path.
pub fn build(dir: &str, bin: &str) -> Res<PathBuf> {
    build_with(dir, bin, &[], bin)
}

/// [`build`] with cargo `features` switched on, copied to `target/<out>.elf`.
pub fn build_with(dir: &str, bin: &str, features: &[&str], out: &str) -> Res<PathBuf> {
    let root = root();
    let crate_dir = root.join(dir);
    let target_json = root.join(TARGET_JSON);
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
        .args(features.iter().flat_map(|f| ["--features", f]))
        .current_dir(&crate_dir))?;
    let built = target_dir.join("i686-pvops/release").join(bin);
    let out = root.join("target").join(format!("{out}.elf"));
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
        .arg(root.join(TARGET_JSON))
        .arg("--target-dir")
        .arg(root.join("target/kernel"))
        .args(["--", "-D", "warnings"])
        .current_dir(&crate_dir))
}

/// The result of the native `set_pte` codegen check.
pub struct CodegenCheck {
    /// True when the framework probe and the raw probe are the same instruction sequence.
    pub same_code: bool,
    /// True when the compiler merged the two bodies into one (MergeFunctions makes one symbol
    /// an alias of the other only when their optimized code is identical).
    pub merged: bool,
    /// The framework probe's instructions (addresses stripped).
    pub framework: Vec<String>,
    /// The raw probe's instructions.
    pub raw: Vec<String>,
}

const PROBE_FRAMEWORK: &str = "pvops_probe_set_pte_framework";
const PROBE_RAW: &str = "pvops_probe_set_pte_raw";

fn symbol_address(elf: &std::path::Path, name: &str) -> Res<String> {
    let nm = crate::util::output(cmd("nm").arg(elf))?;
    nm.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let (addr, _, sym) = (it.next()?, it.next()?, it.next()?);
            (sym == name).then(|| addr.to_string())
        })
        .ok_or_else(|| {
            crate::util::HarnessError(format!("symbol {name} not found in {}", elf.display()))
        })
}

fn disassemble(elf: &std::path::Path, name: &str) -> Res<Vec<String>> {
    let text = crate::util::output(
        cmd("objdump")
            .args(["-d", "--no-show-raw-insn", &format!("--disassemble={name}")])
            .arg(elf),
    )?;
    let body = text.split(&format!("<{name}>:")).nth(1).unwrap_or("");
    Ok(body
        .lines()
        .skip(1) // the rest of the `<name>:` line
        .map_while(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with("Disassembly") {
                return None;
            }
            l.split_once(":\t")
                .map(|(_, insn)| insn.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect())
}

/// Disassembles the two probes of guest-demo (see guest-demo/src/probes.rs) and compares them.
pub fn codegen_check(elf: &std::path::Path) -> Res<CodegenCheck> {
    let merged = symbol_address(elf, PROBE_FRAMEWORK)? == symbol_address(elf, PROBE_RAW)?;
    let framework = disassemble(elf, PROBE_FRAMEWORK)?;
    let raw = if merged {
        framework.clone()
    } else {
        disassemble(elf, PROBE_RAW)?
    };
    if framework.is_empty() {
        return Err(crate::util::HarnessError(format!(
            "objdump shows no instructions for {PROBE_FRAMEWORK}"
        )));
    }
    Ok(CodegenCheck {
        same_code: framework == raw,
        merged,
        framework,
        raw,
    })
}

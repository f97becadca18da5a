//! `cargo xtask test`'s checks that boot nothing: formatting, clippy (host and i686),
//! rustdoc, `cargo package`, the host tests, Miri, the fuzz targets, and the i686 codegen of
//! the native `set_pte`.

use crate::{fuzz, miri};
use std::path::{Path, PathBuf};
use util::{step, HarnessError, Res};
use xtask::{kernel, native, util};

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 5;

/// Every check before the boots; the first that fails ends the test.
pub(super) fn static_checks() -> Res<()> {
    step(
        "toolchains (nightly rust-src + clippy, stable clippy + rustfmt)",
        util::ensure_toolchains,
    )?;
    step("qemu-system-x86 present", native::ensure_qemu)?;
    step("cargo fmt --check", || {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&[
            "fmt",
            "--manifest-path",
            "guest-demo/Cargo.toml",
            "--",
            "--check",
        ])
    })?;
    step("cargo fmt --check (examples/minimal-kernel)", || {
        cargo(&[
            "fmt",
            "--manifest-path",
            "examples/minimal-kernel/Cargo.toml",
            "--",
            "--check",
        ])
    })?;
    step("cargo clippy (host workspace)", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step(
        "cargo clippy (i686 kernel: guest-demo and the backends)",
        || kernel::clippy("guest-demo"),
    )?;
    step(
        "cargo clippy (i686 kernel: examples/minimal-kernel)",
        || kernel::clippy("examples/minimal-kernel"),
    )?;
    step("rustdoc without warnings (library crates)", || {
        util::run(
            util::cmd("cargo")
                .args(["doc", "--no-deps", "--quiet"])
                .args(PACKAGED.iter().flat_map(|p| ["-p", p]))
                .env("RUSTDOCFLAGS", "-D warnings")
                .current_dir(util::root()),
        )
    })?;
    step(
        "cargo package (pvops-core, backend-native, backend-xen, platform-pvh, pvops, pvops-build)",
        || {
            util::run(
                util::cmd("cargo")
                    .args(["package", "--quiet", "--allow-dirty"])
                    .args(PACKAGED.iter().flat_map(|p| ["-p", p]))
                    .args(["--target-dir"])
                    .arg(package_target_dir()?)
                    .current_dir(util::root()),
            )
        },
    )?;
    step("cargo test (host: simulated machine, Xen model)", || {
        cargo(&["test", "--workspace", "--quiet"])
    })?;
    miri::miri()?;
    let fuzzed = fuzz::fuzz(FUZZ_SECONDS_IN_TEST)?;
    if let Some(c) = fuzzed.iter().find_map(|r| r.crash.as_ref()) {
        return Err(HarnessError(format!("fuzz: {c}")));
    }
    Ok(())
}

/// `cargo <args>` in the checkout.
fn cargo(args: &[&str]) -> Res<()> {
    util::run(util::cmd("cargo").args(args).current_dir(util::root()))
}

/// The native backend's `set_pte` in the built guest-demo compiles to the same instructions
/// as a raw PAE store (the evidence that the native path costs nothing).
pub(super) fn codegen(elf: &Path) -> Res<()> {
    step("codegen: native set_pte is the raw PAE store", || {
        let c = kernel::codegen_check(elf)?;
        eprintln!(
            "    framework: {} instructions{}: {}",
            c.framework.len(),
            if c.merged {
                " (the compiler merged both probes: identical code)"
            } else {
                ""
            },
            c.framework.join("; ")
        );
        if c.same_code {
            Ok(())
        } else {
            Err(HarnessError(format!(
                "different code:\n  framework: {}\n  raw:       {}",
                c.framework.join("; "),
                c.raw.join("; ")
            )))
        }
    })?;
    step(
        "codegen: native PAE primitives (cmpxchg8b for set_pte_atomic/set_pmd/set_pud, low half first for the clears)",
        || {
            let checks = kernel::primitive_checks(elf)?;
            let mut failed = Vec::new();
            for c in &checks {
                let verdict = match &c.failure {
                    None => "ok",
                    Some(_) => "FAILED",
                };
                eprintln!(
                    "    {verdict:<6} {}: {} ({} instructions: {})",
                    c.name,
                    c.rule,
                    c.insns.len(),
                    c.insns.join("; ")
                );
                if let Some(why) = &c.failure {
                    failed.push(format!("{}: {why}", c.name));
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(HarnessError(failed.join("; ")))
            }
        },
    )
}

/// The library crates `cargo package` verifies (in dependency order) and rustdoc checks.
const PACKAGED: [&str; 6] = [
    "pvops-core",
    "backend-native",
    "backend-xen",
    "platform-pvh",
    "pvops",
    "pvops-build",
];

/// `target/package-<hash of the packaged crates' files>` (older ones removed). cargo unpacks
/// each verified dependency from its temporary registry into `~/.cargo/registry/src/<hash of
/// the registry's path>/<name>-<version>` and never unpacks the same name and version again,
/// so with one fixed target directory a crate verified against a dependency's earlier sources
/// fails (seen: `pvops` against a pvops-core without `KernelStage`). A directory per content
/// gives a registry path per content.
fn package_target_dir() -> Res<PathBuf> {
    let root = util::root();
    let mut files = Vec::new();
    for krate in PACKAGED {
        collect_files(&root.join(krate), &mut files);
    }
    files.sort();
    // FNV-1a over paths and contents: stable across runs and Rust releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let data = std::fs::read(f).unwrap_or_default();
        for b in f.to_string_lossy().bytes().chain(data) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let name = format!("package-{h:016x}");
    let target = root.join("target");
    if let Ok(entries) = std::fs::read_dir(&target) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("package-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(target.join(name))
}

/// Every file under `dir` except build outputs.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                collect_files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// Most bytes one function of the debug build may put on the stack: a quarter of the 256 KiB
/// boot stacks (native, PVH, Xen PV), which have no guard page. backend-xen's entry once
/// took 272 KiB there (a `XenMmu` moved by value) and the domain died.
const MAX_DEBUG_FRAME: u32 = 64 * 1024;

/// The unoptimised build's stack frames, read from its prologues: none above
/// [`MAX_DEBUG_FRAME`]; prints the largest.
pub(super) fn debug_frames(debug_elf: &Path) -> Res<()> {
    step(
        "debug build: no stack frame above 64 KiB (the boot stacks are 256 KiB, unguarded)",
        || {
            let frames = kernel::stack_frames(debug_elf)?;
            for (n, f) in frames.iter().take(3) {
                eprintln!("    {n:>7} bytes  {f}");
            }
            let over: Vec<String> = frames
                .iter()
                .filter(|(n, _)| *n > MAX_DEBUG_FRAME)
                .map(|(n, f)| format!("{f} ({n} bytes)"))
                .collect();
            if over.is_empty() {
                Ok(())
            } else {
                Err(HarnessError(format!(
                    "stack frames above {MAX_DEBUG_FRAME} bytes: {}",
                    over.join(", ")
                )))
            }
        },
    )
}

//! pvops-build: what a pvops kernel needs at build time and must not copy.
//!
//! * the linker script ([`LINKER_SCRIPT`], `pvops.ld` in this crate): one image for a multiboot1
//!   loader and Xen's PV domain builder, whatever backends are linked;
//! * the i686 soft-float target spec (`i686-pvops.json` in this crate, also [`TARGET_JSON`]),
//!   which the kernel's `.cargo/config.toml` names by path;
//! * the toolchain file (`rust-toolchain.toml` in this crate: nightly + rust-src);
//! * [`link`], the one line of a kernel's `build.rs`.
//!
//! ```ignore
//! // build.rs of a kernel, with `pvops-build` as a build-dependency:
//! fn main() {
//!     pvops_build::link();
//! }
//! ```
//!
//! Why a build-dependency and not a library's own build script: cargo applies
//! `cargo:rustc-link-arg*` only to the package whose build script prints it, never to the
//! binaries of packages that depend on it, so pvops-core or a backend cannot pass `-T` to the
//! kernel's link. The kernel's own build script can.

use std::path::{Path, PathBuf};

/// The linker script every pvops kernel links with (see the comment at its top).
pub const LINKER_SCRIPT: &str = include_str!("../pvops.ld");

/// The target spec (`i686-pvops.json`): i686, no SSE, soft-float, static, rust-lld.
pub const TARGET_JSON: &str = include_str!("../i686-pvops.json");

/// The target's name: cargo names a `.json` target after its file name.
pub const TARGET_NAME: &str = "i686-pvops";

/// Where this crate's `i686-pvops.json` lives (for `[build] target` in `.cargo/config.toml`).
pub fn target_json_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("i686-pvops.json")
}

/// Why a kernel build cannot go on, as [`check`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The build is not for the freestanding x86 target (e.g. the host's).
    WrongTarget {
        /// The target cargo builds for.
        target: String,
    },
    /// The compiler is not a nightly (build-std and `.json` targets need one).
    NotNightly {
        /// `rustc -V` of the compiler in use.
        version: String,
    },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::WrongTarget { target } => write!(
                f,
                "pvops kernels build for the `{TARGET_NAME}` target, not `{target}`: put \
                 `[build] target = \"<path to pvops>/pvops-build/i686-pvops.json\"` (and the \
                 [unstable] build-std keys) in the kernel's .cargo/config.toml \
                 (see pvops's README, \"Use pvops in your kernel\")"
            ),
            BuildError::NotNightly { version } => write!(
                f,
                "pvops kernels need a nightly toolchain (-Zbuild-std and a .json target spec), \
                 this is `{version}`: add a rust-toolchain.toml with channel = \"nightly\" and \
                 components = [\"rust-src\"] next to the kernel's Cargo.toml (pvops-build ships \
                 one) and run `rustup component add --toolchain nightly rust-src`. (Stable cargo \
                 stops earlier with \".json target specs require -Zjson-target-spec\": the cause \
                 is the same, use nightly.)"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Checks a build script's environment: the target (`CARGO_CFG_TARGET_ARCH`/`_OS`) and the
/// compiler's channel (`RUSTC -V`).
pub fn check(
    target_arch: &str,
    target_os: &str,
    target: &str,
    rustc_version: &str,
) -> Result<(), BuildError> {
    if target_arch != "x86" || target_os != "none" {
        return Err(BuildError::WrongTarget {
            target: target.to_string(),
        });
    }
    if !(rustc_version.contains("nightly") || rustc_version.contains("-dev")) {
        return Err(BuildError::NotNightly {
            version: rustc_version.trim().to_string(),
        });
    }
    Ok(())
}

/// The one line of a kernel's `build.rs`: checks the target and toolchain, writes
/// [`LINKER_SCRIPT`] to `OUT_DIR/pvops.ld` and links the kernel's binaries with it
/// (`cargo:rustc-link-arg-bins=-T...`). Panics with the reason (cargo prints it) when the build
/// cannot work.
pub fn link() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(&rustc)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if let Err(e) = check(
        &var("CARGO_CFG_TARGET_ARCH"),
        &var("CARGO_CFG_TARGET_OS"),
        &var("TARGET"),
        &version,
    ) {
        panic!("{e}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("pvops.ld");
    if let Err(e) = std::fs::write(&script, LINKER_SCRIPT) {
        panic!("pvops-build: cannot write {}: {e}", script.display());
    }
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_toolchain_checked() {
        let nightly = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)";
        assert_eq!(check("x86", "none", "i686-pvops", nightly), Ok(()));
        assert!(matches!(
            check("x86_64", "linux", "x86_64-unknown-linux-gnu", nightly),
            Err(BuildError::WrongTarget { .. })
        ));
        let stable = check("x86", "none", "i686-pvops", "rustc 1.95.0 (abc 2026-04-01)");
        assert!(matches!(stable, Err(BuildError::NotNightly { .. })));
        assert!(stable.unwrap_err().to_string().contains("use nightly"));
    }

    #[test]
    fn shipped_files_are_the_ones_named() {
        assert!(target_json_path().is_file());
        assert_eq!(
            std::fs::read_to_string(target_json_path()).unwrap(),
            TARGET_JSON
        );
        assert!(LINKER_SCRIPT.contains("__pvops_image_end"));
        assert!(TARGET_JSON.contains("\"x86-softfloat\""));
    }
}

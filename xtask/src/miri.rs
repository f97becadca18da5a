//! `cargo xtask miri`: the host tests that touch raw memory, under Miri.
//!
//! Miri interprets every memory access and reports undefined behaviour (out-of-bounds or
//! misaligned accesses, use after free, data races, invalid references). It runs the unit tests
//! of the four libraries: the frame allocator and its bitmap, the PAE store path on a buffer,
//! page-table entries, the multiboot, start_info and hvm_start_info parsers. The boot-path integration tests
//! (simulated machine, Xen model) take minutes per test under Miri and stay out; linkme's
//! section symbols do not resolve under Miri, and these unit tests do not iterate a slice.

use crate::util::{cmd, output, root, run, step, Res};

const PACKAGES: [&str; 4] = [
    "pvops-core",
    "backend-native",
    "backend-xen",
    "platform-pvh",
];

/// Installs the nightly `miri` component if missing, builds Miri's sysroot, runs the tests.
pub fn miri() -> Res<()> {
    let root = root();
    step("miri component (nightly)", || {
        let installed = output(cmd("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))?;
        if !installed.lines().any(|l| l.starts_with("miri")) {
            run(cmd("rustup").args(["component", "add", "--toolchain", "nightly", "miri"]))?;
        }
        Ok(())
    })?;
    step("miri sysroot", || {
        run(cmd("cargo")
            .args(["+nightly", "miri", "setup", "--quiet"])
            .current_dir(&root))
    })?;
    step(
        "miri: library unit tests (allocator, PAE stores, entries, parsers)",
        || {
            let mut c = cmd("cargo");
            c.args(["+nightly", "miri", "test", "--quiet", "--lib"])
                .current_dir(&root);
            for p in PACKAGES {
                c.args(["-p", p]);
            }
            run(&mut c)
        },
    )
}

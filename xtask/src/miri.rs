//! `cargo xtask miri`: the host tests that touch raw memory, under Miri.
//!
//! Miri interprets every memory access and reports undefined behaviour (out-of-bounds or
//! misaligned accesses, use after free, data races, invalid references). It runs the unit tests
//! of the four libraries: the frame allocator and its bitmap, the PAE store path on a buffer,
//! page-table entries, the multiboot, start_info and hvm_start_info parsers. The boot-path integration tests
//! (simulated machine, Xen model) take minutes per test under Miri and stay out of the default
//! run. `cargo xtask miri --full` adds the simulated machine's walk tests and its smallest boot
//! ([`FULL_TESTS`]; not in `cargo xtask test`: too slow). linkme's section symbols do not
//! resolve under Miri, so `pvops_core::registry` reads no slice there (`cfg(miri)`).

use crate::util::{cmd, output, root, run, step, Res};

const PACKAGES: [&str; 4] = [
    "pvops-core",
    "backend-native",
    "backend-xen",
    "platform-pvh",
];

/// The simulated machine's tests `--full` adds (`tests/tests/boot_sim.rs`): walks of the
/// bootstrap table through the simulated MMU (PDPTE latching, reserved PDPTE bits, 2 MiB
/// pages at both addresses) and the smallest boot (8 MiB) with walks of the table it leaves.
pub const FULL_TESTS: [&str; 4] = [
    "pdpt_changes_need_a_cr3_reload",
    "cr3_load_with_reserved_pdpte_bits_is_refused",
    "bootstrap_table_uses_2mib_pages_at_both_addresses",
    "smallest_boot_and_walks_of_its_table",
];

/// `cargo xtask miri [--full]`.
pub fn cmd_miri(args: &[String]) -> Res<()> {
    let full = match args {
        [] => false,
        [a] if a == "--full" => true,
        _ => {
            return Err(crate::util::HarnessError(format!(
                "miri: unknown arguments {args:?} (only --full)"
            )))
        }
    };
    miri()?;
    if full {
        step(
            "miri --full: the simulated machine's walks and its smallest boot",
            || {
                let mut c = cmd("cargo");
                c.args([
                    "+nightly",
                    "miri",
                    "test",
                    "--quiet",
                    "-p",
                    "pvops-tests",
                    "--test",
                    "boot_sim",
                    "--",
                    "--exact",
                ])
                .args(FULL_TESTS)
                .current_dir(root());
                run(&mut c)
            },
        )?;
    }
    Ok(())
}

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

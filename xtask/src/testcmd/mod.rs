//! `cargo xtask test`: the checks that boot nothing ([`checks`]), then every guest boot case
//! ([`cases`]) on bare QEMU, as Xen dom0, as Xen PV and PVH domUs, and the README's quick start.

mod cases;
mod checks;

use crate::{quickstart, Verdict};
use cases::{
    boot_case, boot_one, expect_pass, expect_refusal, test_module_bytes, BootCase, Expect,
    MINIMAL_TAG, NOT_BUILT_IN, TEST_MODULE,
};
use std::path::Path;
use util::{step, HarnessError, Res};
use xtask::harness::{self, Guest, Mode};
use xtask::{kernel, native, util};

/// The boots' results as they come.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, r: Result<String, String>) {
        match r {
            Ok(line) => {
                eprintln!("    ok   {name}: {line}");
                self.passed += 1;
            }
            Err(e) => {
                eprintln!("    FAIL {name}: {e}");
                self.failed.push(name.to_string());
            }
        }
    }
}

/// `cargo xtask test`.
pub(crate) fn cmd_test() -> Res<Verdict> {
    checks::static_checks()?;
    let elf = step("build guest-demo", || {
        kernel::build("guest-demo", "guest-demo")
    })?;
    // Unoptimised, as a plain `cargo build`/`cargo run` makes it: it must boot too (its
    // frames are larger; a by-value XenMmu once overflowed backend-xen's boot stack).
    let debug_elf = step(
        "build guest-demo (debug: the dev profile, unoptimised)",
        || kernel::build_debug("guest-demo", "guest-demo", "guest-demo-debug"),
    )?;
    let minimal_elf = step("build examples/minimal-kernel", || {
        kernel::build("examples/minimal-kernel", "minimal-kernel")
    })?;

    checks::codegen(&elf)?;
    checks::debug_frames(&debug_elf)?;
    // The one module file of every module case (native multiboot modules, domU ramdisks).
    let module = util::root().join(TEST_MODULE);
    std::fs::write(&module, test_module_bytes())
        .map_err(|e| HarnessError(format!("{}: {e}", module.display())))?;
    let mut tally = Tally::default();
    native_boots(&elf, &debug_elf, &minimal_elf, &mut tally)?;
    xen_boots(&elf, &debug_elf, &minimal_elf, &mut tally);
    let logs = cases::FIXTURE_LOGS
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let recorded = step(
        "misuse fixture: record the real boots' PVOPS-MISUSE lines",
        || Ok(crate::fixture::record(&logs)),
    )?;
    tally.record("misuse fixture", recorded);
    let quick = step(
        "quick start: the README's steps in a fresh directory (cargo run: native, xen)",
        quickstart::follow,
    );
    match quick {
        Err(e) => tally.record("quick start", Err(e.to_string())),
        Ok(q) => {
            for (line, secs, pass) in q.passes {
                tally.record(
                    &format!("quick start `{line}`"),
                    Ok(format!("{pass} [{secs:.1}s from an empty directory]")),
                );
            }
        }
    }

    eprintln!(
        "boots: {} passed, {} failed",
        tally.passed,
        tally.failed.len()
    );
    if tally.failed.is_empty() {
        Ok(Verdict::Pass)
    } else {
        Err(HarnessError(format!(
            "failed boots: {}",
            tally.failed.join(", ")
        )))
    }
}

/// guest-demo's (release and `debug_elf`) and minimal-kernel's boots on bare QEMU.
fn native_boots(elf: &Path, debug_elf: &Path, minimal_elf: &Path, tally: &mut Tally) -> Res<()> {
    step(
        "GRUB 2 present (grub-pc-bin, xorriso, mtools)",
        native::ensure_grub,
    )?;
    let module = util::root().join(TEST_MODULE);
    // About 1.5 KiB of plain ASCII (a ~1 KiB line was refused before) and a module.
    let long_cmdline = (0..64)
        .map(|i| format!("filler.word{i:02}=abcdefghijklm"))
        .collect::<Vec<_>>()
        .join(" ");
    let native_cases = [
        BootCase::new("native default", 128, "", Expect::Pass).recording("native"),
        BootCase::new("native debug build", 128, "", Expect::Pass).booting(debug_elf),
        BootCase::new(
            "native GRUB 2 ISO, one module",
            128,
            "console=ttyS0 grub.word=1",
            Expect::Pass,
        )
        .loaded_by(native::Bootloader::Grub, std::slice::from_ref(&module)),
        BootCase::new(
            "native QEMU -kernel, one module, 1.5 KiB command line",
            128,
            &long_cmdline,
            Expect::Pass,
        )
        .loaded_by(native::Bootloader::Qemu, std::slice::from_ref(&module)),
        BootCase::new(
            "native interrupts on (8259 masked)",
            128,
            "demo.selftest=irq",
            Expect::Pass,
        )
        .requiring("selftest irq: interrupts enabled for"),
        BootCase::new(
            "native double fault on its own stack",
            128,
            "demo.selftest=double_fault",
            Expect::Fail(vec!["double fault (on its own stack)", "esp=0x00000ff0"]),
        ),
        BootCase::new(
            "native fault inside the fault printer",
            128,
            "demo.selftest=fault_in_printer",
            Expect::Fail(vec!["fault inside the fault printer: page fault"]),
        ),
        BootCase::new("native 32 MiB", 32, "", Expect::Pass),
        BootCase::new("native 512 MiB", 512, "", Expect::Pass),
        BootCase::new("native 2048 MiB (lowmem only)", 2048, "", Expect::Pass),
        BootCase::new(
            "native pvops.early_ioremap=swapper",
            128,
            "pvops.early_ioremap=swapper",
            Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xff8"]),
        ),
    ];
    step("boots on bare QEMU", || {
        for c in &native_cases {
            tally.record(&c.name, boot_case(Mode::Native, elf, c));
        }
        Ok(())
    })?;

    step("minimal-kernel on bare QEMU", || {
        minimal_kernel(
            Mode::Native,
            minimal_elf,
            "pvops.early_ioremap=swapper",
            tally,
        );
        Ok(())
    })?;
    Ok(())
}

/// examples/minimal-kernel in `mode`: it PASSes, and it refuses `switch`, a 2008 bug
/// re-creation switch it is built without.
fn minimal_kernel(mode: Mode, elf: &Path, switch: &str, tally: &mut Tally) {
    let name = if mode == Mode::Native {
        "native"
    } else {
        "xen dom0"
    };
    let r = boot_one(mode, elf, 64).and_then(|b| expect_pass(&b, MINIMAL_TAG, mode));
    tally.record(&format!("minimal-kernel {name}"), r);
    let r = expect_refusal(mode, elf, switch, MINIMAL_TAG, &NOT_BUILT_IN);
    tally.record(&format!("minimal-kernel {name} {switch} (refused)"), r);
}

/// guest-demo's and minimal-kernel's boots as Xen dom0, then the PV and PVH domUs in one dom0
/// boot. A missing Xen harness is one failed case.
fn xen_boots(elf: &Path, debug_elf: &Path, minimal_elf: &Path, tally: &mut Tally) {
    match harness::xen_env() {
        Err(e) => tally.record("xen harness", Err(e.to_string())),
        Ok(_) => {
            let dom0_cases = [
                BootCase::new("xen dom0 default", 64, "", Expect::Pass).recording("xen-dom0"),
                // Before XenMmu was set up in place, this one overflowed its boot stack.
                BootCase::new("xen dom0 debug build", 64, "", Expect::Pass).booting(debug_elf),
                BootCase::new(
                    "xen dom0 difftest (3 seeds x 2000 operations, replayed on the model)",
                    crate::difftest::MEMORY_MIB,
                    &crate::difftest::cmdline(&crate::difftest::Args::default()),
                    Expect::Pass,
                )
                .comparing_with_the_model(),
                BootCase::new(
                    "xen dom0 difftest seed 16 x 4000 (Xen keeps the type reference of a refused shared slot-3 L2: held=1)",
                    crate::difftest::MEMORY_MIB,
                    &crate::difftest::cmdline(&crate::difftest::Args {
                        seeds: vec![16],
                        ops: 4000,
                        ..Default::default()
                    }),
                    Expect::Pass,
                )
                .requiring("PVOPS-DIFFTEST: end seed=16 ops=4000 refused=1596 skipped=709 held=1 cleanup=ok")
                .comparing_with_the_model(),
                BootCase::new(
                    "xen dom0 pvops.early_ioremap=swapper",
                    64,
                    "pvops.early_ioremap=swapper",
                    Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xf56"]),
                ),
                BootCase::new(
                    "xen dom0 pvops.skip_unpin",
                    64,
                    "pvops.skip_unpin",
                    Expect::Fail(vec!["stage=pagetable_setup_done", "xen EBUSY"]),
                ),
            ];
            let _ = step("boots as Xen dom0 (fast path)", || {
                for c in &dom0_cases {
                    tally.record(&c.name, boot_case(Mode::XenDom0, elf, c));
                }
                Ok(())
            });
            let _ = step("minimal-kernel as Xen dom0 (fast path)", || {
                minimal_kernel(Mode::XenDom0, minimal_elf, "pvops.skip_unpin", tally);
                Ok(())
            });
            // PV and PVH domUs in one dom0 boot.
            let domu_cases = [
                (
                    Mode::Xen,
                    BootCase::new("xen domU 64 MiB", 64, "", Expect::Pass).recording("xen-domU"),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU difftest (1 seed x 2000 operations, replayed on the model)",
                        crate::difftest::MEMORY_MIB,
                        &crate::difftest::cmdline(&crate::difftest::Args {
                            seeds: vec![4],
                            ..Default::default()
                        }),
                        Expect::Pass,
                    )
                    .comparing_with_the_model(),
                ),
                (
                    Mode::Xen,
                    BootCase::new("xen domU 16 MiB", 16, "", Expect::Pass),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU with a module (xl ramdisk: start_info mod_start/mod_len)",
                        64,
                        "",
                        Expect::Pass,
                    )
                    .with_module(),
                ),
                (
                    Mode::Xen,
                    BootCase::new("xen domU 512 MiB", 512, "", Expect::Pass),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU 1024 MiB (beyond the direct map)",
                        1024,
                        "",
                        Expect::Pass,
                    ),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU pvops.early_ioremap=swapper",
                        64,
                        "pvops.early_ioremap=swapper",
                        Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xf56"]),
                    ),
                ),
                (
                    Mode::Xen,
                    BootCase::new(
                        "xen domU pvops.skip_unpin",
                        64,
                        "pvops.skip_unpin",
                        Expect::Fail(vec!["stage=pagetable_setup_done", "xen EBUSY"]),
                    ),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new("xen PVH domU 64 MiB", 64, "", Expect::Pass).recording("xen-pvh"),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new("xen PVH domU debug build", 64, "", Expect::Pass)
                        .booting(debug_elf),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU with a module (xl ramdisk)",
                        64,
                        "",
                        Expect::Pass,
                    )
                    .with_module(),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU 1024 MiB (beyond the direct map)",
                        1024,
                        "",
                        Expect::Pass,
                    ),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU pvops.early_ioremap=swapper",
                        64,
                        "pvops.early_ioremap=swapper",
                        Expect::Fail(vec!["stage=early_ioremap", "page fault cr2=0xff8"]),
                    ),
                ),
                (
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU interrupts on (no 8259 to mask)",
                        64,
                        "demo.selftest=irq",
                        Expect::Pass,
                    )
                    .requiring("selftest irq: interrupts enabled for"),
                ),
                (
                    // Before, the nested report went to COM1 (absent) and halted: Xen powered
                    // the domain off, a PASS exit with no result line.
                    Mode::XenPvh,
                    BootCase::new(
                        "xen PVH domU fault inside the fault printer",
                        64,
                        "demo.selftest=fault_in_printer",
                        Expect::Fail(vec!["fault inside the fault printer: page fault"]),
                    ),
                ),
            ];
            let guests: Vec<(Mode, Guest)> =
                domu_cases.iter().map(|(m, c)| (*m, c.guest(elf))).collect();
            let boots = step(
                "boots as Xen domUs, PV and PVH (one dom0 boot, xl create each)",
                || harness::boot_domus(&guests),
            );
            match boots {
                Err(e) => tally.record("xen domU run", Err(e.to_string())),
                Ok(boots) => {
                    for ((mode, c), b) in domu_cases.iter().zip(boots) {
                        tally.record(&c.name, c.judge(b, *mode));
                    }
                }
            }
        }
    }
}

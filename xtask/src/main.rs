//! xtask: the project's commands (`cargo xtask build | demo | run | test | bench | miri`).
//!
//! Exit status contract: 0 when every guest PASSed, 1 when a guest FAILed, 2 on a harness
//! error (build, timeout, tool failure), with a message saying which.

mod bench;
mod demo;
mod difftest;
mod fixture;
mod fuzz;
mod miri;
mod quickstart;
mod testcmd;

use xtask::harness;
use xtask::{kernel, util};

use std::path::PathBuf;
use std::process::ExitCode;
use util::{step, HarnessError, Res};

pub(crate) const USAGE: &str = "\
cargo xtask <command> [options]      (cargo xtask <command> --help for details)

Commands:
  build    Build guest-demo (every backend linked) to target/guest-demo.elf.
  demo     Boot guest-demo on bare QEMU, then as a Xen PV and a PVH domU; print the logs.
  run      Boot any kernel ELF on bare QEMU or under Xen (the harness behind pvops-run).
  test     fmt, clippy, rustdoc, host tests, Miri, and real boots on QEMU and Xen.
  bench    Benches, the codegen check and real boots; writes target/pvops-bench.json.
  miri     The raw-memory unit tests under Miri (installs the nightly miri component).
  fuzz     libFuzzer on the parsers of boot input (multiboot, start_info, hvm_start_info, ...).
  difftest Random page-table operations on the real Xen, replayed on the model and compared.
  misuse-fixture  Re-record tests/fixtures/misuse-real.txt from real boots.

Everything a command needs is installed on first use: the nightly rust-src component
(the kernel is built with -Zbuild-std), Debian packages (qemu-system-x86, the Xen build
dependencies), and a Xen 4.17 hypervisor with 32-bit PV support built from Debian's
source package plus a dom0 initramfs (first Xen run: ~2-3 minutes, then cached in
target/xen).

Exit status: 0 every guest PASSed, 1 a guest FAILed, 2 harness error (build, timeout,
tool failure), with a message saying which.";

const HELP_BUILD: &str = "\
cargo xtask build

Builds guest-demo in release mode for the i686 soft-float target (nightly, -Zbuild-std)
with every backend linked, and copies the ELF to target/guest-demo.elf. The same image
boots through multiboot1 (bare metal) and as a 32-bit PAE Xen PV guest.
Installs: the nightly rust-src component if missing. First run: ~30 s; then ~1 s.";

const HELP_DEMO: &str = "\
cargo xtask demo [native|xen|xen-pvh|xen-dom0|all] [--memory MIB] [--cmdline \"OPTS\"]
                 [--bootloader qemu|grub] [--module FILE]...

Builds guest-demo and boots it, printing its serial (native) or console (Xen) log:
  native     qemu-system-i386 -kernel (multiboot1), isa-debug-exit for the result
  xen        Xen 4.17 (PV32) under QEMU -> Linux dom0 -> xl create guest-demo as a PV domU
  xen-pvh    the same, as a PVH domU (type = \"pvh\": PHYS32_ENTRY, native MMU, Xen platform)
  xen-dom0   guest-demo itself as Xen's dom0 (about a second; a test fast path)
  all        native, then xen and xen-pvh in one dom0 boot (the default)
--memory MIB      native: QEMU -m (default 128); xen, xen-pvh: domU memory (default 64);
                  xen-dom0: dom0 memory (default 64)
--cmdline \"OPTS\"  appended to the guest's command line, e.g.
                  pvops.early_ioremap=swapper  (walk the static table: the 2008 bug)
                  pvops.skip_unpin             (keep pt_base pinned: the other 2008 bug)
                  pvops.batch=N                (Xen: N page-table updates per hypercall)
--bootloader qemu|grub  native: QEMU's own multiboot loader (-kernel, the default) or
                  GRUB 2 from an ISO made by grub-mkrescue in target/grub (-cdrom;
                  installs grub-pc-bin grub-common xorriso mtools on first use)
--module FILE     native: pass FILE as a multiboot module (repeatable); the guest prints
                  its length and first 16 bytes, which are checked against the file
Installs: rust-src, qemu-system-x86; for Xen the build dependencies, Xen's source package
and the dom0 packages (first Xen run ~2-3 minutes; cached in target/xen; then ~15 s).
Exit status: 0 every guest PASSed, 1 a guest FAILed, 2 harness error.";

const HELP_RUN_INTRO: &str = "cargo xtask run";

const HELP_TEST: &str = "\
cargo xtask test

Runs, printing each step and its time: toolchain and package setup, cargo fmt --check,
clippy without warnings (host workspace and the i686 kernel), rustdoc without warnings,
the host tests (simulated PAE machine, model of Xen's rules, property tests, fault
injection), Miri on the raw-memory tests, the codegen check of the native set_pte, and
real boots: bare QEMU (32/128/512/2048 MiB, through GRUB 2 with a module, with a 1.5 KiB
command line, the trap self-tests and the swapper regression), Xen dom0 fast path, Xen PV
domUs (16/64/512/1024 MiB and both 2008 regressions) and PVH domUs in one dom0 boot, the
differential test (seeds 1-3 x 2000 operations and seed 16 x 4000 as dom0, seed 4 as a PV
domU, replayed on the model), the misuse fixture recorded from the boots, and
the README's \"Use pvops in your kernel\" steps followed in a fresh directory outside the
repository (cargo run through pvops-run: native and a Xen domU).
Ends with `boots: N passed, M failed`. Installs what it needs (as `demo`). First run on a
fresh machine: ~8-10 minutes (most of it building Xen and the kernels); warm: ~4-5 minutes.
Exit status: 0 all passed, 2 otherwise.";

const HELP_BENCH: &str = "\
cargo xtask bench

Runs the codegen check (native set_pte is the raw PAE store), the criterion bench of Xen
direct maps of 1024/65536/131072 PTEs at the kernel's direct-map address on the model
(batched, in batches of 32 and one update per hypercall) and the model's hypercall counts,
and real boots (native at 512 MiB; Xen domUs at 512 MiB batched and with pvops.batch=1 in
one dom0 boot): the direct map's cycles (build_direct_map + write_cr3 +
pagetable_setup_done, the vCPU's not-running time taken out), the store phase per PTE on
both backends and calibration loops. Prints one table and writes target/pvops-bench.json
(numbers; see the README's Performance section).
Installs what it needs (as `demo`). Takes ~4 minutes (plus the first Xen build).";

const HELP_FUZZ: &str = "\
cargo xtask fuzz [--seconds N] [--capture]

Fuzzes every parser of loader-provided boot input with libFuzzer (cargo-fuzz), each target
for N seconds (default 60; N is per target, not in total): multiboot (info, memory map,
command line, then the frame allocator on the result), start_info (validation, and that what
it accepts lies inside the domain), hvm_start_info (PVH: info, memory map, command line,
modules; no boot structure left usable), memory_map (the map, the loader's reservations cut
out of it, and the allocator), cmdline (the pvops.* options). Starts from the checked-in seeds in
fuzz/seeds/<target>/ and keeps what it finds in target/fuzz/corpus/<target>/; a crashing
input goes to target/fuzz/artifacts/<target>/.
Prints per target `fuzz <target>: <runs> runs in <s> s, corpus <n> inputs (<m> seeds),
crashes <0|1>` and `fuzz: <targets> targets, <runs> runs, <crashes> crashes`.
--capture  first rebuilds guest-demo with the dump-boot-input feature, boots it on QEMU,
           as Xen dom0, as a Xen PV domU and as a Xen PVH domU, and rewrites fuzz/seeds/
           from what each loader handed over (PVOPS-BOOTINPUT lines).
Installs: g++ (apt-get, for libFuzzer) and cargo-fuzz (cargo install, ~1.5 minutes) if
missing; first build of the targets ~1.5 minutes, then seconds.
Exit status: 0 no crash, 1 a target crashed, 2 harness error.";

const HELP_MIRI: &str = "\
cargo xtask miri [--full]

Runs the libraries' raw-memory unit tests under Miri (allocator, PAE stores, entries, the
boot-input parsers). --full adds the simulated machine's walk tests and its smallest boot
(8 MiB) from tests/tests/boot_sim.rs: not in `cargo xtask test`, it takes minutes (the
README's `cargo xtask miri` row has the time measured here).
Installs: the nightly miri component and its sysroot on first use.
Exit status: 0 no undefined behaviour found and every test passed, 2 otherwise.";

const HELP_DIFFTEST: &str = "\
cargo xtask difftest [--seed S]... [--ops N] [--on xen|xen-dom0] [--verbose]

The differential test against the real Xen: guest-demo (64 MiB) runs seeded random
sequences of page-table operations, valid and invalid, through the raw hypercall layer
(direct writes, remaps, mmu_update single and batched with random targets, frames, flags
and sub-commands, pin/unpin at every level, NEW_BASEPTR, update_va_mapping, multicalls
mixing them) on frames it allocated for the test, and prints a compact record per
operation (result, digest of the entries it touched). The host replays each seed on the
model of Xen's rules (tests/src/xen_model) and compares record by record; the first
divergence is printed with the records around it. The log is kept in
target/difftest/<mode>.log.
--seed S   a seed (repeatable, up to 8; default 1 2 3)
--ops N    operations per seed (default 2000)
--on       xen-dom0 (default: guest-demo as Xen's dom0) or xen (a PV domU started by xl
           from a Linux dom0)
--verbose  also a full line per record from the guest (slow; to look at a divergence)
Prints `difftest: <seeds> seeds, <ops> operations, <d> divergences`.
Exit status: 0 no divergence, 1 a divergence, 2 harness error.";

const HELP_FIXTURE: &str = "\
cargo xtask misuse-fixture

Boots guest-demo on bare QEMU (128 MiB), as Xen dom0 (64 MiB) and as a Xen PV and a PVH domU
(64 MiB each, one dom0 boot) and rewrites tests/fixtures/misuse-real.txt from their
PVOPS-MISUSE lines; then runs `cargo test -p pvops-tests --test misuse_model`, which compares
the Xen model and the simulated machine with the fixture. `cargo xtask test` records the same
file from its own boots. Takes ~1 minute with Xen cached.
Exit status: 0 recorded and the model agrees, 2 otherwise.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 1 && args[1..].iter().any(|a| a == "--help" || a == "-h") {
        let help = match args[0].as_str() {
            "build" => HELP_BUILD,
            "demo" => HELP_DEMO,
            "run" => {
                println!("{HELP_RUN_INTRO} {}", harness::RUN_USAGE);
                return ExitCode::SUCCESS;
            }
            "test" => HELP_TEST,
            "bench" => HELP_BENCH,
            "fuzz" => HELP_FUZZ,
            "misuse-fixture" => HELP_FIXTURE,
            "difftest" => HELP_DIFFTEST,
            "miri" => HELP_MIRI,
            _ => USAGE,
        };
        println!("{help}");
        return ExitCode::SUCCESS;
    }
    let result = match args.first().map(String::as_str) {
        Some("build") => cmd_build().map(|_| Verdict::Pass),
        Some("demo") => demo::cmd_demo(&args[1..]),
        Some("run") => harness::parse_run_args(&args[1..])
            .and_then(|a| harness::run_one(&a))
            .map(|pass| if pass { Verdict::Pass } else { Verdict::Fail }),
        Some("test") => testcmd::cmd_test(),
        Some("bench") => bench::bench().map(|_| Verdict::Pass),
        Some("miri") => miri::cmd_miri(&args[1..]).map(|_| Verdict::Pass),
        Some("fuzz") => fuzz::cmd_fuzz(&args[1..]),
        Some("difftest") => difftest::parse(&args[1..]).and_then(|a| {
            let elf = cmd_build()?;
            difftest::cmd_difftest(&elf, &a)
                .map(|agreed| if agreed { Verdict::Pass } else { Verdict::Fail })
        }),
        Some("misuse-fixture") => cmd_build()
            .and_then(|elf| fixture::cmd_refresh(&elf))
            .map(|_| Verdict::Pass),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(HarnessError(format!(
            "unknown command `{other}`\n\n{USAGE}"
        ))),
    };
    match result {
        Ok(Verdict::Pass) => ExitCode::SUCCESS,
        Ok(Verdict::Fail) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xtask: harness error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The outcome of guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Fail,
}

/// The tag of guest-demo's result lines.
pub(crate) const TAG: &str = "PVOPS-DEMO";

/// `cargo xtask build`: guest-demo for i686, release; returns its ELF.
pub(crate) fn cmd_build() -> Res<PathBuf> {
    step("toolchains (nightly rust-src)", util::ensure_toolchains)?;
    let elf = step("build guest-demo (release, i686)", || {
        kernel::build("guest-demo", "guest-demo")
    })?;
    eprintln!("    kernel: {}", elf.display());
    Ok(elf)
}

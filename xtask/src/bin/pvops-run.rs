//! pvops-run: boots a pvops kernel ELF on bare QEMU or as a Xen guest; a cargo `runner`.
//!
//! A kernel's `.cargo/config.toml` names it (`[target.i686-pvops] runner = "pvops-run"`), so
//! `cargo run` boots the kernel it just built and `cargo run -- xen` boots it as a Xen PV domU.
//! The same harness as `cargo xtask run` (see `xtask::harness`). Exit status: 0 PASS, 1 FAIL,
//! 2 harness error.

use std::process::ExitCode;
use xtask::harness;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("pvops-run {}", harness::RUN_USAGE);
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    match harness::parse_run_args(&args).and_then(|a| harness::run_one(&a)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pvops-run: harness error: {e}");
            ExitCode::from(2)
        }
    }
}

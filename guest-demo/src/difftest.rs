//! `demo.difftest=<seed>:<ops>[,<seed>:<ops>...]` (and `demo.difftest_verbose`): runs the
//! differential test's sequences (`pvops_xen_conformance::difftest`) on the real Xen after
//! the misuse stage and prints their records for the host to replay on the model
//! (`cargo xtask difftest`):
//!
//! ```text
//! PVOPS-DIFFTEST: begin seed=<s> ops=<n> mode=<dom0|domU>
//! DT <first record, hex> <result>.<digest> ...        (8 records a line)
//! PVOPS-DIFFTEST: end seed=<s> ops=<n> refused=<r> skipped=<k> held=<h> cleanup=ok
//! ```
//!
//! With `demo.difftest_verbose` each record also gets a `DTV <index> <op> = <result>
//! #<digest>` line (slow on the console; for looking at a divergence).

use backend_xen::Hypervisor;
use core::fmt::Write;
use pvops_selftest::Verdict;
use pvops_xen_conformance::{difftest, Env, Mode};

/// Seeds a command line may ask for.
const MAX_SEEDS: usize = 8;
/// Records per `DT` line.
const PER_LINE: usize = 8;

/// The sequences asked for.
pub struct Request {
    runs: [(u64, u32); MAX_SEEDS],
    n: usize,
    verbose: bool,
}

/// The request on the command line, if any (malformed pairs are left out).
pub fn requested(cmdline: &str) -> Option<Request> {
    let mut req = Request {
        runs: [(0, 0); MAX_SEEDS],
        n: 0,
        verbose: false,
    };
    let mut any = false;
    for w in cmdline.split_ascii_whitespace() {
        if w == "demo.difftest_verbose" {
            req.verbose = true;
        }
        let Some(list) = w.strip_prefix("demo.difftest=") else {
            continue;
        };
        any = true;
        for pair in list.split(',') {
            let (seed, ops) = pair.split_once(':').unwrap_or((pair, "2000"));
            if let (Ok(seed), Ok(ops)) = (seed.parse(), ops.parse()) {
                if req.n < MAX_SEEDS {
                    req.runs[req.n] = (seed, ops);
                    req.n += 1;
                }
            }
        }
    }
    any.then_some(req)
}

/// Runs every sequence of `req` in `env`, printing the records.
pub fn run<H: Hypervisor>(
    env: &mut Env<'_, H>,
    mode: Mode,
    req: &Request,
    console: &mut dyn Write,
) -> Result<(), Verdict> {
    for &(seed, ops) in &req.runs[..req.n] {
        let _ = writeln!(
            console,
            "PVOPS-DIFFTEST: begin seed={seed} ops={ops} mode={}",
            mode.name()
        );
        let mut in_line = 0;
        let r = difftest::run(env, seed, ops, req.verbose, &mut |rec| {
            if req.verbose {
                if in_line > 0 {
                    let _ = writeln!(console);
                    in_line = 0;
                }
                let _ = writeln!(console, "DTV {rec} ::{}", rec.detail);
            }
            if in_line == 0 {
                let _ = write!(console, "DT {:x}", rec.index);
            }
            let _ = write!(console, " {}", rec.token());
            in_line += 1;
            if in_line == PER_LINE || req.verbose {
                let _ = writeln!(console);
                in_line = 0;
            }
        });
        if in_line > 0 {
            let _ = writeln!(console);
        }
        match r {
            Ok(s) => {
                let _ = writeln!(
                    console,
                    "PVOPS-DIFFTEST: end seed={seed} ops={} refused={} skipped={} held={} cleanup=ok",
                    s.ops, s.refused, s.skipped, s.held
                );
            }
            Err(v) => {
                let _ = writeln!(console, "PVOPS-DIFFTEST: broken seed={seed}: {v}");
                return Err(v);
            }
        }
    }
    Ok(())
}

//! `difftest-replay <guest log> [--mib M]`: replays every `PVOPS-DIFFTEST` block of a
//! guest-demo log on the model of Xen's rules and compares the records (run by `cargo xtask
//! difftest`). Prints one line per seed and `difftest: <seeds> seeds, <ops> operations, <d>
//! divergences`; exit 0 when every seed agreed, 1 on a divergence, 2 when the log or the
//! model run is unusable.

use pvops_tests::difftest::{compare_explained, parse_log, replay_verbose};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut log_path = None;
    let mut mib = 64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mib" => match it.next().and_then(|v| v.parse().ok()) {
                Some(m) => mib = m,
                None => {
                    eprintln!("difftest-replay: --mib needs a number");
                    return ExitCode::from(2);
                }
            },
            other => log_path = Some(other.to_string()),
        }
    }
    let Some(path) = log_path else {
        eprintln!("usage: difftest-replay <guest log> [--mib M]");
        return ExitCode::from(2);
    };
    let log = match std::fs::read_to_string(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("difftest-replay: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let runs = match parse_log(&log) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => {
            eprintln!("difftest-replay: {path}: no PVOPS-DIFFTEST block");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("difftest-replay: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut ops, mut divergences, mut broken) = (0u64, 0u32, false);
    for g in &runs {
        let end = g.end.as_deref().unwrap_or("");
        if !end.contains("cleanup=ok") {
            eprintln!(
                "difftest seed={} ({}): the guest's run did not finish: {}",
                g.seed,
                g.mode,
                if end.is_empty() { "(no end line)" } else { end }
            );
            broken = true;
        }
        let r = replay_verbose(g.seed, g.ops, mib, g.mode == "dom0", !g.verbose.is_empty());
        if let Err(v) = &r.result {
            eprintln!("difftest seed={}: the model's run broke: {v}", g.seed);
            broken = true;
        }
        let model_held = r.result.as_ref().map_or(0, |s| s.held);
        if !r.problems.is_empty() || r.leaked != i64::from(model_held) {
            eprintln!(
                "difftest seed={}: the model is inconsistent afterwards (leaked {}, held by Xen {}): {:?}",
                g.seed, r.leaked, model_held, r.problems
            );
            broken = true;
        }
        let guest_held = end
            .split_whitespace()
            .find_map(|w| w.strip_prefix("held="))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(h) = guest_held.filter(|h| *h != model_held) {
            println!(
                "seed {} ({}): after the cleanup the real Xen held {h} sandbox frame(s), the model {model_held}",
                g.seed, g.mode
            );
            divergences += 1;
        }
        ops += g.tokens.len() as u64;
        let refused = r
            .records
            .iter()
            .filter(|x| x.result.as_str().starts_with('-'))
            .count();
        match compare_explained(g, &r.records, &r.reasons) {
            Ok(()) => println!(
                "difftest seed={} mode={}: {} operations ({} refused by Xen), 0 divergences",
                g.seed,
                g.mode,
                g.tokens.len(),
                refused
            ),
            Err(e) => {
                divergences += 1;
                println!("{e}");
                if std::env::var_os("PVOPS_DIFFTEST_DUMP").is_some() {
                    let at = e
                        .lines()
                        .find_map(|l| l.split("record 0x").nth(1))
                        .and_then(|x| x.split(' ').next())
                        .and_then(|x| u32::from_str_radix(x, 16).ok())
                        .unwrap_or(0);
                    for (when, n) in [("before", at), ("after", at + 1)] {
                        println!("model state {when} record {at:#x}:");
                        for l in pvops_tests::difftest::dump_state(g.seed, n, mib, g.mode == "dom0")
                        {
                            println!("  {l}");
                        }
                    }
                }
                if let Ok(s) = &r.result {
                    let names: Vec<String> = s
                        .sandbox
                        .iter()
                        .enumerate()
                        .map(|(k, m)| format!("s{k}={:#x}", m.number()))
                        .collect();
                    println!("model sandbox: {}", names.join(" "));
                }
            }
        }
    }
    println!(
        "difftest: {} seeds, {ops} operations, {divergences} divergences",
        runs.len()
    );
    if broken {
        ExitCode::from(2)
    } else if divergences > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

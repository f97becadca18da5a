//! The host half of the differential test against the real Xen: the same seeded sequence
//! of page-table operations (`pvops_xen_conformance::difftest`) replayed on the model of
//! Xen's rules after a model boot, and compared record by record with what guest-demo
//! printed under the real Xen (`PVOPS-DIFFTEST` blocks of `DT` lines, see
//! `cargo xtask difftest`).

use crate::xen_model::{boot_domain, DomainConfig, XenBootRun};
use pvops_core::options::BootOptions;
use pvops_selftest::Verdict;
use pvops_xen_conformance::difftest::{self, Record, Summary};
use std::fmt::Write as _;

/// Records per `DT` line of the guest.
pub const PER_LINE: usize = 8;

/// One seed as the guest ran it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestRun {
    /// The seed.
    pub seed: u64,
    /// Operations asked for.
    pub ops: u32,
    /// `dom0` or `domU`.
    pub mode: String,
    /// Each record's compact form (`<result>.<digest>`), in order.
    pub tokens: Vec<String>,
    /// Full records (`DTV` lines) if the guest ran verbose.
    pub verbose: Vec<String>,
    /// The `end` line (`None`: the run did not finish).
    pub end: Option<String>,
}

/// The `PVOPS-DIFFTEST` blocks of a guest log, in order.
pub fn parse_log(log: &str) -> Result<Vec<GuestRun>, String> {
    let mut runs: Vec<GuestRun> = Vec::new();
    let mut cur: Option<GuestRun> = None;
    for line in log.lines() {
        let l = match line.find("PVOPS-DIFFTEST: ") {
            Some(at) => &line[at..],
            None => match line.find("DT") {
                Some(at) if line[at..].starts_with("DT ") || line[at..].starts_with("DTV ") => {
                    &line[at..]
                }
                _ => continue,
            },
        };
        if let Some(rest) = l.strip_prefix("PVOPS-DIFFTEST: begin ") {
            let mut r = GuestRun::default();
            for kv in rest.split_whitespace() {
                match kv.split_once('=') {
                    Some(("seed", v)) => r.seed = v.parse().map_err(|_| format!("bad `{l}`"))?,
                    Some(("ops", v)) => r.ops = v.parse().map_err(|_| format!("bad `{l}`"))?,
                    Some(("mode", v)) => r.mode = v.to_string(),
                    _ => {}
                }
            }
            if let Some(open) = cur.take() {
                runs.push(open);
            }
            cur = Some(r);
        } else if l.starts_with("PVOPS-DIFFTEST: end ") || l.starts_with("PVOPS-DIFFTEST: broken ")
        {
            if let Some(mut r) = cur.take() {
                r.end = Some(l.trim_end().to_string());
                runs.push(r);
            }
        } else if let Some(rest) = l.strip_prefix("DTV ") {
            if let Some(r) = cur.as_mut() {
                r.verbose.push(rest.trim_end().to_string());
            }
        } else if let Some(rest) = l.strip_prefix("DT ") {
            let Some(r) = cur.as_mut() else { continue };
            let mut words = rest.split_whitespace();
            let first = words
                .next()
                .and_then(|w| usize::from_str_radix(w, 16).ok())
                .ok_or_else(|| format!("bad DT line `{l}`"))?;
            if first != r.tokens.len() {
                return Err(format!(
                    "seed {}: DT line starts at record {first:#x}, expected {:#x} (lost console output?)",
                    r.seed,
                    r.tokens.len()
                ));
            }
            r.tokens.extend(words.map(str::to_string));
        }
    }
    if let Some(open) = cur {
        runs.push(open);
    }
    Ok(runs)
}

/// A booted model domain for a replay: `mib` MiB, dom0's I/O rights when `dom0`.
pub fn model_domain(mib: u32, dom0: bool) -> XenBootRun {
    model_domain_of(&DomainConfig::new(mib), dom0)
}

/// [`model_domain`] built as `cfg` says (its image size, say).
pub fn model_domain_of(cfg: &DomainConfig, dom0: bool) -> XenBootRun {
    let mut run = boot_domain(cfg.build(), BootOptions::default());
    run.expect_pass();
    run.model().set_privileged(dom0);
    run
}

/// What a replay on the model gave.
pub struct Replay {
    /// The records.
    pub records: Vec<Record>,
    /// The run's end.
    pub result: Result<Summary, Verdict>,
    /// The model's audit and violations afterwards (empty when consistent).
    pub problems: Vec<String>,
    /// Frames the allocator lost (the frames Xen holds, [`Summary::held`], among them).
    pub leaked: i64,
    /// Why the model refused what it refused, per record (a debug Xen's messages).
    pub reasons: Vec<Vec<String>>,
}

/// Replays `seed` for `ops` operations on a fresh model domain.
pub fn replay(seed: u64, ops: u32, mib: u32, dom0: bool) -> Replay {
    replay_verbose(seed, ops, mib, dom0, false)
}

/// [`replay`], with each record's entries in `detail` when `verbose`.
pub fn replay_verbose(seed: u64, ops: u32, mib: u32, dom0: bool, verbose: bool) -> Replay {
    replay_on(&DomainConfig::new(mib), seed, ops, dom0, verbose)
}

/// [`replay_verbose`] on a model domain built as `cfg` says. The records must not depend
/// on the domain's layout (e.g. its image size: the real guest's is not the model's).
pub fn replay_on(cfg: &DomainConfig, seed: u64, ops: u32, dom0: bool, verbose: bool) -> Replay {
    let mut run = model_domain_of(cfg, dom0);
    let free = run.state.alloc.available() as i64;
    let counters = run.model().counters_handle();
    let mut records = Vec::new();
    let mut ends = Vec::new();
    let result = difftest::run(&mut run.conformance_env(), seed, ops, verbose, &mut |r| {
        records.push(*r);
        ends.push(counters.get().total);
    });
    let m = run.model();
    let mut reasons = vec![Vec::new(); records.len()];
    for f in m.failures() {
        if let Some(i) = ends.iter().position(|e| *e >= f.seq) {
            reasons[i].push(format!(
                "{:?}[{}] {}: {}",
                f.kind, f.index, f.errno, f.reason
            ));
        }
    }
    let mut problems = m.audit();
    problems.extend(m.violations().iter().cloned());
    let leaked = free - run.state.alloc.available() as i64;
    Replay {
        records,
        result,
        problems,
        leaked,
        reasons,
    }
}

/// Compares the guest's records with the model's; `Err` holds the first divergence with the
/// records around it.
pub fn compare(guest: &GuestRun, model: &[Record]) -> Result<(), String> {
    compare_explained(guest, model, &[])
}

/// [`compare`], with the model's reasons for its refusals (per record) in the report.
pub fn compare_explained(
    guest: &GuestRun,
    model: &[Record],
    reasons: &[Vec<String>],
) -> Result<(), String> {
    let n = guest.tokens.len().max(model.len());
    for i in 0..n {
        let g = guest.tokens.get(i).map(String::as_str);
        let m = model.get(i).map(|r| r.token().to_string());
        if g == m.as_deref() {
            continue;
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {} ({}): first divergence at record {i:#x} of {}:",
            guest.seed, guest.mode, guest.ops
        );
        for j in i.saturating_sub(6)..(i + 4).min(n) {
            let mark = if j == i { ">>" } else { "  " };
            let real = guest.tokens.get(j).map_or("(none)", String::as_str);
            match model.get(j) {
                Some(r) => {
                    let _ = writeln!(s, "{mark} {r}\n{mark}    real Xen: {real}");
                    if !r.detail.as_str().is_empty() {
                        let _ = writeln!(s, "{mark}    model entries:{}", r.detail);
                    }
                    for why in reasons.get(j).into_iter().flatten() {
                        let _ = writeln!(s, "{mark}    model refused: {why}");
                    }
                }
                None => {
                    let _ = writeln!(
                        s,
                        "{mark} {j:x} (no model record)\n{mark}    real Xen: {real}"
                    );
                }
            }
            if let Some(v) = guest.verbose.get(j) {
                let _ = writeln!(s, "{mark}    real Xen (verbose): {v}");
            }
        }
        return Err(s);
    }
    Ok(())
}

/// The guest's `DT` lines for `records` (what guest-demo prints; used by the tests).
pub fn dt_lines(records: &[Record]) -> Vec<String> {
    records
        .chunks(PER_LINE)
        .enumerate()
        .map(|(c, chunk)| {
            let mut s = format!("DT {:x}", c * PER_LINE);
            for r in chunk {
                let _ = write!(s, " {}", r.token());
            }
            s
        })
        .collect()
}

/// The model's state of the sandbox frames after `ops` operations of `seed` (no cleanup):
/// one line per frame (type, count, pinned, linear count), to explain a divergence.
pub fn dump_state(seed: u64, ops: u32, mib: u32, dom0: bool) -> Vec<String> {
    let mut run = model_domain(mib, dom0);
    let r = difftest::run_without_cleanup(&mut run.conformance_env(), seed, ops, &mut |_| {});
    let Ok(s) = r else {
        return vec![format!("the run broke: {r:?}")];
    };
    let m = run.model();
    s.sandbox
        .iter()
        .enumerate()
        .map(|(k, mfn)| {
            let st = m.state_mfn(*mfn);
            format!(
                "s{k} mfn {:#x}: {:?} count {} pinned {} pae {} linear {}",
                mfn.number(),
                st.ty,
                st.count,
                st.pinned,
                st.pae_xen_l2,
                st.linear
            )
        })
        .collect()
}

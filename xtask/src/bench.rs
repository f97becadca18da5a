//! `cargo xtask bench`: the codegen check, the criterion bench and hypercall counts of the
//! Xen model, and real boots (native and Xen domUs at 512 MiB, batched and with
//! `pvops.batch=1`, in one run), printed as one table and written to
//! `target/pvops-bench.json`.
//!
//! One file (over 600 lines) because every figure is read from the same boots' logs by the
//! same `GuestFigures` and printed by the same table: the collection, the figures and the
//! table rows change together whenever a figure is added; most of the length is the table's
//! row list and the unit tests of the parsers.

use crate::harness::{self, Boot, Exit, Guest, Mode};
use crate::kernel;
use crate::util::{cmd, output, root, run, step, HarnessError, Res};
use std::collections::BTreeMap;
use std::path::Path;

/// A JSON value of the report (numbers, booleans, strings).
enum Value {
    Num(f64),
    Bool(bool),
}

/// The first number after `"key":` in `text` (flat JSON written by our own tools).
pub fn json_number(text: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let rest = text[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The key and value of a runtime-mapping line of `xen-model-cost`
/// (`{"runtime":"map","pages":N,"hypercalls":H,...}`): `xen_model_hypercalls_map_n<N>`.
fn runtime_key(line: &str) -> Option<(String, f64)> {
    let what = ["map", "unmap"]
        .into_iter()
        .find(|w| line.contains(&format!("\"runtime\":\"{w}\"")))?;
    let (n, h) = (
        json_number(line, "pages")?,
        json_number(line, "hypercalls")?,
    );
    Some((format!("xen_model_hypercalls_{what}_n{n}"), h))
}

/// Criterion's mean estimate (ns) of `group/bench`.
fn criterion_mean(group: &str, bench: &str) -> Res<f64> {
    let path = root()
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
    let mean = text.find("\"mean\"").map(|i| &text[i..]).unwrap_or("");
    json_number(mean, "point_estimate")
        .ok_or_else(|| HarnessError(format!("no mean estimate in {}", path.display())))
}

/// The `PVOPS-STATS: {...}` object of a guest log.
fn guest_stats(log: &str) -> Option<&str> {
    log.lines().find_map(|l| {
        l.find("PVOPS-STATS: ")
            .map(|i| &l[i + "PVOPS-STATS: ".len()..])
    })
}

/// Runs everything and writes the report. Returns the report's path.
pub fn bench() -> Res<std::path::PathBuf> {
    let root = root();
    let mut r: BTreeMap<String, Value> = BTreeMap::new();
    let elf = step("build guest-demo", || {
        kernel::build("guest-demo", "guest-demo")
    })?;
    let codegen = step("codegen: native set_pte vs the raw PAE store", || {
        kernel::codegen_check(&elf)
    })?;
    r.insert(
        "native_set_pte_same_code".into(),
        Value::Bool(codegen.same_code),
    );
    r.insert(
        "native_set_pte_instructions".into(),
        Value::Num(codegen.framework.len() as f64),
    );

    // `native_set_pte_ratio` (framework / raw stores on the host) is retired: it timed the
    // same store code against itself, so it was 1 by construction. The codegen check above
    // is the evidence that native set_pte is the raw store.
    step(
        "cargo bench (criterion: Xen direct map on the model; about 2 minutes)",
        || {
            run(cmd("cargo")
                .args([
                    "bench",
                    "--quiet",
                    "-p",
                    "pvops-benches",
                    "--bench",
                    "xen_directmap",
                ])
                .current_dir(&root))
        },
    )?;

    let costs = step("hypercall counts on the model (xen-model-cost)", || {
        output(
            cmd("cargo")
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "-p",
                    "pvops-benches",
                    "--bin",
                    "xen-model-cost",
                ])
                .current_dir(&root),
        )
    })?;
    for line in costs.lines() {
        // Runtime mapping (issue 10): `xen_model_hypercalls_{map,unmap}_n<N>`.
        if let Some((key, h)) = runtime_key(line) {
            r.insert(key, Value::Num(h));
            continue;
        }
        let (Some(n), Some(h)) = (json_number(line, "ptes"), json_number(line, "hypercalls"))
        else {
            continue;
        };
        let mode = ["batched", "batch32", "unbatched"]
            .into_iter()
            .find(|m| line.contains(&format!("\"mode\":\"{m}\"")))
            .unwrap_or("?");
        r.insert(format!("xen_model_hypercalls_{mode}_{n}"), Value::Num(h));
        if let Ok(ns) = criterion_mean("xen_directmap", &format!("{mode}_{n}"))
            .or_else(|_| criterion_mean("xen_directmap", &format!("{mode}/{n}")))
        {
            r.insert(format!("xen_model_ms_{mode}_{n}"), Value::Num(ns / 1e6));
        }
        if n == MODEL_PER_1000_AT && mode == "batched" {
            r.insert(
                "xen_model_hypercalls_per_1000_ptes".into(),
                Value::Num(h * 1000.0 / n),
            );
        }
        if n == MODEL_PER_1000_AT && mode == "unbatched" {
            r.insert(
                "xen_model_hypercalls_per_1000_ptes_unbatched".into(),
                Value::Num(h * 1000.0 / n),
            );
        }
    }

    // The host is shared and QEMU's process can lose the CPU in the middle of a stage (time
    // no guest can see): each configuration boots several times and the figures are those
    // of its fastest boot (smallest direct-map figure).
    let nat_boots = step(
        &format!("native boots (512 MiB, {NATIVE_BOOTS} times)"),
        || {
            let guests: Vec<Guest> = (0..NATIVE_BOOTS)
                .map(|_| Guest {
                    memory_mib: Some(512),
                    ..Guest::new(&elf)
                })
                .collect();
            passed(harness::boot(Mode::Native, &guests, false)?)
        },
    )?;
    let nat = fastest(&nat_boots, "native", |_| &[FIRST_DIRECT_MAP_STAGE])?;
    r.insert("native_boot_cycles".into(), Value::Num(nat.boot_cycles));
    r.insert(
        "native_directmap_cycles".into(),
        Value::Num(nat.stage(FIRST_DIRECT_MAP_STAGE)?),
    );
    r.insert("native_directmap_ptes".into(), Value::Num(nat.ptes));

    let cmdlines = [""; XEN_BATCHED_BOOTS]
        .into_iter()
        .chain(["pvops.batch=1"; XEN_UNBATCHED_BOOTS]);
    let guests: Vec<Guest> = cmdlines
        .map(|cmdline| Guest {
            memory_mib: Some(512),
            cmdline: cmdline.into(),
            ..Guest::new(&elf)
        })
        .collect();
    let out = step(
        &format!(
            "xen domUs at 512 MiB: {XEN_BATCHED_BOOTS} batched, {XEN_UNBATCHED_BOOTS} with pvops.batch=1 (one dom0 boot)"
        ),
        || passed(harness::boot(Mode::Xen, &guests, false)?),
    )?;
    let (b, u) = out.split_at(XEN_BATCHED_BOOTS);
    let batched = fastest(b, "xen batched", GuestFigures::direct_map)?;
    let unbatched = fastest(u, "xen batch=1", GuestFigures::direct_map)?;
    // The direct map under Xen: its tables are filled with plain stores (build_direct_map),
    // remapped read-only and validated by Xen when they go live (write_cr3), and Xen's
    // bootstrap table is unpinned and released (pagetable_setup_done). Time the vCPU did not
    // run is taken out.
    let (cb, cu) = (
        batched.running(batched.direct_map())?,
        unbatched.running(unbatched.direct_map())?,
    );
    r.insert("xen_directmap_cycles_batched".into(), Value::Num(cb));
    r.insert("xen_directmap_cycles_unbatched".into(), Value::Num(cu));
    r.insert(
        "xen_directmap_batched_over_unbatched".into(),
        Value::Num(cb / cu),
    );
    for (g, mode) in [(&batched, "batched"), (&unbatched, "unbatched")] {
        r.insert(
            format!("xen_directmap_hypercalls_{mode}"),
            Value::Num(g.sum(g.direct_map(), "hypercalls")?),
        );
        r.insert(
            format!("xen_directmap_notrun_ns_{mode}"),
            Value::Num(g.sum(g.direct_map(), "notrun_ns")?),
        );
        r.insert(
            format!("xen_boot_notrun_ns_{mode}"),
            Value::Num(g.sum(&g.boot_stages, "notrun_ns")?),
        );
    }
    r.insert("xen_directmap_ptes".into(), Value::Num(batched.ptes));
    r.insert(
        "xen_boot_cycles".into(),
        Value::Num(batched.running(&batched.boot_stages)?),
    );
    r.insert(
        "xen_boot_cycles_unbatched".into(),
        Value::Num(unbatched.running(&unbatched.boot_stages)?),
    );
    r.insert(
        "xen_cycles_per_us".into(),
        Value::Num(batched.cycles_per_us()?),
    );

    // The store phase, per PTE, on both backends in this run; then the same ratio for the
    // calibration loops (fixed arithmetic, fixed stores into one page), which tells how much
    // of it is the domU's clock and CPU rather than the kernel's code.
    let xen_store = batched.running(&[FIRST_DIRECT_MAP_STAGE])? / batched.ptes;
    let nat_store = nat.stage(FIRST_DIRECT_MAP_STAGE)? / nat.ptes;
    r.insert("native_store_cycles_per_pte".into(), Value::Num(nat_store));
    r.insert("xen_store_cycles_per_pte".into(), Value::Num(xen_store));
    r.insert(
        "xen_store_notrun_ns".into(),
        Value::Num(batched.get("build_direct_map_notrun_ns")?),
    );
    r.insert(
        "xen_store_cycles_raw".into(),
        Value::Num(batched.stage(FIRST_DIRECT_MAP_STAGE)?),
    );
    r.insert(
        "xen_vs_native_store_cycles_per_pte".into(),
        Value::Num(xen_store / nat_store),
    );
    for (g, who) in [(&nat, "native"), (&batched, "xen")] {
        r.insert(
            format!("{who}_calibrate_alu_cycles"),
            Value::Num(g.calibration("alu")?),
        );
        r.insert(
            format!("{who}_calibrate_store_cycles"),
            Value::Num(g.calibration("store")?),
        );
    }
    let alu = batched.calibration("alu")? / nat.calibration("alu")?;
    let stores = batched.calibration("store")? / nat.calibration("store")?;
    r.insert("xen_vs_native_alu_loop".into(), Value::Num(alu));
    r.insert("xen_vs_native_store_loop".into(), Value::Num(stores));
    r.insert(
        "xen_vs_native_store_cycles_per_pte_over_store_loop".into(),
        Value::Num(xen_store / nat_store / stores),
    );

    // The store phase's profile (guest-demo's profile.rs): each part of the per-PTE work
    // timed in its own loop over as many frames as the direct map has PTEs, per PTE, on both
    // backends; then the stage's cycles per PTE that the loops do not account for.
    for (g, who) in [(&nat, "native"), (&batched, "xen")] {
        let n = g.get("profile_ptes")?;
        for part in PROFILE_PARTS {
            r.insert(
                format!("{who}_profile_{part}_cycles_per_pte"),
                Value::Num(g.get(&format!("profile_{part}_cycles"))? / n),
            );
        }
        r.insert(
            format!("{who}_profile_zero_cycles_per_table"),
            Value::Num(g.get("profile_zero_cycles")? / g.get("profile_tables")?),
        );
    }
    for part in PROFILE_PARTS {
        let k = |who: &str| format!("{who}_profile_{part}_cycles_per_pte");
        let ratio = match (r.get(&k("xen")), r.get(&k("native"))) {
            (Some(Value::Num(x)), Some(Value::Num(n))) => x / n,
            _ => continue,
        };
        r.insert(format!("xen_vs_native_profile_{part}"), Value::Num(ratio));
    }

    print_table(&r);
    let path = root.join("target/pvops-bench.json");
    write_json(&path, &r)?;
    eprintln!("wrote {}", path.display());
    Ok(path)
}

/// Native boots per bench run.
const NATIVE_BOOTS: usize = 5;
/// Xen domUs per bench run, batched and with `pvops.batch=1`.
const XEN_BATCHED_BOOTS: usize = 3;
/// See [`XEN_BATCHED_BOOTS`].
const XEN_UNBATCHED_BOOTS: usize = 2;

/// The figures of the boot whose `stages` took the fewest cycles (not-running time out).
fn fastest<'a>(
    boots: &'a [Boot],
    what: &'a str,
    stages: impl for<'g> Fn(&'g GuestFigures<'a>) -> &'g [&'a str],
) -> Res<GuestFigures<'a>> {
    let mut best: Option<(f64, GuestFigures<'a>)> = None;
    for b in boots {
        let g = GuestFigures::of(&b.log, what)?;
        let c = g.running(stages(&g))?;
        if best.as_ref().is_none_or(|(bc, _)| c < *bc) {
            best = Some((c, g));
        }
    }
    best.map(|(_, g)| g)
        .ok_or_else(|| HarnessError(format!("{what}: no boot")))
}

/// The model's hypercalls per 1000 PTEs are reported at this size (the 512 MiB domU's).
const MODEL_PER_1000_AT: f64 = 131072.0;
/// The parts of the store phase's profile, as `profile_<part>_cycles` in `PVOPS-STATS`.
const PROFILE_PARTS: [&str; 6] = ["loop", "p2m", "is_table", "raw_store", "set_pte", "body"];

/// The last stage of the boot path (README: "Guest output").
const LAST_BOOT_STAGE: &str = "pagetable_setup_done";
/// The first of the stages that make the direct map live under Xen: its tables are filled
/// (`build_direct_map`), go live (`write_cr3`), and Xen's bootstrap table is released
/// (`pagetable_setup_done`).
const FIRST_DIRECT_MAP_STAGE: &str = "build_direct_map";

/// The boot path's stages as the guest printed them (`stage <name> ok`), in order, up to
/// [`LAST_BOOT_STAGE`].
fn boot_stages(log: &str) -> Vec<&str> {
    let mut stages = Vec::new();
    for l in log.lines() {
        let Some(name) = l
            .find("stage ")
            .and_then(|at| l[at + "stage ".len()..].split_once(" ok"))
            .map(|(name, _)| name)
        else {
            continue;
        };
        stages.push(name);
        if name == LAST_BOOT_STAGE {
            break;
        }
    }
    stages
}

/// The `PVOPS-STATS` line of one guest.
struct GuestFigures<'a> {
    stats: &'a str,
    what: &'a str,
    ptes: f64,
    boot_cycles: f64,
    /// The boot path's stages, from the log.
    boot_stages: Vec<&'a str>,
}

impl<'a> GuestFigures<'a> {
    fn of(log: &'a str, what: &'a str) -> Res<GuestFigures<'a>> {
        let stats = guest_stats(log)
            .ok_or_else(|| HarnessError(format!("{what}: no PVOPS-STATS line (guest failed?)")))?;
        let boot_stages = boot_stages(log);
        if boot_stages.last() != Some(&LAST_BOOT_STAGE)
            || !boot_stages.contains(&FIRST_DIRECT_MAP_STAGE)
        {
            return Err(HarnessError(format!(
                "{what}: the log's stages {boot_stages:?} do not run from {FIRST_DIRECT_MAP_STAGE} to {LAST_BOOT_STAGE}"
            )));
        }
        let mut g = GuestFigures {
            stats,
            what,
            ptes: 0.0,
            boot_cycles: 0.0,
            boot_stages,
        };
        g.ptes = g.get("ptes")?;
        g.boot_cycles = g.get("boot_cycles")?;
        Ok(g)
    }
    fn get(&self, key: &str) -> Res<f64> {
        json_number(self.stats, key)
            .ok_or_else(|| HarnessError(format!("{}: PVOPS-STATS has no {key}", self.what)))
    }
    /// The stages that make the direct map live (from [`FIRST_DIRECT_MAP_STAGE`] to the end of
    /// the boot path).
    fn direct_map(&self) -> &[&'a str] {
        let first = self
            .boot_stages
            .iter()
            .position(|s| *s == FIRST_DIRECT_MAP_STAGE)
            .unwrap_or(0);
        &self.boot_stages[first..]
    }
    /// The sum over `stages` of `<stage>_<key>`.
    fn sum(&self, stages: &[&str], key: &str) -> Res<f64> {
        stages.iter().map(|s| self.get(&format!("{s}_{key}"))).sum()
    }
    fn stage(&self, stage: &str) -> Res<f64> {
        self.get(&format!("{stage}_cycles"))
    }
    /// Cycles per microsecond the guest measured against Xen's clock.
    fn cycles_per_us(&self) -> Res<f64> {
        self.get("cycles_per_us")
    }
    /// The stages' cycles minus the time the vCPU did not run (converted with the guest's
    /// own cycles-per-microsecond; nothing to take out where the platform has no runstate).
    fn running(&self, stages: &[&str]) -> Res<f64> {
        let cycles = self.sum(stages, "cycles")?;
        let notrun_ns = self.sum(stages, "notrun_ns")?;
        if notrun_ns == 0.0 {
            return Ok(cycles);
        }
        Ok(cycles - notrun_ns * self.cycles_per_us()? / 1000.0)
    }
    /// A calibration loop's cycles (`alu` or `store`): its fastest round.
    fn calibration(&self, which: &str) -> Res<f64> {
        self.get(&format!("calibrate_{which}_cycles"))
    }
}

/// The boots, or an error when one did not end with PASS through its exit protocol.
fn passed(boots: Vec<Result<Boot, String>>) -> Res<Vec<Boot>> {
    boots
        .into_iter()
        .map(|b| match b {
            Ok(b) if b.exit == Exit::Pass => Ok(b),
            Ok(b) => Err(HarnessError(format!("guest did not PASS ({})", b.ending))),
            Err(e) => Err(HarnessError(e)),
        })
        .collect()
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
        Value::Num(n) => format!("{n:.4}"),
    }
}

fn print_table(r: &BTreeMap<String, Value>) {
    let get = |k: &str| r.get(k).map(fmt_value).unwrap_or_else(|| "-".into());
    println!();
    println!("{:<58} {:>16}   target", "measure", "value");
    let rows = [
        (
            "native set_pte: same code as the raw PAE store",
            "native_set_pte_same_code",
            "true",
        ),
        (
            "Xen model, N=131072: hypercalls per 1000 PTEs (batched)",
            "xen_model_hypercalls_per_1000_ptes",
            "<= ceil(N/512)+8 => 2.01",
        ),
        (
            "Xen model, N=131072: hypercalls per 1000 PTEs (batch=1)",
            "xen_model_hypercalls_per_1000_ptes_unbatched",
            "reference",
        ),
        (
            "Xen model: map 256 pages in one lazy section (hypercalls)",
            "xen_model_hypercalls_map_n256",
            "<= ceil(N/512)+4 = 5",
        ),
        (
            "Xen model: unmap 256 pages + flush in one lazy section",
            "xen_model_hypercalls_unmap_n256",
            "<= 5",
        ),
        (
            "Xen model: map 4096 pages in one lazy section (hypercalls)",
            "xen_model_hypercalls_map_n4096",
            "<= ceil(N/512)+4 = 12",
        ),
        (
            "Xen model: unmap 4096 pages + flush in one lazy section",
            "xen_model_hypercalls_unmap_n4096",
            "<= 12",
        ),
        ("", "", ""),
        (
            "Xen domU 512 MiB: direct map cycles (3 stages), batched",
            "xen_directmap_cycles_batched",
            "",
        ),
        (
            "Xen domU 512 MiB: direct map cycles (3 stages), batch=1",
            "xen_directmap_cycles_unbatched",
            "",
        ),
        (
            "Xen domU 512 MiB: direct map batched / batch=1",
            "xen_directmap_batched_over_unbatched",
            "<= 0.333",
        ),
        (
            "Xen domU: direct map hypercalls, batched",
            "xen_directmap_hypercalls_batched",
            "",
        ),
        (
            "Xen domU: direct map hypercalls, batch=1",
            "xen_directmap_hypercalls_unbatched",
            "",
        ),
        (
            "Xen domU: direct map not-running ns, batched",
            "xen_directmap_notrun_ns_batched",
            "taken out",
        ),
        (
            "Xen domU: direct map not-running ns, batch=1",
            "xen_directmap_notrun_ns_unbatched",
            "taken out",
        ),
        (
            "store phase (build_direct_map): native cycles per PTE",
            "native_store_cycles_per_pte",
            "",
        ),
        (
            "store phase (build_direct_map): Xen cycles per PTE",
            "xen_store_cycles_per_pte",
            "",
        ),
        (
            "store phase: Xen not-running ns (taken out above)",
            "xen_store_notrun_ns",
            "",
        ),
        (
            "store phase: Xen / native per PTE",
            "xen_vs_native_store_cycles_per_pte",
            "<= 2 or explained",
        ),
        (
            "profile per PTE, native: map_linear's body (p2m, is_table, set_pte)",
            "native_profile_body_cycles_per_pte",
            "",
        ),
        (
            "profile per PTE, Xen: map_linear's body (p2m, is_table, set_pte)",
            "xen_profile_body_cycles_per_pte",
            "",
        ),
        (
            "profile: Xen / native, the body",
            "xen_vs_native_profile_body",
            "<= 2 or explained",
        ),
        (
            "profile: Xen / native, set_pte into a detached table",
            "xen_vs_native_profile_set_pte",
            "",
        ),
        (
            "profile: Xen / native, two raw stores into that table",
            "xen_vs_native_profile_raw_store",
            "",
        ),
        (
            "profile: Xen / native, p2m lookup",
            "xen_vs_native_profile_p2m",
            "",
        ),
        (
            "profile per table, native: zeroing a frame",
            "native_profile_zero_cycles_per_table",
            "",
        ),
        (
            "profile per table, Xen: zeroing a frame",
            "xen_profile_zero_cycles_per_table",
            "",
        ),
        (
            "calibration: Xen / native, fixed arithmetic loop",
            "xen_vs_native_alu_loop",
            "",
        ),
        (
            "calibration: Xen / native, fixed store loop",
            "xen_vs_native_store_loop",
            "",
        ),
        (
            "store phase ratio / store-loop ratio (the kernel's part)",
            "xen_vs_native_store_cycles_per_pte_over_store_loop",
            "<= 2",
        ),
        (
            "Xen domU: TSC cycles per us of Xen system time",
            "xen_cycles_per_us",
            "",
        ),
        (
            "native boot cycles (QEMU TCG, 512 MiB)",
            "native_boot_cycles",
            "reported",
        ),
        (
            "Xen boot cycles (domU 512 MiB, not-running time out)",
            "xen_boot_cycles",
            "reported",
        ),
    ];
    for (label, key, target) in rows {
        if key.is_empty() {
            for n in [1024, 65536, 131072] {
                let v = ["batched", "batch32", "unbatched"]
                    .map(|m| get(&format!("xen_model_hypercalls_{m}_{n}")));
                println!(
                    "{:<58} {:>16}   {}",
                    format!("Xen model, N={n}: hypercalls batched/32/1"),
                    v.join(" / "),
                    if n == 131072 { "bound 264" } else { "" }
                );
            }
            continue;
        }
        println!("{label:<58} {:>16}   {target}", get(key));
    }
    println!();
}

fn write_json(path: &Path, r: &BTreeMap<String, Value>) -> Res<()> {
    let body: Vec<String> = r
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {}", fmt_value(v)))
        .collect();
    std::fs::write(path, format!("{{\n{}\n}}\n", body.join(",\n")))
        .map_err(|e| HarnessError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::{boot_stages, json_number, runtime_key, GuestFigures};

    /// The Xen figures take the vCPU's not-running time out of the stages' cycles, converted
    /// with the guest's own cycles per microsecond; a guest without a runstate (0 ns) keeps
    /// its cycles.
    #[test]
    fn not_running_time_is_taken_out_of_the_direct_map() {
        let stages: Vec<&str> =
            "banner early_ioremap pagetable_setup_start build_direct_map write_cr3 pagetable_setup_done"
                .split(' ')
                .collect();
        let mut log: String = stages
            .iter()
            .map(|s| format!("stage {s} ok cycles=1\n"))
            .collect();
        log.push_str("PVOPS-STATS: {\"backend\":\"xen\",\"ptes\":131072,\"boot_cycles\":9");
        for (i, s) in stages.iter().enumerate() {
            // build_direct_map 40M cycles and 5 ms not running, write_cr3 100M and 10 ms, ...
            let (cycles, notrun) = [(1, 0), (2, 0), (3, 0), (40, 5), (100, 10), (7, 1)][i];
            log.push_str(&format!(
                ",\"{s}_cycles\":{},\"{s}_notrun_ns\":{},\"{s}_hypercalls\":{i}",
                cycles * 1_000_000,
                notrun * 1_000_000
            ));
        }
        log.push_str(",\"cycles_per_us\":2600}\n");
        let g = GuestFigures::of(&log, "test").unwrap();
        assert_eq!(
            g.direct_map(),
            ["build_direct_map", "write_cr3", "pagetable_setup_done"]
        );
        // (40 + 100 + 7) M cycles - (5 + 10 + 1) ms at 2600 cycles per us.
        assert_eq!(g.running(g.direct_map()).unwrap(), 105_400_000.0);
        assert_eq!(
            g.sum(g.direct_map(), "hypercalls").unwrap(),
            3.0 + 4.0 + 5.0
        );
        // Stages the vCPU ran through whole keep their cycles.
        assert_eq!(g.running(&["banner", "early_ioremap"]).unwrap(), 3e6);
    }

    /// Stage lines as a domU prints them, with a stage of the kernel's own after the boot path.
    #[test]
    fn boot_stages_end_at_pagetable_setup_done() {
        let log = "\
xen: entered in ring 1, start_info at 0xc0390000, esp=0xc0394000
stage banner ok cycles=41398731 hypercalls=2 mmu_update=0/0 mmuext_op=0/0 update_va_mapping=0 multicall=0
stage early_ioremap ok cycles=1651043 hypercalls=2 mmu_update=2/2 mmuext_op=0/0 update_va_mapping=0 multicall=0
stage pagetable_setup_start ok cycles=36014 hypercalls=0 mmu_update=0/0 mmuext_op=0/0 update_va_mapping=0 multicall=0
stage build_direct_map ok cycles=6530473 hypercalls=0 mmu_update=0/0 mmuext_op=0/0 update_va_mapping=0 multicall=0
stage write_cr3 ok cycles=16279011 hypercalls=3 mmu_update=1/34 mmuext_op=2/2 update_va_mapping=0 multicall=0
stage pagetable_setup_done ok cycles=1147744 hypercalls=3 mmu_update=1/5 mmuext_op=2/2 update_va_mapping=0 multicall=0
stage exercise ok cycles=2374736 hypercalls=0 mmu_update=0/0 mmuext_op=0/0 update_va_mapping=0 multicall=0
";
        assert_eq!(
            boot_stages(log),
            [
                "banner",
                "early_ioremap",
                "pagetable_setup_start",
                "build_direct_map",
                "write_cr3",
                "pagetable_setup_done"
            ]
        );
    }

    #[test]
    fn runtime_mapping_lines_give_their_keys() {
        let line =
            r#"{"runtime":"unmap","pages":4096,"hypercalls":5,"mmu_update_calls":4,"bound":12}"#;
        assert_eq!(
            runtime_key(line),
            Some(("xen_model_hypercalls_unmap_n4096".to_string(), 5.0))
        );
        let line = r#"{"runtime":"map","pages":256,"hypercalls":1,"bound":5}"#;
        assert_eq!(
            runtime_key(line),
            Some(("xen_model_hypercalls_map_n256".to_string(), 1.0))
        );
        assert_eq!(runtime_key(r#"{"ptes":1024,"hypercalls":3}"#), None);
    }

    #[test]
    fn numbers() {
        let s = r#"{"backend":"xen","boot_cycles":119205228,"x":1.5e3,"mean":{"point_estimate":42.25}}"#;
        assert_eq!(json_number(s, "boot_cycles"), Some(119205228.0));
        assert_eq!(json_number(s, "x"), Some(1500.0));
        assert_eq!(json_number(s, "point_estimate"), Some(42.25));
        assert_eq!(json_number(s, "nope"), None);
    }
}

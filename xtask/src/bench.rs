//! `cargo xtask bench`: criterion benches, the model's hypercall counts, and real boots
//! (native; Xen domU at 512 MiB batched and with `pvops.batch=1`, in one run), printed as one
//! table and written to `target/pvops-bench.json`.

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

fn stat(log: &str, what: &str, key: &str) -> Res<f64> {
    let s = guest_stats(log)
        .ok_or_else(|| HarnessError(format!("{what}: no PVOPS-STATS line (guest failed?)")))?;
    json_number(s, key).ok_or_else(|| HarnessError(format!("{what}: PVOPS-STATS has no {key}")))
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

    step(
        "cargo bench (criterion: native set_pte, Xen direct map on the model; about 2 minutes)",
        || {
            run(cmd("cargo")
                .args(["bench", "--quiet", "-p", "pvops-benches"])
                .current_dir(&root))
        },
    )?;
    let (fw, raw) = (
        criterion_mean("native_set_pte", "framework")?,
        criterion_mean("native_set_pte", "raw")?,
    );
    r.insert("native_set_pte_framework_ns_per_512".into(), Value::Num(fw));
    r.insert("native_set_pte_raw_ns_per_512".into(), Value::Num(raw));
    r.insert("native_set_pte_ratio".into(), Value::Num(fw / raw));

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
        if n == 262144.0 && mode == "batched" {
            r.insert(
                "xen_model_hypercalls_per_1000_ptes".into(),
                Value::Num(h * 1000.0 / n),
            );
        }
        if n == 262144.0 && mode == "unbatched" {
            r.insert(
                "xen_model_hypercalls_per_1000_ptes_unbatched".into(),
                Value::Num(h * 1000.0 / n),
            );
        }
    }

    let nat = step("native boot (128 MiB)", || {
        let guest = Guest {
            memory_mib: Some(128),
            ..Guest::new(&elf)
        };
        passed(harness::boot(Mode::Native, &[guest], false)?)
    })?
    .remove(0);
    r.insert(
        "native_boot_cycles".into(),
        Value::Num(stat(&nat.log, "native", "boot_cycles")?),
    );
    r.insert(
        "native_directmap_cycles".into(),
        Value::Num(stat(&nat.log, "native", "build_direct_map_cycles")?),
    );

    let guests = ["", "pvops.batch=1"].map(|cmdline| Guest {
        memory_mib: Some(512),
        cmdline: cmdline.into(),
        ..Guest::new(&elf)
    });
    let out = step(
        "xen domUs at 512 MiB: batched and pvops.batch=1 (one dom0 boot)",
        || passed(harness::boot(Mode::Xen, &guests, false)?),
    )?;
    let [batched, unbatched] = [&out[0].log, &out[1].log];
    let (cb, cu) = (
        stat(batched, "xen batched", "build_direct_map_cycles")?,
        stat(unbatched, "xen batch=1", "build_direct_map_cycles")?,
    );
    r.insert("xen_directmap_cycles_batched".into(), Value::Num(cb));
    r.insert("xen_directmap_cycles_unbatched".into(), Value::Num(cu));
    r.insert(
        "xen_directmap_batched_over_unbatched".into(),
        Value::Num(cb / cu),
    );
    r.insert(
        "xen_directmap_hypercalls_batched".into(),
        Value::Num(stat(batched, "xen", "build_direct_map_hypercalls")?),
    );
    r.insert(
        "xen_directmap_hypercalls_unbatched".into(),
        Value::Num(stat(unbatched, "xen", "build_direct_map_hypercalls")?),
    );
    r.insert(
        "xen_directmap_ptes".into(),
        Value::Num(stat(batched, "xen", "ptes")?),
    );
    r.insert(
        "xen_boot_cycles".into(),
        Value::Num(stat(batched, "xen", "boot_cycles")?),
    );
    r.insert(
        "xen_boot_cycles_unbatched".into(),
        Value::Num(stat(unbatched, "xen", "boot_cycles")?),
    );

    print_table(&r);
    let path = root.join("target/pvops-bench.json");
    write_json(&path, &r)?;
    eprintln!("wrote {}", path.display());
    Ok(path)
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
            "native set_pte: framework / raw (512-entry batches, host)",
            "native_set_pte_ratio",
            "<= 1.05",
        ),
        (
            "Xen model, N=262144: hypercalls per 1000 PTEs (batched)",
            "xen_model_hypercalls_per_1000_ptes",
            "<= ceil(N/512)+8 => 1.98",
        ),
        (
            "Xen model, N=262144: hypercalls per 1000 PTEs (batch=1)",
            "xen_model_hypercalls_per_1000_ptes_unbatched",
            "reference",
        ),
        (
            "Xen model, N=1024: hypercalls batched / batch32 / batch=1",
            "",
            "",
        ),
        (
            "real Xen domU 512 MiB: direct-map cycles, batched",
            "xen_directmap_cycles_batched",
            "",
        ),
        (
            "real Xen domU 512 MiB: direct-map cycles, pvops.batch=1",
            "xen_directmap_cycles_unbatched",
            "",
        ),
        (
            "real Xen domU 512 MiB: batched / batch=1 (cycles)",
            "xen_directmap_batched_over_unbatched",
            "<= 0.333",
        ),
        (
            "real Xen domU: direct-map hypercalls batched",
            "xen_directmap_hypercalls_batched",
            "",
        ),
        (
            "real Xen domU: direct-map hypercalls batch=1",
            "xen_directmap_hypercalls_unbatched",
            "",
        ),
        (
            "native boot cycles (QEMU TCG, 128 MiB)",
            "native_boot_cycles",
            "reported",
        ),
        (
            "xen boot cycles (domU 512 MiB, emulated TSC)",
            "xen_boot_cycles",
            "reported",
        ),
    ];
    for (label, key, target) in rows {
        if key.is_empty() {
            for n in [1024, 65536, 262144] {
                let v = ["batched", "batch32", "unbatched"]
                    .map(|m| get(&format!("xen_model_hypercalls_{m}_{n}")));
                println!(
                    "{:<58} {:>16}   {}",
                    format!("Xen model, N={n}: hypercalls batched/32/1"),
                    v.join(" / "),
                    if n == 262144 { "bound 520" } else { "" }
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
    use super::json_number;
    #[test]
    fn numbers() {
        let s = r#"{"backend":"xen","boot_cycles":119205228,"x":1.5e3,"mean":{"point_estimate":42.25}}"#;
        assert_eq!(json_number(s, "boot_cycles"), Some(119205228.0));
        assert_eq!(json_number(s, "x"), Some(1500.0));
        assert_eq!(json_number(s, "point_estimate"), Some(42.25));
        assert_eq!(json_number(s, "nope"), None);
    }
}

//! Building kernel images (guest-demo, and later other kernels) for the i686 target.

use crate::util::{cmd, root, run, Res};
use std::path::PathBuf;

/// The one target spec of every pvops kernel (shipped by pvops-build), from the workspace root.
pub const TARGET_JSON: &str = "pvops-build/i686-pvops.json";

/// Builds the release kernel in `dir` (a crate with the pvops target config) and copies the
/// ELF to `target/<name>.elf`; returns that path.
pub fn build(dir: &str, bin: &str) -> Res<PathBuf> {
    build_with(dir, bin, &[], bin)
}

/// [`build`] with cargo `features` switched on, copied to `target/<out>.elf`.
pub fn build_with(dir: &str, bin: &str, features: &[&str], out: &str) -> Res<PathBuf> {
    build_profile(dir, bin, features, out, true)
}

/// The unoptimised (`cargo build` without `--release`, the dev profile) kernel in `dir`,
/// copied to `target/<out>.elf`: what a kernel author's plain `cargo run` boots.
pub fn build_debug(dir: &str, bin: &str, out: &str) -> Res<PathBuf> {
    build_profile(dir, bin, &[], out, false)
}

fn build_profile(
    dir: &str,
    bin: &str,
    features: &[&str],
    out: &str,
    release: bool,
) -> Res<PathBuf> {
    let root = root();
    let crate_dir = root.join(dir);
    let target_json = root.join(TARGET_JSON);
    let target_dir = root.join("target/kernel");
    run(cmd("rustup")
        .args(["run", "nightly", "cargo", "build", "--quiet"])
        .args(release.then_some("--release"))
        .arg("--target")
        .arg(&target_json)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(features.iter().flat_map(|f| ["--features", f]))
        .current_dir(&crate_dir))?;
    let profile = if release { "release" } else { "debug" };
    let built = target_dir.join("i686-pvops").join(profile).join(bin);
    let out = root.join("target").join(format!("{out}.elf"));
    std::fs::copy(&built, &out)
        .map_err(|e| format!("copy {} -> {}: {e}", built.display(), out.display()))?;
    Ok(out)
}

/// Runs clippy on the kernel crate for the real i686 target (the hardware code only exists there).
pub fn clippy(dir: &str) -> Res<()> {
    let root = root();
    let crate_dir = root.join(dir);
    run(cmd("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--release",
            "--quiet",
            "--target",
        ])
        .arg(root.join(TARGET_JSON))
        .arg("--target-dir")
        .arg(root.join("target/kernel"))
        .args(["--", "-D", "warnings"])
        .current_dir(&crate_dir))
}

/// The result of the native `set_pte` codegen check.
pub struct CodegenCheck {
    /// True when the framework probe and the raw probe are the same instruction sequence.
    pub same_code: bool,
    /// True when the compiler merged the two bodies into one (MergeFunctions makes one symbol
    /// an alias of the other only when their optimized code is identical).
    pub merged: bool,
    /// The framework probe's instructions (addresses stripped).
    pub framework: Vec<String>,
    /// The raw probe's instructions.
    pub raw: Vec<String>,
}

const PROBE_FRAMEWORK: &str = "pvops_probe_set_pte_framework";
const PROBE_RAW: &str = "pvops_probe_set_pte_raw";

fn symbol_address(elf: &std::path::Path, name: &str) -> Res<String> {
    let nm = crate::util::output(cmd("nm").arg(elf))?;
    nm.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let (addr, _, sym) = (it.next()?, it.next()?, it.next()?);
            (sym == name).then(|| addr.to_string())
        })
        .ok_or_else(|| {
            crate::util::HarnessError(format!("symbol {name} not found in {}", elf.display()))
        })
}

fn disassemble(elf: &std::path::Path, name: &str) -> Res<Vec<String>> {
    let text = crate::util::output(
        cmd("objdump")
            .args(["-d", "--no-show-raw-insn", &format!("--disassemble={name}")])
            .arg(elf),
    )?;
    let body = text.split(&format!("<{name}>:")).nth(1).unwrap_or("");
    Ok(body
        .lines()
        .skip(1) // the rest of the `<name>:` line
        .map_while(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with("Disassembly") {
                return None;
            }
            l.split_once(":\t")
                .map(|(_, insn)| insn.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect())
}

/// What one PAE primitive of the native backend compiles to (a probe of
/// guest-demo/src/probes.rs).
pub struct PrimitiveCheck {
    /// The primitive (`set_pmd`, `pte_clear`, ...).
    pub name: &'static str,
    /// What was required of its code.
    pub rule: &'static str,
    /// `None` when the code keeps the rule, else why not.
    pub failure: Option<String>,
    /// The probe's instructions.
    pub insns: Vec<String>,
}

/// The primitives beside `set_pte`: (name, probe symbol, rule).
const PRIMITIVES: [(&str, &str, Rule); 6] = [
    (
        "set_pte_atomic",
        "pvops_probe_set_pte_atomic",
        Rule::Cmpxchg8b,
    ),
    ("set_pmd", "pvops_probe_set_pmd", Rule::Cmpxchg8b),
    ("set_pud", "pvops_probe_set_pud", Rule::Cmpxchg8b),
    ("pte_clear", "pvops_probe_pte_clear", Rule::LowFirst),
    ("pmd_clear", "pvops_probe_pmd_clear", Rule::LowFirst),
    ("pud_clear", "pvops_probe_pud_clear", Rule::LowFirstThenCr3),
];

#[derive(Clone, Copy)]
enum Rule {
    /// One `lock cmpxchg8b` store.
    Cmpxchg8b,
    /// Zero stores to the entry's low half, then its high half.
    LowFirst,
    /// As `LowFirst`, and a write of cr3.
    LowFirstThenCr3,
}

impl Rule {
    fn text(self) -> &'static str {
        match self {
            Rule::Cmpxchg8b => "one lock cmpxchg8b",
            Rule::LowFirst => "low half stored before the high half",
            Rule::LowFirstThenCr3 => "low half stored before the high half, then a cr3 write",
        }
    }
}

/// The memory operand of `movl $0x0,<disp>(<regs>)`: (displacement, registers).
fn zero_store(insn: &str) -> Option<(i64, String)> {
    let op = insn.strip_prefix("movl $0x0,")?;
    let open = op.find('(')?;
    let (disp, regs) = (&op[..open], &op[open..]);
    let value = match disp.strip_prefix('-') {
        Some(d) => -i64::from_str_radix(d.trim_start_matches("0x"), 16).ok()?,
        None if disp.is_empty() => 0,
        None => i64::from_str_radix(disp.trim_start_matches("0x"), 16).ok()?,
    };
    Some((value, regs.to_string()))
}

/// Why `insns` break `rule`, or `None`.
fn judge(rule: Rule, insns: &[String]) -> Option<String> {
    // objdump prints the prefix on the instruction's line, or alone on the line before it.
    let locked = insns.iter().enumerate().any(|(n, i)| {
        i.starts_with("lock cmpxchg8b")
            || (i == "lock" && insns.get(n + 1).is_some_and(|j| j.starts_with("cmpxchg8b")))
    });
    match rule {
        Rule::Cmpxchg8b => (!locked).then(|| "no lock cmpxchg8b".to_string()),
        Rule::LowFirst | Rule::LowFirstThenCr3 => {
            let stores: Vec<(i64, String)> = insns.iter().filter_map(|i| zero_store(i)).collect();
            let pair = stores.iter().enumerate().find_map(|(a, (d, r))| {
                stores[a + 1..]
                    .iter()
                    .find(|(d2, r2)| r2 == r && (d2 - d).abs() == 4)
                    .map(|(d2, _)| (*d, *d2))
            });
            let order = match pair {
                None => Some("no pair of zero stores to one entry's two halves".to_string()),
                Some((first, second)) if first > second => {
                    Some("the high half is stored first".to_string())
                }
                Some(_) => None,
            };
            let cr3 = matches!(rule, Rule::LowFirstThenCr3)
                && !insns
                    .iter()
                    .any(|i| i.starts_with("mov") && i.ends_with(",%cr3"));
            order.or_else(|| cr3.then(|| "no write of cr3".to_string()))
        }
    }
}

/// The instructions of `name`, also when the compiler merged it with an identical function
/// (objdump then labels the code with the other symbol only).
fn disassemble_alias(elf: &std::path::Path, name: &str) -> Res<Vec<String>> {
    let insns = disassemble(elf, name)?;
    if !insns.is_empty() {
        return Ok(insns);
    }
    let addr = symbol_address(elf, name)?;
    let nm = crate::util::output(cmd("nm").arg(elf))?;
    for other in nm.lines().filter_map(|l| {
        let mut it = l.split_whitespace();
        let (a, _, sym) = (it.next()?, it.next()?, it.next()?);
        (a == addr && sym != name).then(|| sym.to_string())
    }) {
        let insns = disassemble(elf, &other)?;
        if !insns.is_empty() {
            return Ok(insns);
        }
    }
    Ok(Vec::new())
}

/// Disassembles the primitive probes of guest-demo and judges each against its PAE rule.
pub fn primitive_checks(elf: &std::path::Path) -> Res<Vec<PrimitiveCheck>> {
    PRIMITIVES
        .iter()
        .map(|&(name, symbol, rule)| {
            let insns = disassemble_alias(elf, symbol)?;
            let failure = if insns.is_empty() {
                Some(format!("objdump shows no instructions for {symbol}"))
            } else {
                judge(rule, &insns)
            };
            Ok(PrimitiveCheck {
                name,
                rule: rule.text(),
                failure,
                insns,
            })
        })
        .collect()
}

/// The stack frames of `elf`'s functions, largest first: (bytes, demangled name) from each
/// function's `sub $N,%esp` (its prologue's allocation; a function allocating twice counts
/// its largest).
pub fn stack_frames(elf: &std::path::Path) -> Res<Vec<(u32, String)>> {
    let text = crate::util::output(
        cmd("objdump")
            .args(["-d", "-C", "--no-show-raw-insn"])
            .arg(elf),
    )?;
    Ok(frames_in(&text))
}

/// [`stack_frames`] of objdump's text.
fn frames_in(objdump: &str) -> Vec<(u32, String)> {
    let mut largest: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut function = None;
    for line in objdump.lines() {
        // `c0100000 <name>:` starts a function.
        if let Some(name) = line
            .split_once(" <")
            .filter(|(addr, _)| !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|(_, rest)| rest.strip_suffix(">:"))
        {
            function = Some(name);
            continue;
        }
        let Some(f) = function else { continue };
        let Some(n) = line
            .split_once("sub ")
            .and_then(|(_, ops)| ops.trim().strip_prefix("$0x"))
            .and_then(|ops| ops.strip_suffix(",%esp"))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        let e = largest.entry(f).or_insert(0);
        *e = (*e).max(n);
    }
    let mut v: Vec<(u32, String)> = largest
        .into_iter()
        .map(|(f, n)| (n, f.to_string()))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v
}

/// Disassembles the two probes of guest-demo (see guest-demo/src/probes.rs) and compares them.
pub fn codegen_check(elf: &std::path::Path) -> Res<CodegenCheck> {
    let merged = symbol_address(elf, PROBE_FRAMEWORK)? == symbol_address(elf, PROBE_RAW)?;
    let framework = disassemble(elf, PROBE_FRAMEWORK)?;
    let raw = if merged {
        framework.clone()
    } else {
        disassemble(elf, PROBE_RAW)?
    };
    if framework.is_empty() {
        return Err(crate::util::HarnessError(format!(
            "objdump shows no instructions for {PROBE_FRAMEWORK}"
        )));
    }
    Ok(CodegenCheck {
        same_code: framework == raw,
        merged,
        framework,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame reader on objdump's own lines (guest-demo's debug build before XenMmu was
    /// set up in place: `pvops_xen_main` allocated 272 KiB).
    #[test]
    fn frames_are_read_from_the_prologues() {
        let text = "\
c0104a60 <pvops_xen_main>:
c0104a60:\tpush   %ebp
c0104a61:\tmov    %esp,%ebp
c0104a66:\tsub    $0x44074,%esp
c0104a70:\tsub    $0x10,%esp
c0108000 <backend_native::multiboot::parse>:
c0108003:\tsub    $0x91d0,%esp
c0108010:\tsub    $0x4,%eax
c0109000 <small>:
c0109001:\tpush   %esi
";
        assert_eq!(
            frames_in(text),
            vec![
                (0x44074, "pvops_xen_main".to_string()),
                (0x91d0, "backend_native::multiboot::parse".to_string()),
            ]
        );
    }

    fn insns(s: &str) -> Vec<String> {
        s.split(';').map(|i| i.trim().to_string()).collect()
    }

    /// The judge of the primitive check, on code objdump printed for guest-demo's probes
    /// (and on the same code with the stores swapped, which it must refuse).
    #[test]
    fn the_primitive_judge_reads_objdump() {
        let pud_clear = insns(
            "mov 0x8(%esp),%eax; mov $0x1ff,%edx; and 0xc(%esp),%edx; mov %eax,%ecx; \
             shl $0xc,%ecx; movl $0x0,-0x40000000(%ecx,%edx,8); \
             movl $0x0,-0x3ffffffc(%ecx,%edx,8); mov %cr3,%ecx; shr $0xc,%ecx; \
             cmp %ecx,%eax; jne c01117f8 <pvops_probe_pud_clear+0x38>; mov %cr3,%eax; \
             mov %eax,%cr3; ret",
        );
        assert_eq!(judge(Rule::LowFirstThenCr3, &pud_clear), None);
        assert_eq!(judge(Rule::LowFirst, &pud_clear), None);
        let mut swapped = pud_clear.clone();
        swapped.swap(5, 6);
        assert_eq!(
            judge(Rule::LowFirst, &swapped).as_deref(),
            Some("the high half is stored first")
        );
        let no_reload: Vec<String> = pud_clear[..9].to_vec();
        assert_eq!(
            judge(Rule::LowFirstThenCr3, &no_reload).as_deref(),
            Some("no write of cr3")
        );
        let set_pmd = insns(
            "push %ebx; push %edi; push %esi; mov 0x14(%esp),%edx; mov $0x1ff,%edi; \
             mov 0x20(%esp),%ecx; mov 0x1c(%esp),%ebx; and 0x18(%esp),%edi; shl $0xc,%edx; \
             lea -0x40000000(%edx,%edi,8),%esi; mov -0x40000000(%edx,%edi,8),%eax; \
             mov -0x3ffffffc(%edx,%edi,8),%edx; lock cmpxchg8b (%esi); \
             jne c0111830 <pvops_probe_set_pmd+0x30>; pop %esi; pop %edi; pop %ebx; ret",
        );
        assert_eq!(judge(Rule::Cmpxchg8b, &set_pmd), None);
        let set_pte = insns(
            "push %esi; mov 0xc(%esp),%edx; mov $0x1ff,%esi; mov 0x14(%esp),%eax; \
             mov 0x18(%esp),%ecx; and 0x10(%esp),%esi; shl $0xc,%edx; \
             mov %ecx,-0x3ffffffc(%edx,%esi,8); mov %eax,-0x40000000(%edx,%esi,8); \
             pop %esi; ret",
        );
        assert_eq!(
            judge(Rule::Cmpxchg8b, &set_pte).as_deref(),
            Some("no lock cmpxchg8b")
        );
        assert_eq!(
            judge(Rule::LowFirst, &set_pte).as_deref(),
            Some("no pair of zero stores to one entry's two halves")
        );
    }
}

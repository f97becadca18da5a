//! The README's quick start, followed as written: `cargo xtask test` reads the fenced blocks of
//! its "Use pvops in your kernel" section and runs them in a fresh directory outside the
//! repository, so the documented steps cannot drift from what works.
//!
//! Block kinds (the words after the language in the opening fence): `sh setup` (the clone; here
//! replaced by a symlink to this checkout), `sh run` (each line run in order; `cd DIR` changes
//! the directory of the following lines), `<lang> file=PATH` (the block written to PATH).

use crate::util::{cmd, root, HarnessError, Res};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// The README section the quick start lives in.
const SECTION: &str = "## Use pvops in your kernel";

/// One step of the quick start.
#[derive(Debug, PartialEq, Eq)]
pub enum QuickStep {
    /// The clone (replaced by a symlink to this checkout).
    Setup,
    /// A shell command line.
    Run(String),
    /// A file and its content.
    File(String, String),
}

/// The steps of the README's quick-start section, in order.
pub fn steps(readme: &str) -> Res<Vec<QuickStep>> {
    let start = readme
        .find(SECTION)
        .ok_or_else(|| HarnessError(format!("README has no `{SECTION}` section")))?;
    let body = &readme[start + SECTION.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut out = Vec::new();
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let _lang = words.next();
        let directive = words.next().unwrap_or("");
        let mut content = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            content.push_str(l);
            content.push('\n');
        }
        match directive {
            "setup" => out.push(QuickStep::Setup),
            "run" => out.extend(
                content
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| QuickStep::Run(l.to_string())),
            ),
            d if d.starts_with("file=") => {
                out.push(QuickStep::File(d["file=".len()..].to_string(), content))
            }
            _ => {}
        }
    }
    if !out.contains(&QuickStep::Setup) {
        return Err(HarnessError("quick start: no `sh setup` block".into()));
    }
    Ok(out)
}

/// Seconds from the empty directory to each `cargo run` that PASSed, by its command line.
pub struct QuickStartTimes {
    /// `(command line, seconds since the directory was empty, the result line)`.
    pub passes: Vec<(String, f64, String)>,
}

/// Follows the quick start in `<tmp>/pvops-quickstart` (emptied first). Build outputs go to
/// `target/quickstart` of this checkout (`CARGO_TARGET_DIR`, so a warm run does not rebuild
/// core) and the runner is installed under the quick-start directory (`CARGO_INSTALL_ROOT`),
/// not into `~/.cargo/bin`. Each `cargo run` must exit 0 and print a PASS line.
pub fn follow() -> Res<QuickStartTimes> {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md"))
        .map_err(|e| HarnessError(format!("cannot read README.md: {e}")))?;
    let steps = steps(&readme)?;
    let dir = std::env::temp_dir().join("pvops-quickstart");
    if dir.starts_with(&root) {
        return Err(HarnessError(format!(
            "{} is inside the workspace",
            dir.display()
        )));
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| HarnessError(format!("cannot create {}: {e}", dir.display())))?;
    let install_root = dir.join(".cargo-root");
    let path = format!(
        "{}:{}",
        install_root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target_dir = root.join("target/quickstart");
    let t0 = Instant::now();
    let mut cwd = dir.clone();
    let mut passes = Vec::new();
    for step in steps {
        match step {
            QuickStep::Setup => {
                std::os::unix::fs::symlink(&root, dir.join("pvops"))
                    .map_err(|e| HarnessError(format!("cannot link pvops: {e}")))?;
                eprintln!("    quick start: pvops -> {}", root.display());
            }
            QuickStep::File(rel, content) => {
                let p = dir.join(&rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| HarnessError(format!("{}: {e}", parent.display())))?;
                }
                std::fs::write(&p, content)
                    .map_err(|e| HarnessError(format!("cannot write {}: {e}", p.display())))?;
                eprintln!("    quick start: wrote {rel}");
            }
            QuickStep::Run(line) => {
                if let Some(d) = line.strip_prefix("cd ") {
                    cwd = cwd.join(d.trim());
                    continue;
                }
                let out = run_line(&line, &cwd, &path, &install_root, &target_dir)?;
                if line.starts_with("cargo run") {
                    let pass = out
                        .lines()
                        .find(|l| l.contains(": PASS backend="))
                        .ok_or_else(|| {
                            HarnessError(format!("quick start: `{line}` printed no PASS line"))
                        })?;
                    let secs = t0.elapsed().as_secs_f64();
                    eprintln!(
                        "    quick start: `{line}`: {pass} ({secs:.1}s from the empty directory)"
                    );
                    passes.push((line, secs, pass.to_string()));
                }
            }
        }
    }
    if passes.is_empty() {
        return Err(HarnessError("quick start: no `cargo run` step".into()));
    }
    Ok(QuickStartTimes { passes })
}

/// Runs one command line of the quick start with `sh -c`; its output goes to a log file whose
/// tail an error quotes. Returns stdout.
fn run_line(
    line: &str,
    cwd: &Path,
    path: &str,
    install_root: &Path,
    target_dir: &Path,
) -> Res<String> {
    let t = Instant::now();
    let out = cmd("sh")
        .args(["-c", line])
        .current_dir(cwd)
        .env("PATH", path)
        .env("CARGO_INSTALL_ROOT", install_root)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError(format!("quick start: cannot run `{line}`: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log: PathBuf = install_root.with_file_name("quickstart.log");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "$ {line}\n{stdout}{stderr}")
        });
    eprintln!(
        "    quick start: `{line}` in {} -> {} ({:.1}s)",
        cwd.display(),
        out.status,
        t.elapsed().as_secs_f64()
    );
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().chain(stdout.lines()).collect();
        return Err(HarnessError(format!(
            "quick start: `{line}` failed ({}); full log {}:\n{}",
            out.status,
            log.display(),
            tail[tail.len().saturating_sub(30)..].join("\n")
        )));
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_quick_start_has_the_steps() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let s = steps(&readme).unwrap();
        assert_eq!(s[0], QuickStep::Setup);
        let files: Vec<&str> = s
            .iter()
            .filter_map(|x| match x {
                QuickStep::File(p, _) => Some(p.as_str()),
                _ => None,
            })
            .collect();
        for f in [
            "mykernel/Cargo.toml",
            "mykernel/.cargo/config.toml",
            "mykernel/build.rs",
            "mykernel/src/main.rs",
        ] {
            assert!(files.contains(&f), "{f} missing from {files:?}");
        }
        let runs: Vec<&str> = s
            .iter()
            .filter_map(|x| match x {
                QuickStep::Run(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        assert!(runs
            .iter()
            .any(|r| r.starts_with("cargo run") && !r.contains("xen")));
        assert!(runs
            .iter()
            .any(|r| r.starts_with("cargo run") && r.ends_with("-- xen")));
    }

    #[test]
    fn blocks_parsed() {
        let md = "x\n## Use pvops in your kernel\n```sh setup\ngit clone a\n```\n\
                  ```sh run\n# c\ncd k\ncargo run\n```\n```toml file=k/a.toml\n[a]\n```\n\
                  ```toml\nnot a step\n```\n## Next\n```sh run\nnot this\n```\n";
        assert_eq!(
            steps(md).unwrap(),
            vec![
                QuickStep::Setup,
                QuickStep::Run("cd k".into()),
                QuickStep::Run("cargo run".into()),
                QuickStep::File("k/a.toml".into(), "[a]\n".into()),
            ]
        );
    }
}

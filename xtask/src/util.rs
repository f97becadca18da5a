//! Small helpers for xtask: running tools, timing steps, installing what is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// A harness failure (exit status 2): which step, and why.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for HarnessError {
    fn from(s: String) -> Self {
        HarnessError(s)
    }
}

/// Shorthand for results of harness steps.
pub type Res<T> = Result<T, HarnessError>;

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Prints a step's name, runs it, prints its time.
pub fn step<T>(name: &str, f: impl FnOnce() -> Res<T>) -> Res<T> {
    eprintln!("==> {name}");
    let t = Instant::now();
    let r = f();
    match &r {
        Ok(_) => eprintln!("    {name}: ok ({:.1}s)", t.elapsed().as_secs_f64()),
        Err(e) => eprintln!(
            "    {name}: FAILED ({:.1}s): {e}",
            t.elapsed().as_secs_f64()
        ),
    }
    r
}

/// A command with the environment cargo sets for xtask removed, so nested cargo/rustup calls
/// pick their own toolchain.
pub fn cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
    ] {
        c.env_remove(var);
    }
    c
}

/// Runs a command, inheriting stdout/stderr; Err names it when it fails.
pub fn run(c: &mut Command) -> Res<()> {
    let status = c
        .status()
        .map_err(|e| HarnessError(format!("cannot run {}: {e}", describe(c))))?;
    check(c, status)
}

/// Runs a command and captures its stdout; stderr is inherited.
pub fn output(c: &mut Command) -> Res<String> {
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| HarnessError(format!("cannot run {}: {e}", describe(c))))?;
    check(c, out.status)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(c: &Command, status: ExitStatus) -> Res<()> {
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError(format!("`{}` failed ({status})", describe(c))))
    }
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// True when `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian packages unless `probe` (a program) is already on PATH: one progress line
/// per apt step, apt's output in `target/logs/apt.log`, which an error names and quotes.
pub fn ensure_apt(probe: &str, packages: &[&str]) -> Res<()> {
    if have(probe) {
        return Ok(());
    }
    install_apt(packages)
}

/// Installs Debian packages (apt-get update, then install); their output goes to
/// target/logs/apt.log, which an error names.
pub fn install_apt(packages: &[&str]) -> Res<()> {
    let logs = root().join("target/logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| HarnessError(format!("cannot create {}: {e}", logs.display())))?;
    let log = logs.join("apt.log");
    let _ = std::fs::remove_file(&log);
    logged_step(
        &format!("apt-get update (needs root; log {})", log.display()),
        cmd("apt-get").args(["update", "-q"]),
        &log,
    )?;
    logged_step(
        &format!("apt-get install {}", packages.join(" ")),
        cmd("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )
}

/// Runs `c` with its output appended to `log`, printing one line: `what ... done in N.Ns`.
/// On failure the error names the log and quotes its last lines.
fn logged_step(what: &str, c: &mut Command, log: &Path) -> Res<()> {
    use std::io::Write;
    eprint!("    {what} ... ");
    let _ = std::io::stderr().flush();
    let t = Instant::now();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| HarnessError(format!("cannot open {}: {e}", log.display())))?;
    let file2 = file
        .try_clone()
        .map_err(|e| HarnessError(format!("{}: {e}", log.display())))?;
    let status = c
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|e| HarnessError(format!("cannot run {}: {e}", describe(c))))?;
    if status.success() {
        eprintln!("done in {:.1}s", t.elapsed().as_secs_f64());
        return Ok(());
    }
    eprintln!("failed");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    Err(HarnessError(format!(
        "`{}` failed ({status}); full log {}:\n{}",
        describe(c),
        log.display(),
        lines[lines.len().saturating_sub(20)..].join("\n")
    )))
}

/// Makes sure the nightly toolchain has rust-src (build-std) and clippy, and stable has
/// clippy and rustfmt. rustup does not auto-install here, so this is explicit.
pub fn ensure_toolchains() -> Res<()> {
    let installed =
        output(cmd("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .map_err(|e| {
                HarnessError(format!(
                    "the nightly toolchain is required (rustup toolchain install nightly): {e}"
                ))
            })?;
    let missing: Vec<&str> = ["rust-src", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if !missing.is_empty() {
        run(cmd("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing))?;
    }
    let stable =
        output(cmd("rustup").args(["component", "list", "--toolchain", "stable", "--installed"]))?;
    let missing: Vec<&str> = ["clippy", "rustfmt"]
        .into_iter()
        .filter(|c| !stable.lines().any(|l| l.starts_with(c)))
        .collect();
    if !missing.is_empty() {
        run(cmd("rustup")
            .args(["component", "add", "--toolchain", "stable"])
            .args(&missing))?;
    }
    Ok(())
}

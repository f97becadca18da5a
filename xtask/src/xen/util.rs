//! Commands, files and small helpers of the Xen harness: timed steps, logged commands, apt retries,
//! cache-key hashing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

/// apt/dpkg lock contention (e.g. an install running in the background): retry this often.
const APT_LOCK_RETRIES: u32 = 90;
const APT_LOCK_PAUSE: Duration = Duration::from_secs(10);

/// Run `f`, printing "xen: what... done in N.Ns" around it.
pub(super) fn step<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    eprint!("xen: {what}... ");
    let start = Instant::now();
    let result = f();
    let secs = start.elapsed().as_secs_f64();
    match &result {
        Ok(_) => eprintln!("done in {secs:.1}s"),
        Err(_) => eprintln!("failed after {secs:.1}s"),
    }
    result
}

/// `prog arg arg...` for messages.
pub(super) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion, returning its stdout; `Err` names `what` and quotes the output.
pub(super) fn run_cmd(cmd: &mut Command, what: &str) -> Result<String, String> {
    run_with_stdin(cmd.stdin(Stdio::null()), what)
}

/// [`run_cmd`] for a command whose stdin the caller has set up.
pub(super) fn run_with_stdin(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run `{}`: {e}", describe(cmd)))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(format!(
        "{what}: `{}` failed ({}):\n{}",
        describe(cmd),
        out.status,
        tail_lines(&text, 30)
    ))
}

/// Run a command with its output going to `log`; `Err` quotes the log's tail.
pub(super) fn run_logged(cmd: &mut Command, what: &str, log: &Path) -> Result<(), String> {
    let file = fs::File::create(log).map_err(|e| format!("{what}: {}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| format!("{what}: {e}"))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|e| format!("{what}: cannot run `{}`: {e}", describe(cmd)))?;
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "{what}: `{}` failed ({status}); full log {}:\n{}",
        describe(cmd),
        log.display(),
        tail_lines(&text, 40)
    ))
}

/// Run an apt/dpkg command, retrying while another apt or dpkg holds a lock.
pub(super) fn run_apt(
    mut make: impl FnMut() -> Command,
    what: &str,
    log: &Path,
) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        match run_logged(&mut make(), what, log) {
            Err(e) if attempt < APT_LOCK_RETRIES && is_lock_error(&e) => {
                if attempt == 0 {
                    eprint!("(waiting for the apt/dpkg lock) ");
                }
                attempt += 1;
                thread::sleep(APT_LOCK_PAUSE);
            }
            other => return other,
        }
    }
}

pub(super) fn is_lock_error(message: &str) -> bool {
    message.contains("Could not get lock") || message.contains("Unable to lock")
}

pub(super) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("xen: {what} {}: {e}", path.display())
}

pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| io_err("cannot read", path, e))
}

pub(super) fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    fs::write(path, data).map_err(|e| io_err("cannot write", path, e))
}

pub(super) fn make_dir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| io_err("cannot create", path, e))
}

/// Remove a directory tree if it exists.
pub(super) fn clear_dir(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("cannot remove", path, e)),
        _ => Ok(()),
    }
}

/// A fresh empty directory.
pub(super) fn fresh_dir(path: &Path) -> Result<(), String> {
    clear_dir(path)?;
    make_dir(path)
}

/// FNV-1a, stable across Rust releases (unlike `DefaultHasher`): used for cache keys.
pub(super) fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        h ^= 0xff; // separator, so ("ab","c") != ("a","bc")
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// A version string made safe for a file name.
pub(super) fn path_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+.~-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// "4.17" from "4.17.5+72-g01140da4e8-1".
pub(super) fn major_minor(version: &str) -> Result<String, String> {
    let upstream = version.split(':').next_back().unwrap_or(version);
    let mut parts = upstream.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) if !a.is_empty() && b.chars().all(|c| c.is_ascii_digit()) => {
            Ok(format!("{a}.{b}"))
        }
        _ => Err(format!(
            "xen: cannot take major.minor from version {version:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_of_debian_versions() {
        assert_eq!(major_minor("4.17.5+72-g01140da4e8-1").unwrap(), "4.17");
        assert!(major_minor("garbage").is_err());
    }
}

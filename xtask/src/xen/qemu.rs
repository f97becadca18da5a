//! QEMU control: the command line of a Xen boot, a run bounded by a timeout, and the serial output
//! as text.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::util::tail_lines;
use super::{DEBUG_EXIT_PORT, ERROR_TAIL_LINES};

const QEMU: &str = "qemu-system-x86_64";
/// QEMU options of every run: TCG (KVM does not work here), serial on stdio (`-smp` is added).
const QEMU_BASE_ARGS: &str = "-accel tcg -cpu qemu64 -no-reboot -nodefaults \
                              -display none -serial stdio -monitor none";
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// QEMU's arguments for a Xen boot: `xen` with `append`, the multiboot `modules`, `mem_mib` of
/// RAM and `cpus` CPUs.
pub(super) fn qemu_args(
    xen: &Path,
    append: &str,
    modules: &str,
    mem_mib: u32,
    cpus: u32,
) -> Vec<String> {
    let mut args: Vec<String> = QEMU_BASE_ARGS
        .split_whitespace()
        .map(String::from)
        .collect();
    args.extend([
        "-smp".to_string(),
        cpus.to_string(),
        "-m".to_string(),
        mem_mib.to_string(),
        "-kernel".to_string(),
        xen.display().to_string(),
        "-append".to_string(),
        append.to_string(),
        "-initrd".to_string(),
        modules.to_string(),
        "-device".to_string(),
        format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"),
    ]);
    args
}

/// A multiboot module argument "path cmdline" (QEMU splits modules at ',', so commas are doubled).
pub(super) fn module_arg(path: &Path, cmdline: &str) -> Result<String, String> {
    let p = path.display().to_string();
    if p.contains([' ', ',']) {
        return Err(format!(
            "xen: path {p:?} has a space or comma, which QEMU's -initrd cannot take"
        ));
    }
    if cmdline.is_empty() {
        Ok(p)
    } else {
        Ok(format!("{p} {}", cmdline.replace(',', ",,")))
    }
}

pub(super) struct QemuRun {
    pub(super) serial: Vec<u8>,
    pub(super) status: Option<i32>,
    pub(super) seconds: f64,
}

/// Run QEMU with its serial console on stdout, killing it after `timeout`.
pub(super) fn run_qemu(
    args: &[String],
    timeout: Duration,
    stream: bool,
) -> Result<QemuRun, String> {
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("xen: cannot start {QEMU}: {e}"))?;
    let serial = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().ok_or("xen: QEMU gave no stdout")?;
    let stderr = child.stderr.take().ok_or("xen: QEMU gave no stderr")?;
    let out_thread = spawn_collector(stdout, Arc::clone(&serial), stream);
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let err_thread = spawn_collector(stderr, Arc::clone(&err_buf), false);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => break None,
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("xen: waiting for QEMU failed: {e}"));
            }
        }
    };
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    let seconds = start.elapsed().as_secs_f64();
    let serial = std::mem::take(&mut *serial.lock().unwrap_or_else(|p| p.into_inner()));
    let stderr_text =
        String::from_utf8_lossy(&err_buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    if timed_out {
        return Err(format!(
            "xen: QEMU timed out after {:.0}s; serial tail:\n{}{}",
            timeout.as_secs_f64(),
            tail_lines(&clean_serial(&serial, true), ERROR_TAIL_LINES),
            stderr_note(&stderr_text)
        ));
    }
    let status = status.and_then(|s| s.code());
    if serial.is_empty() && status != Some(0) {
        return Err(format!(
            "xen: QEMU failed (status {status:?}) before any serial output{}",
            stderr_note(&stderr_text)
        ));
    }
    Ok(QemuRun {
        serial,
        status,
        seconds,
    })
}

pub(super) fn stderr_note(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("\nQEMU stderr:\n{}", tail_lines(stderr, 20))
    }
}

pub(super) fn spawn_collector(
    mut src: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
    stream: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match src.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream {
                        let mut e = std::io::stderr().lock();
                        let _ = e.write_all(&chunk[..n]);
                        let _ = e.flush();
                    }
                    buf.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
}

/// Serial bytes as text: CRs removed, and ANSI escape sequences too when `strip_ansi`.
pub(super) fn clean_serial(raw: &[u8], strip_ansi: bool) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' if strip_ansi => match chars.next() {
                Some('[') => {
                    // CSI: parameters and intermediates up to a final byte in '@'..='~'.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC '\'.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_and_cr_are_stripped() {
        assert_eq!(clean_serial(b"\x1b[1;32mok\x1b[0m\r\n", true), "ok\n");
        assert_eq!(clean_serial(b"a\r\nb", false), "a\nb");
    }
}

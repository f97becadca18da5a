//! Booting a kernel image on bare QEMU (multiboot1, `qemu-system-i386`, TCG).

use crate::util::{ensure_apt, HarnessError, Res};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The result of one QEMU run.
pub struct NativeRun {
    /// Serial output, CR stripped.
    pub log: String,
    /// QEMU's exit status (33 = guest PASS, 35 = guest FAIL through isa-debug-exit).
    pub status: Option<i32>,
    /// Wall time.
    pub seconds: f64,
}

/// Installs QEMU if missing.
pub fn ensure_qemu() -> Res<()> {
    ensure_apt("qemu-system-i386", &["qemu-system-x86"])
}

/// Boots `elf` with `memory_mib` of RAM and `cmdline`; echoes serial lines when `echo`.
pub fn boot(
    elf: &Path,
    memory_mib: u32,
    cmdline: &str,
    echo: bool,
    timeout: Duration,
) -> Res<NativeRun> {
    boot_smp(elf, memory_mib, cmdline, 1, echo, timeout)
}

/// [`boot`] with `cpus` CPUs (QEMU `-smp`).
pub fn boot_smp(
    elf: &Path,
    memory_mib: u32,
    cmdline: &str,
    cpus: u32,
    echo: bool,
    timeout: Duration,
) -> Res<NativeRun> {
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-i386")
        .args([
            "-accel",
            "tcg",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args(["-smp", &cpus.to_string()])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-m"])
        .arg(memory_mib.to_string())
        .arg("-kernel")
        .arg(elf)
        .arg("-append")
        .arg(cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError(format!("cannot start qemu-system-i386: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.replace('\r', "");
            if echo {
                println!("{line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| HarnessError(format!("waiting for qemu: {e}")))?
        {
            break s;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            let log: Vec<String> = rx.try_iter().collect();
            let tail = log[log.len().saturating_sub(5)..].join("\n");
            return Err(HarnessError(format!(
                "qemu timed out after {}s; last output:\n{tail}",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = reader.join();
    let mut log: Vec<String> = rx.try_iter().collect();
    if let Some(mut err) = child.stderr.take() {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        if !s.trim().is_empty() {
            log.push(format!("qemu stderr: {}", s.trim()));
        }
    }
    Ok(NativeRun {
        log: log.join("\n"),
        status: status.code(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

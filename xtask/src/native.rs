//! Booting a kernel image on bare QEMU (multiboot1, `qemu-system-i386`, TCG): through QEMU's
//! own multiboot loader (`-kernel`) or through GRUB 2 from an ISO (`-cdrom`).

use crate::util::{ensure_apt, HarnessError, Res};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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

/// Which multiboot loader starts the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootloader {
    /// QEMU's built-in multiboot1 loader (`-kernel`, modules through `-initrd`).
    Qemu,
    /// GRUB 2 (Debian's grub-pc-bin) from an ISO made by `grub-mkrescue` (`-cdrom`).
    Grub,
}

impl Bootloader {
    /// Parses the `--bootloader` value.
    pub fn parse(s: &str) -> Res<Bootloader> {
        match s {
            "qemu" => Ok(Bootloader::Qemu),
            "grub" => Ok(Bootloader::Grub),
            other => Err(HarnessError(format!(
                "--bootloader: `{other}` is neither `qemu` nor `grub`"
            ))),
        }
    }
}

/// One native boot: the image, the machine and what the loader hands over.
pub struct NativeBoot<'a> {
    /// The multiboot ELF.
    pub elf: &'a Path,
    /// QEMU `-m`.
    pub memory_mib: u32,
    /// The kernel's command line (after the image path the loader puts first).
    pub cmdline: &'a str,
    /// CPUs (QEMU `-smp`).
    pub cpus: u32,
    /// Files passed as multiboot modules, in order.
    pub modules: &'a [PathBuf],
    /// Who loads the image.
    pub bootloader: Bootloader,
}

/// Installs GRUB's BIOS image, grub-mkrescue and its helpers if missing.
pub fn ensure_grub() -> Res<()> {
    if Path::new("/usr/lib/grub/i386-pc/multiboot.mod").exists()
        && crate::util::have("xorriso")
        && crate::util::have("mformat")
    {
        return Ok(());
    }
    crate::util::install_apt(&["grub-pc-bin", "grub-common", "xorriso", "mtools"])
}

/// A word of a GRUB script, single-quoted (GRUB's quoting has no escapes inside '').
fn grub_word(w: &str) -> Res<String> {
    if w.contains('\'') || w.contains('\n') {
        return Err(HarnessError(format!(
            "cannot pass `{w}` through grub.cfg (quote or newline)"
        )));
    }
    Ok(format!("'{w}'"))
}

/// Makes a GRUB ISO for `b` under `dir` and returns its path. The grub.cfg has no menu: GRUB
/// talks on COM1, loads the image and the modules and boots at once.
fn make_grub_iso(b: &NativeBoot<'_>, dir: &Path) -> Res<PathBuf> {
    let io = |e: std::io::Error| HarnessError(format!("grub iso in {}: {e}", dir.display()));
    let _ = std::fs::remove_dir_all(dir);
    let boot_dir = dir.join("iso/boot");
    std::fs::create_dir_all(boot_dir.join("grub")).map_err(io)?;
    std::fs::copy(b.elf, boot_dir.join("kernel.elf")).map_err(io)?;
    let mut cfg = String::from(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n",
    );
    cfg.push_str("multiboot /boot/kernel.elf");
    for w in b.cmdline.split_whitespace() {
        cfg.push(' ');
        cfg.push_str(&grub_word(w)?);
    }
    cfg.push('\n');
    for (i, m) in b.modules.iter().enumerate() {
        let name = format!("mod{i}.bin");
        std::fs::copy(m, boot_dir.join(&name))
            .map_err(|e| HarnessError(format!("module {}: {e}", m.display())))?;
        cfg.push_str(&format!("module /boot/{name} {name}\n"));
    }
    cfg.push_str("boot\n");
    std::fs::write(boot_dir.join("grub/grub.cfg"), cfg).map_err(io)?;
    let iso = dir.join("boot.iso");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(dir.join("iso"))
        .output()
        .map_err(|e| HarnessError(format!("cannot run grub-mkrescue: {e}")))?;
    if !out.status.success() {
        return Err(HarnessError(format!(
            "grub-mkrescue failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(iso)
}

/// A directory removed when this is dropped.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Boots `elf` with `memory_mib` of RAM and `cmdline` through QEMU's own loader; echoes
/// serial lines when `echo`.
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
    boot_with(
        &NativeBoot {
            elf,
            memory_mib,
            cmdline,
            cpus,
            modules: &[],
            bootloader: Bootloader::Qemu,
        },
        echo,
        timeout,
    )
}

/// Boots as `b` says; echoes serial lines when `echo`. A GRUB error line (`error: ...`, after
/// which GRUB waits at its prompt) ends the run at once as a harness error.
pub fn boot_with(b: &NativeBoot<'_>, echo: bool, timeout: Duration) -> Res<NativeRun> {
    let t0 = Instant::now();
    let mut qemu = Command::new("qemu-system-i386");
    qemu.args([
        "-accel",
        "tcg",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .args(["-smp", &b.cpus.to_string()])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-m"])
    .arg(b.memory_mib.to_string());
    // The ISO tree (~13 MiB) goes when the boot is over, whatever its outcome.
    let mut iso_dir = RemoveOnDrop(None);
    match b.bootloader {
        Bootloader::Qemu => {
            qemu.arg("-kernel").arg(b.elf).arg("-append").arg(b.cmdline);
            if !b.modules.is_empty() {
                let mut list = Vec::new();
                for m in b.modules {
                    let s = m.to_str().filter(|s| !s.contains(',')).ok_or_else(|| {
                        HarnessError(format!(
                            "module path {} cannot go through -initrd (comma or not UTF-8)",
                            m.display()
                        ))
                    })?;
                    list.push(s.to_string());
                }
                qemu.arg("-initrd").arg(list.join(","));
            }
        }
        Bootloader::Grub => {
            ensure_grub()?;
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = crate::util::root()
                .join("target/grub")
                .join(format!("{}-{n}", std::process::id()));
            iso_dir.0 = Some(dir.clone());
            let iso = make_grub_iso(b, &dir)?;
            qemu.arg("-cdrom").arg(iso).args(["-boot", "d"]);
        }
    }
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError(format!("cannot start qemu-system-i386: {e}")))?;
    let grub = b.bootloader == Bootloader::Grub;
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
    let mut seen = Vec::new();
    let status = loop {
        seen.extend(rx.try_iter());
        if let Some(err) = seen
            .iter()
            .find(|l| grub && l.trim_start().starts_with("error:"))
        {
            let err = err.trim().to_string();
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Err(HarnessError(format!("GRUB refused the image: {err}")));
        }
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
            seen.extend(rx.try_iter());
            let log = seen;
            let tail = log[log.len().saturating_sub(5)..].join("\n");
            return Err(HarnessError(format!(
                "qemu timed out after {}s; last output:\n{tail}",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = reader.join();
    seen.extend(rx.try_iter());
    let mut log = seen;
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

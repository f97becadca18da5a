//! A run's inputs checked (ELF, command line, domU specs) and the domU path's per-run job archive
//! and QEMU arguments.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cpio::{pad4, CpioTree};
use super::qemu::qemu_args;
use super::util::{read_file, write_file};
use super::{
    BootOptions, DomuSpec, XenEnv, ELF_MAGIC, MAX_DOMU_MEMORY_MIB, MAX_VCPUS, MIN_DOMU_CS,
    XEN_BASE_OPTIONS,
};

/// dom0 memory in the `run_domus` path (Linux + toolstack in an initramfs).
const DOM0_MEM_MIB: u32 = 256;
const DOM0_LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen loglevel=4";
/// QEMU `-m` for the domU path: dom0 + largest domU + 1/8 of it + this, rounded up.
const QEMU_DOMU_HEADROOM_MIB: u32 = 64;
const QEMU_MEM_ROUND_MIB: u32 = 128;
const QEMU_MIN_MIB: u32 = 512;
/// Wall time from QEMU's start to dom0's kernel start (measured ~2 s), with margin: dom0's
/// watchdog fires at `timeout - XEN_BOOT_ALLOWANCE` of dom0 uptime, i.e. just before the
/// host would kill QEMU, so a run that overruns still ends with dom0's own report.
const XEN_BOOT_ALLOWANCE: Duration = Duration::from_secs(5);
/// Time kept, before dom0's watchdog, for relaying the last log and powering off.
const FINISH_ALLOWANCE: Duration = Duration::from_secs(10);
/// Lower bound of an explicit [`BootOptions::domu_timeout`] (centiseconds).
const MIN_EXPLICIT_DOMU_CS: u64 = 100;
/// Guest limits checked before a run.
const MAX_GUEST_CMDLINE: usize = 1023;
const MAX_DOMU_NAME: usize = 48;

pub(super) fn check_env(env: &XenEnv) -> Result<(), String> {
    for (what, p) in [
        ("hypervisor", &env.xen),
        ("dom0 kernel", &env.dom0_kernel),
        ("dom0 initramfs", &env.dom0_initrd),
    ] {
        if !p.is_file() {
            return Err(format!(
                "xen: {what} {} is missing (run prepare first)",
                p.display()
            ));
        }
    }
    Ok(())
}

pub(super) fn check_elf(elf: &Path) -> Result<(), String> {
    let mut magic = [0u8; 4];
    fs::File::open(elf)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot read guest {}: {e}", elf.display()))?;
    if magic != ELF_MAGIC {
        return Err(format!("guest {} is not an ELF file", elf.display()));
    }
    Ok(())
}

pub(super) fn check_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.len() > MAX_GUEST_CMDLINE {
        return Err(format!(
            "guest command line is {} bytes, more than {MAX_GUEST_CMDLINE}",
            cmdline.len()
        ));
    }
    if let Some(c) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "guest command line has a non-printable or non-ASCII character {c:?}"
        ));
    }
    Ok(())
}

pub(super) fn validate_specs(specs: &[DomuSpec]) -> Result<(), String> {
    if specs.is_empty() {
        return Err("xen: run_domus: no domU given".into());
    }
    for (i, s) in specs.iter().enumerate() {
        let bad = |why: String| Err(format!("xen: run_domus: domU #{i} {:?}: {why}", s.name));
        let name_ok = !s.name.is_empty()
            && s.name.len() <= MAX_DOMU_NAME
            && !s.name.starts_with(['-', '.'])
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return bad(format!(
                "name must be 1-{MAX_DOMU_NAME} characters of [A-Za-z0-9_.-]"
            ));
        }
        if specs[..i].iter().any(|o| o.name == s.name) {
            return bad("name used twice".into());
        }
        if s.vcpus == 0 || s.vcpus > MAX_VCPUS {
            return bad(format!("vcpus {} is out of range (1-{MAX_VCPUS})", s.vcpus));
        }
        if s.memory_mib == 0 || s.memory_mib > MAX_DOMU_MEMORY_MIB {
            return bad(format!("memory {} MiB is out of range", s.memory_mib));
        }
        check_elf(&s.elf).or_else(bad)?;
        check_cmdline(&s.cmdline).or_else(bad)?;
        if let Some(r) = &s.ramdisk {
            if !r.is_file() {
                return bad(format!("ramdisk {} is not a file", r.display()));
            }
        }
    }
    Ok(())
}

/// A string literal for an xl config file.
pub(super) fn xl_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The xl config of one domU whose kernel (and ramdisk) dom0 finds at these paths.
pub(super) fn xl_config(s: &DomuSpec, kernel: &str, ramdisk: Option<&str>) -> String {
    let ramdisk = ramdisk.map_or(String::new(), |r| format!("ramdisk = \"{r}\"\n"));
    format!(
        "name = {}\ntype = \"{}\"\nkernel = \"{kernel}\"\n{ramdisk}memory = {}\nvcpus = {}\n\
         cmdline = {}\non_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"destroy\"\n",
        xl_quote(&s.name),
        s.kind.xl_type(),
        s.memory_mib,
        s.vcpus,
        xl_quote(&s.cmdline)
    )
}

/// dom0's initramfs for this run: the cached one + a second archive with `/job`.
pub(super) fn write_job_initrd(
    env: &XenEnv,
    specs: &[DomuSpec],
    opts: &BootOptions,
    out: &Path,
) -> Result<(), String> {
    // Both in dom0 uptime, which starts about when the dom0 kernel does.
    let watchdog = opts.timeout.saturating_sub(XEN_BOOT_ALLOWANCE);
    let deadline_cs = (watchdog.saturating_sub(FINISH_ALLOWANCE).as_millis() / 10) as u64;
    let watchdog_s = watchdog.as_secs().max(1);
    let limit_cs = opts.domu_timeout.map_or(0, |d| {
        ((d.as_millis() / 10) as u64).max(MIN_EXPLICIT_DOMU_CS)
    });
    let mut job = CpioTree::default();
    job.file(
        "job/params.sh",
        format!(
            "COUNT={}\nDEADLINE_CS={}\nDOMU_LIMIT_CS={limit_cs}\nWATCHDOG_S={watchdog_s}\n",
            specs.len(),
            deadline_cs.max(MIN_DOMU_CS)
        )
        .into_bytes(),
        0o644,
    );
    let mut run = String::new();
    // Each file once, however many domUs boot it: dom0 unpacks the whole archive into its
    // 256 MiB, and fourteen copies of guest-demo (46 MB) made the unpacking fail ("Initramfs
    // unpacking failed: write error").
    let mut files = JobFiles::default();
    for (i, s) in specs.iter().enumerate() {
        let kernel = files.add(&mut job, &s.elf)?;
        let ramdisk = match &s.ramdisk {
            Some(r) => Some(files.add(&mut job, r)?),
            None => None,
        };
        job.file(
            &format!("job/{i}/cfg"),
            xl_config(s, &kernel, ramdisk.as_deref()).into_bytes(),
            0o644,
        );
        run.push_str(&format!("run_domu {i} {}\n", s.name));
    }
    job.file("job/run.sh", run.into_bytes(), 0o644);
    let mut data = read_file(&env.dom0_initrd)?;
    pad4(&mut data);
    data.extend_from_slice(&job.to_newc());
    write_file(out, &data)
}

/// The files of a job's archive (kernels, ramdisks), each stored once as `job/file<n>`.
#[derive(Default)]
struct JobFiles(Vec<PathBuf>);

impl JobFiles {
    /// Where dom0 finds `path`, put into `job` the first time it is named.
    fn add(&mut self, job: &mut CpioTree, path: &Path) -> Result<String, String> {
        let n = match self.0.iter().position(|p| p == path) {
            Some(n) => n,
            None => {
                job.file(
                    &format!("job/file{}", self.0.len()),
                    read_file(path)?,
                    0o644,
                );
                self.0.push(path.to_path_buf());
                self.0.len() - 1
            }
        };
        Ok(format!("/job/file{n}"))
    }
}

/// QEMU `-m` for a domU run: xl runs the domUs one after another, so the largest one counts
/// (-m 512 leaves ~244 MB for domUs; a 1024 MiB domU gets -m 1536).
pub(super) fn qemu_mem_for_domus(max_domu_mib: u32) -> u32 {
    let need = DOM0_MEM_MIB + max_domu_mib + max_domu_mib / 8 + QEMU_DOMU_HEADROOM_MIB;
    need.div_ceil(QEMU_MEM_ROUND_MIB)
        .saturating_mul(QEMU_MEM_ROUND_MIB)
        .max(QEMU_MIN_MIB)
}

pub(super) fn domu_qemu_args(
    env: &XenEnv,
    kernel: &Path,
    initrd: &Path,
    mem_mib: u32,
) -> Vec<String> {
    let append = format!("{XEN_BASE_OPTIONS} dom0_mem={DOM0_MEM_MIB}M,max:{DOM0_MEM_MIB}M");
    let modules = format!(
        "{} {DOM0_LINUX_CMDLINE},{}",
        kernel.display(),
        initrd.display()
    );
    qemu_args(&env.xen, &append, &modules, mem_mib, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_many_domus_boot_is_in_the_archive_once() {
        let dir = std::env::temp_dir().join(format!("xtask-jobfiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.elf"), dir.join("b.bin"));
        std::fs::write(&a, vec![0xa5u8; 3000]).unwrap();
        std::fs::write(&b, b"ramdisk").unwrap();
        let (mut job, mut files) = (CpioTree::default(), JobFiles::default());
        let names: Vec<String> = [&a, &b, &a, &a, &b]
            .iter()
            .map(|p| files.add(&mut job, p).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "/job/file0",
                "/job/file1",
                "/job/file0",
                "/job/file0",
                "/job/file1"
            ]
        );
        let archive = job.to_newc();
        let count = |needle: &[u8]| {
            archive
                .windows(needle.len())
                .filter(|w| w == &needle)
                .count()
        };
        assert_eq!(count(b"job/file0\0"), 1);
        assert_eq!(count(b"job/file1\0"), 1);
        assert!(archive.len() < 2 * 3000, "{} bytes", archive.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xl_strings_are_quoted() {
        assert_eq!(xl_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}

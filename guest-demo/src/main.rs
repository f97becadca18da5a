//! guest-demo: the pvops demonstration kernel. One ELF that boots on bare QEMU (multiboot1),
//! as a Xen PV domU and as a Xen PVH domU (backend-native's MMU on Xen's platform); it runs
//! the generic boot path on whichever backend entered it, then its own stages (the self-tests
//! of `pvops-selftest`: `exercise`, then `misuse` with Xen's refusals from
//! `pvops-xen-conformance` under Xen PV), and prints
//! `PVOPS-DEMO: PASS backend=<name> platform=<platform>` or
//! `PVOPS-DEMO: FAIL backend=<name> platform=<platform> stage=..: ..`.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod address_spaces;
mod calibrate;
mod difftest;
mod probes;
mod profile;
mod selftest;

use backend_xen::{Hypervisor, RealXen, XenMmu};
use core::fmt::Write;
use pvops_core::addr::{MachineAddr, PAGE_SIZE};
use pvops_core::boot::{
    boot, measure, take_boot_state, BootReport, KernelStage, Stage, StageFigures, BOOT_STAGES,
};
use pvops_core::ioremap::{EarlyIoremap, IoremapError, TableSource};
use pvops_core::mem::FrameAllocator;
use pvops_core::options::BootOptions;
use pvops_core::registry::{fatal, Handoff, KernelDescriptor, Outcome, KERNELS};
use pvops_core::{Counters, MmuOps, Platform};
use pvops_selftest::{exercise, misuse, CaseResult, Status, Tally, Verdict};
use pvops_xen_conformance as conformance;

const TAG: &str = "PVOPS-DEMO";
/// Tag of the misuse stage's per-case lines.
const MISUSE_TAG: &str = "PVOPS-MISUSE";

/// The stage of bad operations that must be refused.
static MISUSE: KernelStage = KernelStage::new("misuse");

#[pvops_core::linkme::distributed_slice(KERNELS)]
#[linkme(crate = pvops_core::linkme)]
static DEMO: KernelDescriptor = KernelDescriptor { tag: TAG };

pvops::register_kernel!(demo_main);
// PVH runs the kernel registered for the native backend; linking the crate adds the entry.
use platform_pvh as _;

/// What the demo asks of a backend beyond [`Platform`]: its own misuse cases and the
/// batching figure of the stats line.
trait DemoBackend: Platform {
    /// Backend checks run after the boot path (none on bare metal).
    fn backend_checks(&mut self, console: &mut dyn Write) {
        let _ = console;
    }
    /// `pvops.batch` as set (0: the backend's default or no batching at all).
    fn batch_option(&self) -> u32 {
        0
    }
    /// A clock in nanoseconds that does not depend on [`Platform::cycles`] (Xen's system
    /// time), to measure the cycle counter's rate; `None` where there is none.
    fn clock_ns(&self) -> Option<u64> {
        None
    }
    /// Runs the differential test's sequences (`demo.difftest=`), printing their records;
    /// `Err` when a run broke. Xen PV only.
    fn difftest(
        &mut self,
        alloc: &mut FrameAllocator,
        req: &difftest::Request,
        console: &mut dyn Write,
    ) -> Result<(), Verdict> {
        let _ = (alloc, req);
        let _ = writeln!(console, "PVOPS-DIFFTEST: skipped (Xen PV only)");
        Ok(())
    }
    /// Runs the backend's own cases after the generic ones, reporting each; stops at the
    /// first failure. None on bare metal, where every refusal is pvops's own.
    fn backend_cases(
        &mut self,
        alloc: &mut FrameAllocator,
        report: &mut dyn FnMut(&CaseResult),
    ) -> Tally {
        let _ = (alloc, report);
        Tally::default()
    }
}

impl DemoBackend for backend_native::Native {}

impl DemoBackend for XenMmu<RealXen> {
    /// The M2P entries of machine frames the guest does not own, up to the end of Xen's M2P
    /// area (max_mfn): Xen maps only the parts that cover RAM, so some of these loads fault;
    /// the backend's fixup turns them into "no entry" (Linux reads them with __get_user).
    fn backend_checks(&mut self, console: &mut dyn Write) {
        let hv = self.hypervisor();
        let entries = hv.m2p_entries();
        let _ = write!(
            console,
            "xen: m2p of frames not ours (max_mfn={:#x}):",
            entries - 1
        );
        for mfn in [entries - 1, entries / 2, entries / 4 * 3, entries / 8 * 7] {
            match hv.m2p(pvops_core::addr::MachineFrame::new(mfn)) {
                Some(p) => {
                    let _ = write!(console, " {mfn:#x}->{:#x}", p.number());
                }
                None => {
                    let _ = write!(console, " {mfn:#x}->none");
                }
            }
        }
        let _ = writeln!(
            console,
            "; unmapped entries read as none: {}",
            backend_xen::RealXen::m2p_faults()
        );
    }
    fn batch_option(&self) -> u32 {
        self.options().batch
    }
    fn clock_ns(&self) -> Option<u64> {
        self.hypervisor().clock_ns()
    }
    fn difftest(
        &mut self,
        alloc: &mut FrameAllocator,
        req: &difftest::Request,
        console: &mut dyn Write,
    ) -> Result<(), Verdict> {
        let cr3 = self.read_cr3();
        let start_info = self.start_info();
        // SAFETY: as in `backend_cases`: the boot path is over, nothing else issues
        // hypercalls or allocates while the sequences run; cr3 is the live L3.
        let hv = unsafe { self.hypervisor_mut() };
        let mode = conformance::mode_of(hv, start_info).ok_or_else(|| {
            Verdict::broken(
                "read start_info's flags",
                format_args!("pfn {start_info} holds no start_info"),
            )
        })?;
        // SAFETY: as above.
        let mut env = unsafe { conformance::Env::new(hv, alloc, cr3) }?;
        difftest::run(&mut env, mode, req, console)
    }
    /// Xen's refusals ([`conformance::cases`]), in the mode start_info's flags give.
    fn backend_cases(
        &mut self,
        alloc: &mut FrameAllocator,
        report: &mut dyn FnMut(&CaseResult),
    ) -> Tally {
        let cr3 = self.read_cr3();
        let start_info = self.start_info();
        // SAFETY: the boot path is over and nothing else issues hypercalls or allocates
        // while the cases run; cr3 is the live L3; the allocator's frames are all in the
        // direct map, writable.
        let hv = unsafe { self.hypervisor_mut() };
        let env = match conformance::mode_of(hv, start_info) {
            // SAFETY: as above.
            Some(mode) => unsafe { conformance::Env::new(hv, alloc, cr3) }.map(|e| (e, mode)),
            None => Err(Verdict::broken(
                "read start_info's flags",
                format_args!("pfn {start_info} holds no start_info"),
            )),
        };
        match env {
            Ok((mut env, mode)) => conformance::run_cases(&mut env, mode, report),
            Err(got) => {
                let r = CaseResult {
                    name: "xen_mode",
                    expected: Verdict::Accepted,
                    got,
                };
                let mut tally = Tally::default();
                tally.count(&r);
                report(&r);
                tally
            }
        }
    }
}

/// Prints guest-demo's FAIL line for a failed stage:
/// `PVOPS-DEMO: FAIL backend=<backend> platform=<platform> stage=<stage>: <why>`.
fn fail_line(
    console: &mut dyn Write,
    backend: &str,
    platform: &str,
    stage: &str,
    why: &dyn core::fmt::Display,
) {
    let _ = writeln!(
        console,
        "{TAG}: FAIL backend={backend} platform={platform} stage={stage}: {why}"
    );
}

fn demo_main<P: DemoBackend>(h: Handoff<'_, P>) -> Outcome {
    let Handoff {
        platform,
        info,
        console,
    } = h;
    let name = <P as MmuOps>::NAME;
    let platform_name = info.platform.name;
    let opts = match BootOptions::parse(info.cmdline, platform) {
        Ok(o) => o,
        Err(e) => {
            fail_line(console, name, platform_name, "banner", &e);
            return Outcome::Fail;
        }
    };
    let clock_start = (platform.cycles(), platform.clock_ns());
    let Some(state) = take_boot_state() else {
        fail_line(
            console,
            name,
            platform_name,
            "entry",
            &"kernel main entered twice",
        );
        return Outcome::Fail;
    };
    let r = match boot(platform, info, opts, state, console) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                console,
                "{TAG}: FAIL backend={name} platform={platform_name} {e}"
            );
            return Outcome::Fail;
        }
    };
    platform.backend_checks(console);
    if let Some(test) = selftest::requested(info.cmdline) {
        selftest::run(test, name, console);
    }
    let (done, ex) = measure(platform, Stage::Kernel(&exercise::STAGE), |p| {
        exercise::run(p, &mut state.alloc, info, r.reused, console)
    });
    if let Err(e) = done {
        fail_line(console, name, platform_name, "exercise", &e);
        return Outcome::Fail;
    }
    let _ = writeln!(console, "stage exercise ok {ex}");
    if let Err(e) = print_modules(platform, &mut state.alloc, info, console) {
        fail_line(console, name, platform_name, "exercise", &e);
        return Outcome::Fail;
    }
    if misuse_stage(platform, &mut state.alloc, platform_name, console).is_none() {
        return Outcome::Fail;
    }
    if let Some(req) = difftest::requested(info.cmdline) {
        if let Err(v) = platform.difftest(&mut state.alloc, &req, console) {
            fail_line(console, name, platform_name, "difftest", &v);
            return Outcome::Fail;
        }
    }
    // After the demo's other stages (the differential test replays its sequences on a model
    // booted through `exercise` only, so nothing of this stage may precede it).
    let (spaces, sp) = measure(platform, Stage::Kernel(&address_spaces::STAGE), |p| {
        address_spaces::run(p, &mut state.alloc)
    });
    let spaces = match spaces {
        Ok(d) => d,
        Err(e) => {
            fail_line(console, name, platform_name, "address_spaces", &e);
            return Outcome::Fail;
        }
    };
    let _ = writeln!(console, "stage address_spaces ok {sp} {spaces}");
    let _ = writeln!(
        console,
        "{TAG}: PASS backend={name} platform={platform_name} lowmem_mapped_mib={} lowmem_not_mapped_mib={} ptes={} l1_tables={} reused_frames={}",
        r.lowmem_mapped >> 20,
        r.lowmem_not_mapped >> 20,
        r.direct_map_ptes,
        r.direct_map_tables,
        r.reused.len()
    );
    let mut cal = calibrate::run(platform);
    if let (Some(ns0), Some(ns1)) = (clock_start.1, platform.clock_ns()) {
        let cycles = platform.cycles().wrapping_sub(clock_start.0);
        cal.cycles_per_us = (cycles * 1000).checked_div(ns1.saturating_sub(ns0));
    }
    // The store phase's profile; not with `pvops.batch=1`, where every write into a table is
    // a hypercall (the profile's loops would make a million of them).
    cal.profile = if platform.batch_option() == 1 {
        None
    } else {
        let ptes = r.direct_map_ptes;
        match profile::run(platform, &mut state.alloc, ptes, r.direct_map_tables) {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = writeln!(console, "profile: skipped: {e}");
                None
            }
        }
    };
    let _ = print_stats(
        console,
        name,
        platform_name,
        platform.batch_option(),
        &r,
        OwnStages {
            exercise: &ex,
            spaces: (&sp, &spaces),
        },
        &cal,
    );
    Outcome::Pass
}

/// Bytes of each module printed (and compared by the harness with the file).
const MODULE_HEAD: usize = 16;

/// One line per module the loader passed, `module <i>: <len> bytes, head <hex>`: its first
/// bytes read through early_ioremap on the kernel's table (the harness compares them with
/// the file it passed).
fn print_modules<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    info: &pvops_core::handoff::BootInfo<'_>,
    console: &mut dyn core::fmt::Write,
) -> Result<(), ModuleError<P::Error>> {
    let mut io = EarlyIoremap::new(p.layout().ioremap_window, TableSource::LiveCr3);
    for (i, m) in info.modules.iter().enumerate() {
        let _ = write!(console, "module {i}: {} bytes, head ", m.len);
        // The head stays inside the module's first frame: the frames of a module are
        // contiguous pseudo-physically, not necessarily machine-contiguous (Xen).
        let len = m
            .len
            .min(MODULE_HEAD as u64)
            .min(PAGE_SIZE - m.start.frame_offset()) as usize;
        if len > 0 {
            let mfn = m
                .start
                .frame()
                .and_then(|pfn| p.phys_to_machine(pfn))
                .ok_or(ModuleError::NoMachineFrame(i))?;
            let ma = MachineAddr::new(mfn.start().as_u64() + m.start.frame_offset());
            let map = io
                .map(p, alloc, ma, len as u64)
                .map_err(|e| ModuleError::Ioremap(i, e))?;
            let mut head = [0u8; MODULE_HEAD];
            // SAFETY: the slot maps the module's first bytes; reading them is harmless.
            let read = unsafe { p.read_virt(map.addr(), &mut head[..len]) };
            io.unmap(p, alloc, map)
                .map_err(|e| ModuleError::Ioremap(i, e))?;
            read.map_err(|f| ModuleError::Fault(i, f))?;
            for b in &head[..len] {
                let _ = write!(console, "{b:02x}");
            }
        }
        let _ = writeln!(console);
    }
    Ok(())
}

/// Why a module could not be read.
enum ModuleError<E> {
    NoMachineFrame(usize),
    Ioremap(usize, IoremapError<E>),
    Fault(usize, pvops_core::PageFault),
}

impl<E: core::fmt::Display> core::fmt::Display for ModuleError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoMachineFrame(i) => {
                write!(f, "module {i}: its first frame has no machine frame")
            }
            Self::Ioremap(i, e) => write!(f, "module {i}: {e}"),
            Self::Fault(i, pf) => write!(f, "module {i}: {pf}"),
        }
    }
}

/// Stage `misuse`: bad operations that must be refused, pvops's own checks first, then the
/// backend's (Xen's refusals through the raw hypercall layer). One `PVOPS-MISUSE:` line per
/// case; the first case not refused as expected fails the run (`None`).
fn misuse_stage<P: DemoBackend>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    platform_name: &str,
    console: &mut dyn Write,
) -> Option<Tally> {
    let mut failure: Option<CaseResult> = None;
    let (tally, figures) = measure(p, Stage::Kernel(&MISUSE), |p| {
        let mut report = |r: &CaseResult| {
            if r.status() == Status::Failed {
                failure.get_or_insert(*r);
            } else {
                let _ = writeln!(console, "{MISUSE_TAG}: {r}");
            }
        };
        let mut tally = misuse::run_generic(p, alloc, &mut report);
        if tally.failed == 0 {
            tally.merge(&p.backend_cases(alloc, &mut report));
        }
        tally
    });
    let name = <P as MmuOps>::NAME;
    if let Some(r) = failure {
        fail_line(console, name, platform_name, "misuse", &r);
        return None;
    }
    let _ = writeln!(
        console,
        "stage misuse ok {figures} cases={} rejected={} allowed={} skipped={} raw_hypercalls={}",
        tally.cases(),
        tally.rejected,
        tally.allowed,
        tally.skipped,
        tally.raw_hypercalls
    );
    Some(tally)
}

/// The figures of the demo's own stages for the stats line.
struct OwnStages<'a, C> {
    exercise: &'a StageFigures<C>,
    spaces: (&'a StageFigures<C>, &'a address_spaces::Done),
}

/// One line `PVOPS-STATS: {...}`: a flat JSON object of numbers (and the backend's and the
/// platform's names), over the boot path's stages, the exercise and the calibration loops.
fn print_stats<C: Counters>(
    out: &mut dyn Write,
    backend: &str,
    platform: &str,
    batch: u32,
    r: &BootReport<C>,
    own: OwnStages<'_, C>,
    cal: &calibrate::Calibration,
) -> core::fmt::Result {
    let OwnStages { exercise, spaces } = own;
    let stages = BOOT_STAGES
        .iter()
        .map(|s| (s.name(), r.stage(*s).unwrap_or_default()))
        .chain([(exercise::STAGE.name(), *exercise)]);
    write!(
        out,
        "PVOPS-STATS: {{\"backend\":\"{backend}\",\"platform\":\"{platform}\",\"batch\":{},\"boot_cycles\":{},\"hypercalls\":{},\"ptes\":{},\"l1_tables\":{},\"lowmem_mapped_mib\":{}",
        batch,
        stages.clone().map(|(_, f)| f.cycles).sum::<u64>(),
        stages.clone().map(|(_, f)| f.counters.hypercalls()).sum::<u64>(),
        r.direct_map_ptes,
        r.direct_map_tables,
        r.lowmem_mapped >> 20
    )?;
    for (name, f) in stages {
        // `<stage>_cycles`, then the backend's own counts of the stage, then the time the
        // CPU did not run the kernel.
        write!(out, ",\"{name}_cycles\":{}", f.cycles)?;
        f.counters.write_json(name, out)?;
        write!(out, ",\"{name}_notrun_ns\":{}", f.notrun_ns)?;
    }
    // The address_spaces stage: its figures as every stage's (not in boot_cycles and
    // hypercalls, which stay the boot path's and the exercise's), then what it did.
    let (f, d) = spaces;
    let name = address_spaces::STAGE.name();
    write!(out, ",\"{name}_cycles\":{}", f.cycles)?;
    f.counters.write_json(name, out)?;
    write!(
        out,
        ",\"{name}_notrun_ns\":{},\"{name}_spaces\":{},\"{name}_round_trips\":{},\"{name}_map_rounds\":{},\"{name}_frames_leaked\":{}",
        f.notrun_ns, d.spaces, d.round_trips, d.map_rounds, d.frames_leaked
    )?;
    if let Some(p) = &cal.profile {
        write!(
            out,
            ",\"profile_ptes\":{},\"profile_loop_cycles\":{},\"profile_p2m_cycles\":{},\"profile_is_table_cycles\":{},\"profile_set_pte_cycles\":{},\"profile_raw_store_cycles\":{},\"profile_body_cycles\":{},\"profile_tables\":{},\"profile_zero_cycles\":{}",
            p.ptes,
            p.loop_cycles,
            p.p2m_cycles,
            p.is_table_cycles,
            p.set_pte_cycles,
            p.raw_store_cycles,
            p.body_cycles,
            p.tables,
            p.zero_cycles
        )?;
    }
    writeln!(
        out,
        ",\"calibrate_alu_cycles\":{},\"calibrate_alu_iterations\":{},\"calibrate_store_cycles\":{},\"calibrate_stores\":{},\"calibrate_notrun_ns\":{}{}}}",
        cal.alu_cycles,
        calibrate::ALU_ITERATIONS,
        cal.store_cycles,
        calibrate::STORES,
        cal.notrun_ns,
        CyclesPerUs(cal.cycles_per_us)
    )
}

/// `,"cycles_per_us":<n>` when the backend has a clock to measure the cycle counter against.
struct CyclesPerUs(Option<u64>);

impl core::fmt::Display for CyclesPerUs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(n) => write!(f, ",\"cycles_per_us\":{n}"),
            None => Ok(()),
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal(format_args!("{info}"))
}

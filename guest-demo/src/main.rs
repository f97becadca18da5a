//! guest-demo: the pvops demonstration kernel. One ELF that boots on bare QEMU (multiboot1)
//! and as a Xen PV domU; it runs the generic boot path on whichever backend entered it and
//! prints `PVOPS-DEMO: PASS backend=<name>` or `PVOPS-DEMO: FAIL backend=<name> stage=..: ..`.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod probes;

use pvops_core::addr::{MachineAddr, PAGE_SIZE};
use pvops_core::boot::{
    boot, set_stage, take_boot_state, BootInfo, BootReport, Stage, BOOT_STAGES,
};
use pvops_core::ioremap::{EarlyIoremap, IoremapError, TableSource};
use pvops_core::mem::FrameAllocator;
use pvops_core::misuse::{self, BackendMisuse, CaseResult, MisuseTally, Status};
use pvops_core::options::BootOptions;
use pvops_core::registry::{fatal, Handoff, KernelDescriptor, Outcome, KERNELS};
use pvops_core::{MmuOps, Platform};

const TAG: &str = "PVOPS-DEMO";
/// Tag of the misuse stage's per-case lines.
const MISUSE_TAG: &str = "PVOPS-MISUSE";

#[pvops_core::linkme::distributed_slice(KERNELS)]
#[linkme(crate = pvops_core::linkme)]
static DEMO: KernelDescriptor = KernelDescriptor { tag: TAG };

backend_native::register_kernel!(demo_main);
backend_xen::register_kernel!(demo_main);

fn demo_main<P: BackendMisuse>(h: Handoff<'_, P>) -> Outcome {
    let Handoff {
        platform,
        info,
        console,
    } = h;
    let opts = match BootOptions::parse(info.cmdline) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(console, "{TAG}: FAIL backend={} stage=banner: {e}", P::NAME);
            return Outcome::Fail;
        }
    };
    let Some(state) = take_boot_state() else {
        let _ = writeln!(
            console,
            "{TAG}: FAIL backend={} stage=entry: kernel main entered twice",
            P::NAME
        );
        return Outcome::Fail;
    };
    match boot(platform, info, opts, state, console) {
        Ok(r) => {
            if let Err(e) = print_modules(platform, &mut state.alloc, info, console) {
                let _ = writeln!(
                    console,
                    "{TAG}: FAIL backend={} stage=exercise: {e}",
                    P::NAME
                );
                return Outcome::Fail;
            }
            if misuse_stage(platform, &mut state.alloc, info, console).is_none() {
                return Outcome::Fail;
            }
            set_stage(Stage::Done);
            let _ = writeln!(
                console,
                "{TAG}: PASS backend={} lowmem_mapped_mib={} lowmem_not_mapped_mib={} ptes={} l1_tables={} reused_frames={}",
                P::NAME,
                r.lowmem_mapped >> 20,
                r.lowmem_not_mapped >> 20,
                r.direct_map_ptes,
                r.direct_map_tables,
                r.reused.len()
            );
            let _ = print_stats(console, P::NAME, &opts, &r);
            Outcome::Pass
        }
        Err(e) => {
            let _ = writeln!(console, "{TAG}: FAIL backend={} {e}", <P as MmuOps>::NAME);
            Outcome::Fail
        }
    }
}

/// Bytes of each module printed (and compared by the harness with the file).
const MODULE_HEAD: usize = 16;

/// One line per module the loader passed, `module <i>: <len> bytes, head <hex>`: its first
/// bytes read through early_ioremap on the kernel's table (the harness compares them with
/// the file it passed).
fn print_modules<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    info: &BootInfo<'_>,
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
            let pfn = m.start.frame();
            let mfn = p
                .phys_to_machine(pfn)
                .ok_or(ModuleError::NoMachineFrame(i))?;
            let ma = MachineAddr(mfn.start().0 + m.start.frame_offset());
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
fn misuse_stage<P: BackendMisuse>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    info: &BootInfo<'_>,
    console: &mut dyn core::fmt::Write,
) -> Option<MisuseTally> {
    set_stage(Stage::Misuse);
    let c0 = p.counters();
    let t0 = p.cycles();
    let mut failure: Option<CaseResult> = None;
    let tally = misuse::run_all(p, alloc, info, &mut |r: &CaseResult| {
        if r.status() == Status::Failed {
            failure.get_or_insert(*r);
        } else {
            let _ = writeln!(console, "{MISUSE_TAG}: {r}");
        }
    });
    let dt = p.cycles().wrapping_sub(t0);
    let dc = p.counters().since(&c0);
    let name = <P as MmuOps>::NAME;
    if let Some(r) = failure {
        let _ = writeln!(console, "{TAG}: FAIL backend={name} stage=misuse: {r}");
        return None;
    }
    let _ = writeln!(
        console,
        "stage misuse ok cycles={dt} {dc} cases={} rejected={} allowed={} skipped={} raw_hypercalls={}",
        tally.cases(),
        tally.rejected,
        tally.allowed,
        tally.skipped,
        tally.raw_hypercalls
    );
    Some(tally)
}

/// One line `PVOPS-STATS: {...}`: a flat JSON object of numbers (and the backend's name).
fn print_stats(
    out: &mut dyn core::fmt::Write,
    backend: &str,
    opts: &BootOptions,
    r: &BootReport,
) -> core::fmt::Result {
    write!(
        out,
        "PVOPS-STATS: {{\"backend\":\"{backend}\",\"batch\":{},\"boot_cycles\":{},\"hypercalls\":{},\"ptes\":{},\"l1_tables\":{},\"lowmem_mapped_mib\":{}",
        opts.batch,
        r.total_cycles(),
        r.total_hypercalls(),
        r.direct_map_ptes,
        r.direct_map_tables,
        r.lowmem_mapped >> 20
    )?;
    for stage in BOOT_STAGES {
        let (c, n) = (r.cycles[stage as usize], r.counters[stage as usize]);
        let name = stage.name();
        write!(
            out,
            ",\"{name}_cycles\":{c},\"{name}_hypercalls\":{},\"{name}_mmu_update_entries\":{},\"{name}_mmuext_ops\":{},\"{name}_multicalls\":{}",
            n.hypercalls(),
            n.mmu_update_entries,
            n.mmuext_ops,
            n.multicall_calls
        )?;
    }
    writeln!(out, "}}")
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal(format_args!("{info}"))
}

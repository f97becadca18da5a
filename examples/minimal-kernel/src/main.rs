//! minimal-kernel: the smallest kernel that adopts pvops, written against the public API only.
//!
//! One ELF boots on bare QEMU (multiboot1, through `backend-native`) and as a Xen PV guest
//! (through `backend-xen`). Its main is written once, generic over [`Platform`]:
//!
//! 1. it runs the generic boot path ([`pvops_core::boot::boot`]): from the bootstrap table to
//!    the kernel's own direct map, with the bootstrap table retired;
//! 2. it then maps one page of its own in the backend's scratch area with
//!    [`pvops_core::mapper::map_page`], writes through that mapping, reads the bytes back
//!    through the direct map, and unmaps the page again;
//! 3. it prints `MINIMAL-KERNEL: PASS backend=<native|xen> platform=<bare|xen-pv> ...`, or
//!    `MINIMAL-KERNEL: FAIL backend=<name> platform=<platform> stage=<stage>: <reason>`, and
//!    returns the
//!    [`Outcome`], which the backend turns into an exit (QEMU's isa-debug-exit, or a Xen
//!    shutdown).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt::Write;
use pvops_core::boot::{boot, set_stage, take_boot_state, KernelStage, Stage};
use pvops_core::mapper::{self, MapError};
use pvops_core::mem::FrameAllocator;
use pvops_core::options::BootOptions;
use pvops_core::paging::KERNEL_RW;
use pvops_core::registry::{fatal, Handoff, Outcome};
use pvops_core::{PageFault, PhysFrame, Platform, VirtAddr, PAGE_SIZE};

/// The tag of this kernel's result lines; the backends' fault handlers print it too.
const TAG: &str = "MINIMAL-KERNEL";

// Tells pvops which kernel is linked (the fault handlers print its tag).
pvops_core::kernel_tag!(TAG);

// One generic main, instantiated and registered once per backend.
backend_native::register_kernel!(minimal_main);
backend_xen::register_kernel!(minimal_main);

/// Bytes written through the kernel's own mapping and read back through the direct map.
const PROBE_LEN: usize = 32;

/// The page of the scratch area this kernel uses (the boot path leaves the area empty).
const OWN_PAGE: u32 = 16;

/// This kernel's own stage after the boot path: a fault in it reads `stage=own_mapping`.
static OWN_MAPPING: KernelStage = KernelStage::new("own_mapping");

fn minimal_main<P: Platform>(h: Handoff<'_, P>) -> Outcome {
    let Handoff {
        platform,
        info,
        console,
    } = h;
    let _ = writeln!(
        console,
        "{TAG}: hello from the {} backend, cmdline \"{}\"",
        P::NAME,
        info.cmdline
    );
    let opts = match BootOptions::parse(info.cmdline) {
        Ok(o) => o,
        Err(e) => return fail::<P>(console, info, Stage::Banner, format_args!("{e}")),
    };
    let Some(state) = take_boot_state() else {
        return fail::<P>(
            console,
            info,
            Stage::Entry,
            format_args!("kernel main entered twice"),
        );
    };

    // 1. The generic boot path: every stage prints `stage <name> ok cycles=<n>`.
    let report = match boot(platform, info, opts, state, console) {
        Ok(r) => r,
        // A BootError prints as `stage=<stage>: <reason>`.
        Err(e) => {
            let _ = writeln!(
                console,
                "{TAG}: FAIL backend={} platform={} {e}",
                P::NAME,
                info.platform.name
            );
            return Outcome::Fail;
        }
    };

    // 2. One mapping of the kernel's own, on the kernel's table (live now). A fault in here
    //    is reported by the backend's trap handler with the stage set below.
    let own = Stage::Kernel(&OWN_MAPPING);
    set_stage(own);
    let frame = match own_mapping(platform, &mut state.alloc, console) {
        Ok(f) => f,
        Err(e) => return fail::<P>(console, info, own, format_args!("{e}")),
    };

    // 3. The result line.
    let _ = writeln!(
        console,
        "{TAG}: PASS backend={} platform={} lowmem_mapped_mib={} root_pfn={} own_page_pfn={}",
        P::NAME,
        info.platform.name,
        report.lowmem_mapped >> 20,
        report.root,
        frame
    );
    Outcome::Pass
}

/// Why the kernel's own mapping failed.
enum OwnError<E> {
    Map(MapError<E>),
    Backend(E),
    Fault(PageFault),
    Mismatch { offset: usize, want: u8, got: u8 },
    StillMapped(VirtAddr),
}

impl<E: core::fmt::Display> core::fmt::Display for OwnError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OwnError::Map(e) => write!(f, "{e}"),
            OwnError::Backend(e) => write!(f, "{e}"),
            OwnError::Fault(pf) => write!(f, "{pf}"),
            OwnError::Mismatch { offset, want, got } => write!(
                f,
                "own mapping: byte {offset} reads {got:#04x} through the direct map, wrote {want:#04x}"
            ),
            OwnError::StillMapped(va) => write!(f, "own mapping: {va} still mapped after unmap"),
        }
    }
}

impl<E> From<MapError<E>> for OwnError<E> {
    fn from(e: MapError<E>) -> Self {
        OwnError::Map(e)
    }
}

/// Maps a fresh frame at a page of the scratch area, writes a pattern through it, checks
/// the bytes through the direct map, and unmaps it. Returns the frame (given back).
fn own_mapping<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    console: &mut dyn Write,
) -> Result<PhysFrame, OwnError<P::Error>> {
    let va = VirtAddr(p.layout().scratch_area.0 + OWN_PAGE * PAGE_SIZE as u32);
    let root = p.read_cr3();
    let frame = alloc.alloc().map_err(MapError::Alloc)?;
    let mfn = p
        .phys_to_machine(frame)
        .ok_or(MapError::NoMachineFrame(frame))?;
    // SAFETY: the scratch area is free for the kernel once the boot path is done, and
    // nothing else uses this page.
    let flush = unsafe { mapper::map_page(p, alloc, root, va, mfn, KERNEL_RW) }?;
    flush.flush(p).map_err(OwnError::Backend)?;

    let mut data = [0u8; PROBE_LEN];
    for (i, d) in data.iter_mut().enumerate() {
        *d = (frame.0 as u8).wrapping_add(i as u8).wrapping_mul(13) ^ 0xa5;
    }
    // SAFETY: `va` maps the fresh frame (just mapped, TLB flushed).
    unsafe { p.write_virt(va, &data) }.map_err(OwnError::Fault)?;
    let direct = p.frame_ptr(frame).ok_or(MapError::Unreachable(frame))?;
    for (i, want) in data.iter().enumerate() {
        // SAFETY: frame_ptr gives 4096 readable bytes of our own frame.
        let got = unsafe { direct.add(i).read_volatile() };
        if got != *want {
            return Err(OwnError::Mismatch {
                offset: i,
                want: *want,
                got,
            });
        }
    }

    // SAFETY: nothing uses `va` any more.
    let (_, flush) = unsafe { mapper::unmap_page(p, alloc, root, va) }?;
    flush.flush(p).map_err(OwnError::Backend)?;
    if mapper::translate(p, root, va).is_ok() {
        return Err(OwnError::StillMapped(va));
    }
    alloc.free(frame).map_err(MapError::Alloc)?;
    let _ = writeln!(
        console,
        "{TAG}: own mapping: pfn {frame} (mfn {mfn}) at {va}, {PROBE_LEN} bytes written there read back through the direct map, unmapped"
    );
    Ok(frame)
}

/// Prints the FAIL line of `stage` and returns [`Outcome::Fail`].
fn fail<P: Platform>(
    console: &mut dyn Write,
    info: &pvops_core::boot::BootInfo<'_>,
    stage: Stage,
    reason: core::fmt::Arguments<'_>,
) -> Outcome {
    let _ = writeln!(
        console,
        "{TAG}: FAIL backend={} platform={} stage={}: {reason}",
        P::NAME,
        info.platform.name,
        stage.name()
    );
    Outcome::Fail
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // The backend's fatal handler prints `MINIMAL-KERNEL: FAIL backend=.. platform=.. stage=..: ..` and
    // ends the run as a failure.
    fatal(format_args!("{info}"))
}

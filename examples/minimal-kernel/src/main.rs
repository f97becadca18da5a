//! minimal-kernel: the smallest kernel that adopts pvops, written against the public API only.
//!
//! One ELF boots on bare QEMU (multiboot1, through `backend-native`) and as a Xen PV guest
//! (through `backend-xen`). [`pvops::kernel!`] does the rest of what every kernel repeats:
//! the result-line tag, registering the main with every linked backend, parsing the
//! options, running the generic boot path ([`pvops_core::boot::boot`]: from the bootstrap
//! table to the kernel's own direct map, with the bootstrap table retired), the PASS/FAIL
//! line and the panic handler. Its own part, written once and generic over [`Platform`]:
//! it maps one page of its own in the backend's scratch area with
//! [`pvops_core::mapper::map_page`], writes through that mapping, reads the bytes back
//! through the direct map, and unmaps the page again. The result line is
//! `MINIMAL-KERNEL: PASS backend=<native|xen> platform=<bare|xen-pv> ...` or
//! `MINIMAL-KERNEL: FAIL backend=<name> platform=<platform> stage=<stage>: <reason>`.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt::Write;
use pvops::{Kernel, KernelStage, Stage};
use pvops_core::mapper::{self, MapError};
use pvops_core::mem::FrameAllocator;
use pvops_core::paging::KERNEL_RW;
use pvops_core::{PageFault, PhysFrame, Platform, VirtAddr, PAGE_SIZE};

/// The tag of this kernel's result lines; the backends' fault handlers print it too.
const TAG: &str = "MINIMAL-KERNEL";

pvops::kernel!(tag = TAG, main = minimal_main);

/// Bytes written through the kernel's own mapping and read back through the direct map.
const PROBE_LEN: usize = 32;

/// The page of the scratch area this kernel uses (the boot path leaves the area empty).
const OWN_PAGE: u32 = 16;

/// This kernel's own stage after the boot path: a fault in it reads `stage=own_mapping`.
static OWN_MAPPING: KernelStage = KernelStage::new("own_mapping");

/// Runs once the generic boot path is done (the kernel's table is live): one mapping of
/// the kernel's own. A fault in here is reported by the backend's trap handler with the
/// kernel's own stage, `own_mapping`.
fn minimal_main<P: Platform>(k: Kernel<'_, P>) -> Result<Summary, OwnError<P::Error>> {
    let _ = writeln!(
        k.console,
        "{TAG}: hello from the {} backend, cmdline \"{}\"",
        P::NAME,
        k.info.cmdline
    );
    pvops::set_stage(Stage::Kernel(&OWN_MAPPING));
    let frame = own_mapping(k.platform, &mut k.state.alloc, k.console)?;
    Ok(Summary {
        lowmem_mapped_mib: k.report.lowmem_mapped >> 20,
        root: k.report.root,
        own_page: frame,
    })
}

/// The PASS line's fields.
struct Summary {
    lowmem_mapped_mib: u64,
    root: PhysFrame,
    own_page: PhysFrame,
}

impl core::fmt::Display for Summary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "lowmem_mapped_mib={} root_pfn={} own_page_pfn={}",
            self.lowmem_mapped_mib, self.root, self.own_page
        )
    }
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
    let va = VirtAddr::new(p.layout().scratch_area.as_u32() + OWN_PAGE * PAGE_SIZE as u32);
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
        *d = (frame.number() as u8)
            .wrapping_add(i as u8)
            .wrapping_mul(13)
            ^ 0xa5;
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
    let (_, flush) = unsafe { mapper::unmap_page(p, root, va) }?;
    flush.flush(p).map_err(OwnError::Backend)?;
    if mapper::translate(p, root, va).is_ok() {
        return Err(OwnError::StillMapped(va));
    }
    // The L1 the mapping needed goes back too: pvops's one retire helper (unlink, flush,
    // release, free), refused if the table still mapped anything.
    mapper::retire_table(p, alloc, root, va, pvops_core::paging::Level::L1)?;
    alloc.free(frame).map_err(MapError::Alloc)?;
    let _ = writeln!(
        console,
        "{TAG}: own mapping: pfn {frame} (mfn {mfn}) at {va}, {PROBE_LEN} bytes written there read back through the direct map, unmapped"
    );
    Ok(frame)
}

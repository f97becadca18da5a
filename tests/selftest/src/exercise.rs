//! The exercise stage: after the boot path, prove on the kernel's own table that the
//! bootstrap frames came back, that mapping and unmapping work, and that early_ioremap still
//! reads the probe correctly.
//!
//! 1. The frames `pagetable_setup_done` released are allocated back, by number (the
//!    allocator's free list is LIFO), written and read back: under Xen this is where a
//!    still-pinned bootstrap table (`pvops.skip_unpin`) would be refused.
//! 2. A fresh frame is mapped in the scratch area, written through that mapping, read back
//!    through the direct map, unmapped, and the L1 it needed retired.
//! 3. The early_ioremap probe is mapped and compared again, now walking the kernel's table.

use core::fmt::Write;
use pvops_core::addr::FrameRange;
use pvops_core::addr::{PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::boot::{check_probe, BootErrorKind, BootInfo};
use pvops_core::ioremap::TableSource;
use pvops_core::mapper::{self, MapError};
use pvops_core::mem::FrameAllocator;
use pvops_core::ops::Platform;
use pvops_core::paging::{Level, KERNEL_RW};

/// The stage's name in `stage exercise ok ...` and in a fault's `stage=exercise`.
pub static STAGE: pvops_core::boot::KernelStage = pvops_core::boot::KernelStage::new("exercise");

/// The page of the scratch area the exercise maps (kernels keep their own work elsewhere).
pub const SCRATCH_PAGE: u32 = 5;

const PATTERN_LEN: usize = 64;

type Res<E> = Result<(), BootErrorKind<E>>;

/// Runs the three checks on a booted platform; `released` is what the boot path gave the
/// allocator from the bootstrap table (`BootReport::reused`) and `alloc` the boot path's
/// allocator.
pub fn run<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    info: &BootInfo<'_>,
    released: FrameRange,
    log: &mut dyn Write,
) -> Res<P::Error> {
    reuse(p, alloc, released, log)?;
    map_scratch(p, alloc, log)?;
    check_probe(p, alloc, info, TableSource::LiveCr3, log)
}

fn pattern(frame: PhysFrame, i: usize) -> u8 {
    (frame.number() as usize)
        .wrapping_mul(31)
        .wrapping_add(i.wrapping_mul(7)) as u8
}

/// Gets the released bootstrap frames back, by number, and writes and reads them.
fn reuse<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    released: FrameRange,
    log: &mut dyn Write,
) -> Res<P::Error> {
    let _ = write!(log, "exercise: reused bootstrap frames:");
    for expected in released.iter().rev() {
        let got = alloc.alloc()?;
        if got != expected {
            return Err(BootErrorKind::WrongFrame { expected, got });
        }
        let ptr = p.frame_ptr(got).ok_or(MapError::Unreachable(got))?;
        for i in 0..PAGE_SIZE as usize {
            // SAFETY: the frame is ours (just allocated) and reachable through the direct map.
            unsafe { ptr.add(i).write_volatile(pattern(got, i)) };
        }
        for i in 0..PAGE_SIZE as usize {
            // SAFETY: as above.
            let v = unsafe { ptr.add(i).read_volatile() };
            if v != pattern(got, i) {
                return Err(BootErrorKind::Mismatch {
                    what: "reused frame",
                    offset: i,
                    expected: pattern(got, i),
                    found: v,
                });
            }
        }
        let _ = write!(log, " {got}");
    }
    let _ = writeln!(log, " ({} written and read back)", released.len());
    for f in released.iter() {
        alloc.free(f)?;
    }
    Ok(())
}

/// Maps a fresh frame in the scratch area, writes through it, reads through the direct
/// map, unmaps it and retires the L1 table it needed.
fn map_scratch<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    log: &mut dyn Write,
) -> Res<P::Error> {
    let layout = p.layout();
    let root = p.read_cr3();
    let va = VirtAddr::new(layout.scratch_area.as_u32() + SCRATCH_PAGE * PAGE_SIZE as u32);
    let frame = alloc.alloc()?;
    let mfn = p
        .phys_to_machine(frame)
        .ok_or(MapError::NoMachineFrame(frame))?;
    // SAFETY: the scratch area belongs to the kernel after the boot path, and this page is
    // the exercise's.
    let flush = unsafe { mapper::map_page(p, alloc, root, va, mfn, KERNEL_RW) }?;
    flush.flush(p).map_err(BootErrorKind::Backend)?;
    let mut data = [0u8; PATTERN_LEN];
    for (i, d) in data.iter_mut().enumerate() {
        *d = pattern(frame, i) ^ 0x5a;
    }
    // SAFETY: `va` maps our fresh frame.
    unsafe { p.write_virt(va, &data) }.map_err(BootErrorKind::Fault)?;
    let direct = p.frame_ptr(frame).ok_or(MapError::Unreachable(frame))?;
    for (i, want) in data.iter().enumerate() {
        // SAFETY: frame_ptr gives 4096 readable bytes.
        let got = unsafe { direct.add(i).read_volatile() };
        if got != *want {
            return Err(BootErrorKind::Mismatch {
                what: "scratch mapping",
                offset: i,
                expected: *want,
                found: got,
            });
        }
    }
    // SAFETY: nothing uses `va` any more.
    let (unmapped, flush) = unsafe { mapper::unmap_page(p, root, va) }?;
    flush.flush(p).map_err(BootErrorKind::Backend)?;
    debug_assert_eq!(unmapped, mfn);
    match mapper::translate(p, root, va) {
        Err(MapError::NotMapped(_)) => {}
        Ok(e) => {
            return Err(BootErrorKind::Map(MapError::AlreadyMapped(VirtAddr::new(
                e.addr().as_u64() as u32,
            ))))
        }
        Err(e) => return Err(e.into()),
    }
    // Retire the scratch L1: the one helper (unlink, flush, release, free).
    let l1 = mapper::retire_table(p, alloc, root, va, Level::L1)?;
    alloc.free(frame)?;
    let _ = writeln!(
        log,
        "exercise: mapped pfn {frame} at {va} (l1 pfn {l1}), {PATTERN_LEN} bytes written there read back through the direct map, unmapped"
    );
    Ok(())
}

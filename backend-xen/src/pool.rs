//! Page-table frames reserved inside the kernel image, for the tables the Xen backend builds
//! before the kernel's own table is live.
//!
//! Why it exists, and why here: before the switch only what the bootstrap table maps is
//! reachable. Under Xen that is the domain builder's 1:1 region, which ends a few hundred KiB
//! (512 KiB of slack, rounded to 4 MiB) after the builder's own structures: too little for
//! the ~430 L1 tables of an 852 MiB direct map. The pool is part of the image, so the builder
//! maps it (Linux reserves its early page tables the same way). The native backend needs
//! none (its bootstrap table maps 64 MiB, far more than the 1.8 MiB of tables of a full
//! direct map), so the pool lives in backend-xen: a native-only kernel does not carry it.
//! The frame allocator hands its frames to page tables only
//! ([`pvops_core::mem::FrameAllocator::alloc_table`]), never to data.

use core::cell::UnsafeCell;
use pvops_core::addr::{FrameRange, PhysFrame, PAGE_SIZE};

/// Frames in the pool: enough for the largest direct map under Xen (the hole leaves at most
/// 896 MiB of lowmem: 448 L1 tables), the root, four L2s, the early_ioremap window's L1
/// (twice) and the scratch area's L1. 1.81 MiB of .bss.
pub const EARLY_TABLE_FRAMES: usize = 464;

/// The pool's storage: page aligned, zero, in .bss.
#[repr(C, align(4096))]
pub struct EarlyTablePool(UnsafeCell<[u8; EARLY_TABLE_FRAMES * PAGE_SIZE as usize]>);

// SAFETY: the pool is never accessed through this static: the frame allocator hands its
// frames out one by one, and they are reached through their mappings like any other frame.
unsafe impl Sync for EarlyTablePool {}

/// The one pool of the image.
pub static EARLY_TABLE_POOL: EarlyTablePool = EarlyTablePool(UnsafeCell::new(
    [0; EARLY_TABLE_FRAMES * PAGE_SIZE as usize],
));

impl EarlyTablePool {
    /// The pool's frames, given the virtual address of physical 0 (`page_offset`).
    pub fn frames(&self, page_offset: usize) -> FrameRange {
        let start = (self.0.get() as usize).wrapping_sub(page_offset) / PAGE_SIZE as usize;
        FrameRange {
            start: PhysFrame::new(start as u32),
            end: PhysFrame::new((start + EARLY_TABLE_FRAMES) as u32),
        }
    }
}

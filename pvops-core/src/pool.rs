//! Page-table frames reserved inside the kernel image, for the tables built before the
//! kernel's own table is live.
//!
//! Before the switch only what the bootstrap table maps is reachable. Under Xen that is the
//! domain builder's 1:1 region, which ends a few hundred KiB after the builder's own
//! structures: too little for the ~430 L1 tables of an 852 MiB direct map. The pool is part
//! of the image, so every loader maps it (Linux reserves its early page tables the same way).

use crate::addr::{FrameRange, PhysFrame, PAGE_SIZE};
use core::cell::UnsafeCell;

/// Frames in the pool: enough for a full 896 MiB direct map (448 L1 tables), the root, four
/// L2s, the early_ioremap window's L1 (twice) and the scratch area's L1.
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
            start: PhysFrame(start as u32),
            end: PhysFrame((start + EARLY_TABLE_FRAMES) as u32),
        }
    }
}

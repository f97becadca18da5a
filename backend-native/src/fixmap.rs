//! The fixmap: one L1 table in the image's .bss at a fixed virtual address, for pages a
//! platform must reach at the same address on the bootstrap table and on the kernel's own
//! table (a PVH guest's console ring, which Xen places near 4 GiB, far above lowmem).
//!
//! The bootstrap stub links the table into its page directory; `Native`'s
//! `pagetable_setup_start` links the same table into the kernel's table before the switch,
//! so a fixmap address never stops working (Linux keeps its fixmap L1 in swapper_pg_dir the
//! same way).

use core::fmt;
use pvops_core::addr::{PhysAddr, VirtAddr, PAGE_SIZE};

/// Virtual base of the fixmap: the last 2 MiB of the address space, above the early_ioremap
/// window (`LAYOUT.ioremap_window` = 0xFF800000).
pub const BASE: u32 = 0xFFE0_0000;
/// Its slot in the page directory that maps 0xC0000000..4 GiB.
pub const PD_INDEX: usize = ((BASE - crate::PAGE_OFFSET) >> 21) as usize;
/// Pages the fixmap holds.
pub const SLOTS: usize = 512;

/// Why a fixmap slot was not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixmapError {
    /// The slot index is not below [`SLOTS`].
    NoSuchSlot(usize),
    /// The physical address is not page aligned or beyond what PAE can map.
    BadAddress(PhysAddr),
}

impl fmt::Display for FixmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchSlot(i) => write!(f, "fixmap slot {i} does not exist (only {SLOTS})"),
            Self::BadAddress(pa) => {
                write!(f, "fixmap cannot map {pa}: not a page-aligned PAE address")
            }
        }
    }
}

/// The virtual address of fixmap slot `slot`.
pub const fn slot_addr(slot: usize) -> VirtAddr {
    VirtAddr::new(BASE + (slot as u32) * PAGE_SIZE as u32)
}

#[cfg(all(target_arch = "x86", target_os = "none"))]
mod hw {
    use super::*;
    use crate::store;
    use pvops_core::addr::{FrameRange, MachineFrame, PhysFrame};
    use pvops_core::paging::{PageTableEntry, ADDRESS_MASK, KERNEL_RW};

    unsafe extern "C" {
        static pvops_native_fixmap_l1: u8;
    }

    /// The fixmap table's frame (inside the image, never handed out by the allocator).
    pub fn table_frame() -> PhysFrame {
        let va = &raw const pvops_native_fixmap_l1 as usize as u32;
        PhysFrame::new((va - crate::PAGE_OFFSET) >> 12)
    }

    /// The fixmap table as a frame range (one frame).
    pub fn table_frames() -> FrameRange {
        let f = table_frame();
        FrameRange {
            start: f,
            end: PhysFrame::new(f.number() + 1),
        }
    }

    /// Maps the page at `pa` read-write (write-back) at [`slot_addr`]`(slot)` and returns that
    /// address.
    ///
    /// # Safety
    /// `pa` must be memory the kernel may access (RAM it owns or shares, such as a console
    /// ring), not a page-table frame or anything another owner relies on not being written;
    /// the caller must not keep references into the slot's previous page.
    pub unsafe fn set(slot: usize, pa: PhysAddr) -> Result<VirtAddr, FixmapError> {
        if slot >= SLOTS {
            return Err(FixmapError::NoSuchSlot(slot));
        }
        if pa.as_u64() & (PAGE_SIZE - 1) != 0 || pa.as_u64() & !ADDRESS_MASK != 0 {
            return Err(FixmapError::BadAddress(pa));
        }
        let entry = PageTableEntry::new(MachineFrame::new((pa.as_u64() >> 12) as u32), KERNEL_RW);
        let table = &raw const pvops_native_fixmap_l1 as usize as *mut u32;
        let va = slot_addr(slot);
        // SAFETY: the fixmap L1 is the image's own 4 KiB table; `slot` < 512 keeps the entry
        // inside it. The caller vouches for `pa`.
        unsafe {
            store::pae_store(table.add(slot * 2), entry);
            x86::tlb::flush(va.as_usize());
        }
        Ok(va)
    }
}
#[cfg(all(target_arch = "x86", target_os = "none"))]
pub use hw::{set, table_frame, table_frames};

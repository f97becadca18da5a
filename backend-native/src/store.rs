//! The native page-table store: an entry slot's address in a direct map, and the PAE store
//! order. Plain code (no privileged instruction), so host benches run exactly what the kernel
//! runs; the kernel's `set_pte` is [`set_entry`] with the constant `PAGE_OFFSET`.

use pvops_core::paging::{EntrySlot, PageTableEntry};

/// Address of `slot`'s entry in a direct map whose physical 0 is at virtual `base`.
#[inline(always)]
pub fn entry_ptr(base: usize, slot: EntrySlot) -> *mut u32 {
    (base + ((slot.table().number() as usize) << 12) + slot.index().byte_offset()) as *mut u32
}

/// The raw PAE store: the high half first, then the low half that holds Present, so the CPU
/// never sees a present entry with a stale high half. Two explicit 32-bit stores: a
/// `write_volatile::<u64>` stores the low half first at opt-level 0.
///
/// # Safety
/// `entry` must point at a page-table entry the caller may change.
#[inline(always)]
pub unsafe fn pae_store(entry: *mut u32, value: PageTableEntry) {
    // SAFETY: the caller guarantees `entry` is a writable 8-byte entry.
    unsafe {
        core::ptr::write_volatile(entry.add(1), value.high());
        core::ptr::write_volatile(entry, value.low());
    }
}

/// Clears an entry: the low half (Present) first, then the high half.
///
/// # Safety
/// As [`pae_store`].
#[inline(always)]
pub unsafe fn pae_clear(entry: *mut u32) {
    // SAFETY: as pae_store.
    unsafe {
        core::ptr::write_volatile(entry, 0);
        core::ptr::write_volatile(entry.add(1), 0);
    }
}

/// `set_pte`/`set_pmd`/`set_pud` of the native backend for a direct map at `base`.
///
/// # Safety
/// `slot.table` must be a page-table frame reachable at `base + pfn * 4096`.
#[inline(always)]
pub unsafe fn set_entry(base: usize, slot: EntrySlot, value: PageTableEntry) {
    // SAFETY: forwarded contract.
    unsafe { pae_store(entry_ptr(base, slot), value) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use pvops_core::addr::{EntryIndex, MachineFrame, PhysFrame};
    use pvops_core::paging::KERNEL_RW;

    #[test]
    fn stores_land_in_the_slot() {
        let mut frames = std::vec![0u64; 1024];
        let base = frames.as_mut_ptr() as usize;
        let slot = EntrySlot::new(PhysFrame::new(1), EntryIndex::new_const(3));
        let e = PageTableEntry::new(MachineFrame::new(0x1_2345), KERNEL_RW);
        // SAFETY: frame 1 of the buffer is entries 512..1024.
        unsafe { set_entry(base, slot, e) };
        assert_eq!(frames[512 + 3], e.bits());
        // SAFETY: as above.
        unsafe { pae_clear(entry_ptr(base, slot)) };
        assert_eq!(frames[512 + 3], 0);
    }
}

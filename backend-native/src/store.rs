//! The native page-table store: an entry slot's address in a direct map, and the PAE store
//! order. Plain code (no privileged instruction), so host benches run exactly what the kernel
//! runs; the kernel's `set_pte` is [`set_entry`] with the constant `PAGE_OFFSET`.

use pvops_core::pae;
use pvops_core::paging::{EntrySlot, PageTableEntry};

/// Address of `slot`'s entry in a direct map whose physical 0 is at virtual `base`.
#[inline(always)]
pub fn entry_ptr(base: usize, slot: EntrySlot) -> *mut u32 {
    (base + ((slot.table().number() as usize) << 12) + slot.index().byte_offset()) as *mut u32
}

/// The split PAE store ([`pvops_core::pae::store_split`]): the high half first, then the low
/// half that holds Present. Only for an entry that is not present.
///
/// # Safety
/// `entry` must point at a non-present page-table entry the caller may change.
#[inline(always)]
pub unsafe fn pae_store(entry: *mut u32, value: PageTableEntry) {
    // SAFETY: forwarded contract.
    unsafe { pae::store_split(entry as *mut u64, value) }
}

/// Clears an entry: the low half (Present) first, then the high half.
///
/// # Safety
/// `entry` must point at a page-table entry the caller may change.
#[inline(always)]
pub unsafe fn pae_clear(entry: *mut u32) {
    // SAFETY: forwarded contract.
    unsafe { pae::clear(entry as *mut u64) }
}

/// `set_pte` of the native backend for a direct map at `base` (split store).
///
/// # Safety
/// `slot.table()` must be a page-table frame reachable at `base + pfn * 4096` whose entry at
/// `slot` is not present.
#[inline(always)]
pub unsafe fn set_entry(base: usize, slot: EntrySlot, value: PageTableEntry) {
    // SAFETY: forwarded contract.
    unsafe { pae_store(entry_ptr(base, slot), value) }
}

/// `set_pte_atomic`/`set_pmd`/`set_pud` of the native backend: one 64-bit store
/// (`lock cmpxchg8b` on i686).
///
/// # Safety
/// `slot.table()` must be a page-table frame reachable at `base + pfn * 4096`.
#[inline(always)]
pub unsafe fn set_entry_whole(base: usize, slot: EntrySlot, value: PageTableEntry) {
    // SAFETY: forwarded contract; entries are 8-byte aligned in their frame.
    unsafe { pae::store_whole(entry_ptr(base, slot) as *mut u64, value) }
}

/// `pte_clear`/`pmd_clear`/`pud_clear` of the native backend: low half first.
///
/// # Safety
/// As [`set_entry_whole`].
#[inline(always)]
pub unsafe fn clear_entry(base: usize, slot: EntrySlot) {
    // SAFETY: forwarded contract.
    unsafe { pae_clear(entry_ptr(base, slot)) }
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
        unsafe { clear_entry(base, slot) };
        assert_eq!(frames[512 + 3], 0);
        // SAFETY: as above.
        unsafe { set_entry_whole(base, slot, e) };
        assert_eq!(frames[512 + 3], e.bits());
        assert_eq!(frames[512 + 2], 0, "the neighbours are untouched");
        assert_eq!(frames[512 + 4], 0, "the neighbours are untouched");
    }
}

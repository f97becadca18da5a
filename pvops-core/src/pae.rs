//! The three ways a PAE entry is stored on a 32-bit CPU, as Linux's PAE primitives use them
//! (`arch/x86/include/asm/pgtable-3level.h`): a split store (high half, then low half), one
//! 64-bit store (`lock cmpxchg8b` on i686), and a clear (low half, then high half). Plain code
//! on a raw entry pointer, shared by the native backend, the Xen backend's not-yet-live
//! tables and the host tests.
//!
//! Why the order matters: the page walker (of this CPU, speculatively, or of another CPU)
//! reads a 64-bit PAE entry that a 32-bit CPU writes as two halves, and may read it between
//! them. The low half holds Present. A split store writes the low half last, so the walker
//! never sees Present with a high half that is not the new one; that is safe only on an
//! entry that is not present, since otherwise the walker could see the old low half
//! (Present) with the new high half: a frame nobody mapped. A clear writes the low half
//! first, so the entry is non-present before its frame bits change. Replacing a present
//! entry by another needs one 64-bit store.

use crate::paging::PageTableEntry;
use core::sync::atomic::{AtomicU64, Ordering};

/// Split store: the high half, then the low half that holds Present (Linux `native_set_pte`
/// on PAE). Only for an entry that is not present now. Two explicit 32-bit volatile stores:
/// a `write_volatile::<u64>` stores the low half first at opt-level 0.
///
/// # Safety
/// `entry` must point at an 8-byte aligned page-table entry the caller may change, whose
/// current value is not present.
#[inline(always)]
pub unsafe fn store_split(entry: *mut u64, value: PageTableEntry) {
    let halves = entry as *mut u32;
    // SAFETY: the caller guarantees `entry` is a writable, aligned 8-byte entry.
    unsafe {
        core::ptr::write_volatile(halves.add(1), value.high());
        core::ptr::write_volatile(halves, value.low());
    }
}

/// One 64-bit store (Linux `set_pte_atomic`, `set_pmd`, `set_pud` on PAE): an atomic 64-bit
/// store, which on i686 is a `lock cmpxchg8b` loop, so no walker ever sees half of it.
///
/// # Safety
/// `entry` must point at an 8-byte aligned page-table entry the caller may change.
#[inline(always)]
pub unsafe fn store_whole(entry: *mut u64, value: PageTableEntry) {
    // SAFETY: the caller guarantees an aligned, writable entry; every access to a live
    // page-table entry from this kernel is volatile or atomic, never a plain reference.
    let e = unsafe { AtomicU64::from_ptr(entry) };
    e.store(value.bits(), Ordering::SeqCst);
}

/// Clear: the low half (holding Present) first, then the high half (Linux `native_pte_clear`,
/// `native_pmd_clear` on PAE).
///
/// # Safety
/// As [`store_whole`].
#[inline(always)]
pub unsafe fn clear(entry: *mut u64) {
    let halves = entry as *mut u32;
    // SAFETY: as store_split.
    unsafe {
        core::ptr::write_volatile(halves, 0);
        core::ptr::write_volatile(halves.add(1), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::MachineFrame;
    use crate::paging::KERNEL_RW;

    #[test]
    fn each_store_leaves_the_whole_value() {
        let mut e = 0u64;
        let v = PageTableEntry::new(MachineFrame::new(0x1_2345), KERNEL_RW);
        // SAFETY: `e` is a local, aligned u64.
        unsafe { store_split(&mut e, v) };
        assert_eq!(e, v.bits());
        // SAFETY: as above.
        unsafe { clear(&mut e) };
        assert_eq!(e, 0);
        let nx = PageTableEntry::from_bits(v.bits() | 1 << 63);
        // SAFETY: as above.
        unsafe { store_whole(&mut e, nx) };
        assert_eq!(e, nx.bits());
    }
}

//! Codegen probes: `cargo xtask test` disassembles these two functions and checks that the
//! framework's native `set_pte` (slot -> entry address -> PAE store, through the `MmuOps`
//! trait) compiles to exactly the instruction sequence of a hand-written raw PAE store.

use backend_native::{Native, PAGE_OFFSET};
use pvops_core::addr::{EntryIndex, PhysFrame};
use pvops_core::paging::{EntrySlot, PageTableEntry};
use pvops_core::MmuOps;

/// `set_pte` through the framework.
///
/// # Safety
/// Never called: it only exists to be disassembled (it would write a page-table entry).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.pvops_probes")]
#[inline(never)]
pub unsafe extern "C" fn pvops_probe_set_pte_framework(
    native: &mut Native,
    table: u32,
    index: u32,
    value: u64,
) {
    // Masked to 0..512 like the raw probe, so the checked constructor cannot fail (and
    // compiles to no check).
    let Some(index) = EntryIndex::new(index as usize & 0x1ff) else {
        return;
    };
    let slot = EntrySlot::new(PhysFrame::new(table), index);
    // SAFETY: see the function's contract.
    let _ = unsafe { native.set_pte(slot, PageTableEntry::from_bits(value)) };
}

/// The same store written by hand: high half, then the low half holding Present.
///
/// # Safety
/// As [`pvops_probe_set_pte_framework`].
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.pvops_probes")]
#[inline(never)]
pub unsafe extern "C" fn pvops_probe_set_pte_raw(
    _native: &mut Native,
    table: u32,
    index: u32,
    value: u64,
) {
    let entry = (PAGE_OFFSET as usize + ((table as usize) << 12) + (index as usize & 0x1ff) * 8)
        as *mut u32;
    // SAFETY: see the function's contract.
    unsafe {
        core::ptr::write_volatile(entry.add(1), (value >> 32) as u32);
        core::ptr::write_volatile(entry, value as u32);
    }
}

//! Codegen probes: `cargo xtask test` disassembles these functions and checks that the
//! framework's native `set_pte` (slot -> entry address -> PAE store, through the `MmuOps`
//! trait) compiles to exactly the instruction sequence of a hand-written raw PAE store, that
//! `set_pte_atomic`/`set_pmd`/`set_pud` are a `lock cmpxchg8b`, and that the clears store the
//! low half (Present) before the high half (`pud_clear` also reloads cr3).

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

/// Defines a probe that runs one native primitive through the `MmuOps` trait on entry
/// `index & 511` of table `table`.
macro_rules! probe {
    ($name:ident, |$n:ident, $slot:ident, $value:ident| $call:expr) => {
        /// A native primitive through the framework, for the codegen check.
        ///
        /// # Safety
        /// Never called: it only exists to be disassembled (it would change a page-table entry).
        #[unsafe(no_mangle)]
        #[unsafe(link_section = ".text.pvops_probes")]
        #[inline(never)]
        pub unsafe extern "C" fn $name($n: &mut Native, table: u32, index: u32, $value: u64) {
            let Some(index) = EntryIndex::new(index as usize & 0x1ff) else {
                return;
            };
            let $slot = EntrySlot::new(PhysFrame::new(table), index);
            let _ = $value;
            // SAFETY: see the function's contract.
            let _ = unsafe { $call };
        }
    };
}

probe!(pvops_probe_set_pte_atomic, |n, slot, v| n
    .set_pte_atomic(slot, PageTableEntry::from_bits(v)));
probe!(pvops_probe_set_pmd, |n, slot, v| n
    .set_pmd(slot, PageTableEntry::from_bits(v)));
probe!(pvops_probe_set_pud, |n, slot, v| n
    .set_pud(slot, PageTableEntry::from_bits(v)));
probe!(pvops_probe_pte_clear, |n, slot, v| n.pte_clear(slot));
probe!(pvops_probe_pmd_clear, |n, slot, v| n.pmd_clear(slot));
probe!(pvops_probe_pud_clear, |n, slot, v| n.pud_clear(slot));

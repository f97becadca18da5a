//! Bench support for pvops: the native backend's store path on host memory.
//!
//! [`HostStores`] implements [`MmuOps`] with exactly the store code of the kernel's native
//! backend ([`backend_native::store::set_entry`]); only the direct map's base differs (a
//! host buffer instead of the constant `PAGE_OFFSET`). It is a bench fixture: its cr3 and
//! flush operations do nothing. The real kernel's `set_pte` is checked to be the raw store
//! instruction for instruction by `cargo xtask test`.

use core::convert::Infallible;
use pvops_core::addr::{FrameRange, MachineFrame, PhysFrame, VirtAddr};
use pvops_core::ops::{MemoryLayout, MmuOps};
use pvops_core::paging::{EntrySlot, Level, PageTableEntry};

/// Native stores into a host buffer of page-table frames.
pub struct HostStores {
    base: usize,
}

impl HostStores {
    /// Stores into `frames`, which holds frame 0 at its start.
    pub fn new(frames: &mut [u64]) -> HostStores {
        HostStores {
            base: frames.as_mut_ptr() as usize,
        }
    }
}

impl MmuOps for HostStores {
    type Error = Infallible;
    type Counters = backend_native::counters::NoHypercalls;
    const NAME: &'static str = "native-host-bench";
    const READ_ONLY_PAGE_TABLES: bool = false;

    fn counters(&self) -> Self::Counters {
        backend_native::counters::NoHypercalls
    }
    fn layout(&self) -> MemoryLayout {
        backend_native::LAYOUT
    }
    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame> {
        Some(MachineFrame(frame.0))
    }
    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame> {
        Some(PhysFrame(frame.0))
    }
    fn read_cr3(&self) -> PhysFrame {
        PhysFrame(0)
    }
    unsafe fn write_cr3(&mut self, _root: PhysFrame) -> Result<(), Infallible> {
        Ok(())
    }
    #[inline(always)]
    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), Infallible> {
        // SAFETY: the caller's slot lies in the buffer given to `new`.
        unsafe { backend_native::store::set_entry(self.base, slot, entry) };
        Ok(())
    }
    unsafe fn set_pmd(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), Infallible> {
        // SAFETY: as set_pte.
        unsafe { backend_native::store::set_entry(self.base, slot, entry) };
        Ok(())
    }
    unsafe fn set_pud(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), Infallible> {
        // SAFETY: as set_pte.
        unsafe { backend_native::store::set_entry(self.base, slot, entry) };
        Ok(())
    }
    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), Infallible> {
        // SAFETY: as set_pte.
        unsafe {
            backend_native::store::pae_clear(backend_native::store::entry_ptr(self.base, slot))
        };
        Ok(())
    }
    fn flush_tlb_single(&mut self, _va: VirtAddr) -> Result<(), Infallible> {
        Ok(())
    }
    fn flush_tlb_all(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn pagetable_setup_start(&mut self, _root: PhysFrame) -> Result<(), Infallible> {
        Ok(())
    }
    fn pagetable_setup_done(&mut self, _root: PhysFrame) -> Result<FrameRange, Infallible> {
        Ok(FrameRange::EMPTY)
    }
    fn alloc_pt(&mut self, _frame: PhysFrame, _level: Level) -> Result<(), Infallible> {
        Ok(())
    }
    fn release_pt(&mut self, _frame: PhysFrame, _level: Level) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Writes 512 entries of frame `table` through the framework (`MmuOps::set_pte`).
#[inline(never)]
pub fn framework_batch<B: MmuOps>(b: &mut B, table: PhysFrame, entries: &[PageTableEntry; 512]) {
    for (i, e) in entries.iter().enumerate() {
        let slot = EntrySlot {
            table,
            index: i as u16,
        };
        // SAFETY: bench fixture: the table is the caller's buffer.
        let _ = unsafe { b.set_pte(slot, *e) };
    }
}

/// Writes 512 entries with raw PAE stores (high half, then low half), addressing them the way
/// a kernel does without the framework: `base + (table << 12) + index * 8`.
#[inline(never)]
pub fn raw_batch(frames: &mut [u64], table: PhysFrame, entries: &[PageTableEntry; 512]) {
    assert!(
        frames.len() >= (table.0 as usize + 1) * 512,
        "the buffer holds the table"
    );
    let base = frames.as_mut_ptr() as usize;
    for (i, e) in entries.iter().enumerate() {
        let p = (base + ((table.0 as usize) << 12) + i * 8) as *mut u32;
        // SAFETY: entry i of frame `table` lies inside `frames` (asserted above).
        unsafe {
            core::ptr::write_volatile(p.add(1), e.high());
            core::ptr::write_volatile(p, e.low());
        }
    }
}

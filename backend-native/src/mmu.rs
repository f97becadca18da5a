//! The native `MmuOps`: raw PAE stores, cr3 through the x86 crate, invlpg.

use crate::error::{retire_bootstrap, NativeError};
use crate::{fixmap, store, BOOTSTRAP_MAPPED, LAYOUT, PAGE_OFFSET};
use pvops_core::addr::{
    EntryIndex, FrameRange, MachineFrame, PdptIndex, PhysFrame, VirtAddr, PAGE_SIZE,
};
use pvops_core::mapper;
use pvops_core::mem::MemoryMap;
use pvops_core::ops::{MemoryLayout, MmuOps, PageFault, Platform};
use pvops_core::paging::{EntrySlot, Level, PageTableEntry, TABLE_FLAGS};

/// The bare-metal backend.
pub struct Native {
    reach: PhysFrame,
    lowmem_end: PhysFrame,
    bootstrap: FrameRange,
}

impl Native {
    /// The native MMU for a kernel entered through the native bootstrap stub (multiboot1 or
    /// PVH): `reach` is what the bootstrap table maps, `bootstrap` its frames (retired by
    /// `pagetable_setup_done`), `memory` the machine's memory map (it sets the lowmem end).
    pub fn new(reach: PhysFrame, bootstrap: FrameRange, memory: &MemoryMap) -> Native {
        let ram_end = memory
            .ram()
            .map(|r| r.end())
            .max()
            .unwrap_or(BOOTSTRAP_MAPPED);
        let lowmem_end = ram_end.min(LAYOUT.lowmem_limit) / PAGE_SIZE;
        Native {
            reach,
            lowmem_end: PhysFrame::new(lowmem_end as u32),
            bootstrap,
        }
    }
}

const BASE: usize = PAGE_OFFSET as usize;

impl MmuOps for Native {
    pvops_core::direct_mmu_hooks!();
    type Error = NativeError;
    type Counters = crate::counters::NoHypercalls;
    const NAME: &'static str = "native";
    const READ_ONLY_PAGE_TABLES: bool = false;

    fn counters(&self) -> crate::counters::NoHypercalls {
        crate::counters::NoHypercalls
    }
    fn layout(&self) -> MemoryLayout {
        LAYOUT
    }
    #[inline(always)]
    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame> {
        Some(MachineFrame::new(frame.number()))
    }
    #[inline(always)]
    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame> {
        Some(PhysFrame::new(frame.number()))
    }
    fn read_cr3(&self) -> PhysFrame {
        // SAFETY: reading cr3 in ring 0.
        PhysFrame::new((unsafe { x86::controlregs::cr3() } >> 12) as u32)
    }
    unsafe fn write_cr3(&mut self, root: PhysFrame) -> Result<(), NativeError> {
        // SAFETY: the caller guarantees `root` maps the running kernel; loading cr3 latches
        // the PDPT entries.
        unsafe { x86::controlregs::cr3_write(root.start().as_u64()) };
        // The double-fault task must find the kernel mapped: it switches to the live table.
        crate::tss::set_cr3(root.start().as_u64() as u32);
        self.reach = self.lowmem_end;
        Ok(())
    }
    #[inline(always)]
    unsafe fn set_pte(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), NativeError> {
        // SAFETY: page-table frames are reachable through the current mapping at PAGE_OFFSET;
        // the caller guarantees the target is not present (the split store is then safe).
        unsafe { store::set_entry(BASE, slot, entry) };
        Ok(())
    }
    #[inline(always)]
    unsafe fn set_pte_atomic(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), NativeError> {
        // SAFETY: as set_pte; one 64-bit store.
        unsafe { store::set_entry_whole(BASE, slot, entry) };
        Ok(())
    }
    #[inline(always)]
    unsafe fn set_pmd(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), NativeError> {
        // SAFETY: as set_pte_atomic.
        unsafe { store::set_entry_whole(BASE, slot, entry) };
        Ok(())
    }
    #[inline(always)]
    unsafe fn set_pud(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), NativeError> {
        // SAFETY: as set_pte_atomic. The CPU sees a live PDPT change only at the next cr3 load.
        unsafe { store::set_entry_whole(BASE, slot, entry) };
        Ok(())
    }
    #[inline(always)]
    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), NativeError> {
        // SAFETY: as set_pte; the low half (Present) goes first.
        unsafe { store::clear_entry(BASE, slot) };
        Ok(())
    }
    #[inline(always)]
    unsafe fn pmd_clear(&mut self, slot: EntrySlot) -> Result<(), NativeError> {
        // SAFETY: as pte_clear.
        unsafe { store::clear_entry(BASE, slot) };
        Ok(())
    }
    #[inline(always)]
    unsafe fn pud_clear(&mut self, slot: EntrySlot) -> Result<(), NativeError> {
        // SAFETY: as pte_clear.
        unsafe { store::clear_entry(BASE, slot) };
        if slot.table() == self.read_cr3() {
            // The CPU latched the PDPT entries at the last cr3 load: reload it so the cleared
            // entry is seen (and the TLB entries it covered go).
            // SAFETY: reloading cr3 with its own value keeps the address space the caller
            // vouched for (nothing uses the cleared gigabyte).
            unsafe { x86::controlregs::cr3_write(x86::controlregs::cr3()) };
        }
        Ok(())
    }
    fn flush_tlb_single(&mut self, va: VirtAddr) -> Result<(), NativeError> {
        // SAFETY: invlpg only drops a TLB entry.
        unsafe { x86::tlb::flush(va.as_usize()) };
        Ok(())
    }
    fn flush_tlb_all(&mut self) -> Result<(), NativeError> {
        // SAFETY: reloading cr3 with its own value only drops TLB entries.
        unsafe { x86::tlb::flush_all() };
        Ok(())
    }
    fn pagetable_setup_start(&mut self, root: PhysFrame) -> Result<(), NativeError> {
        // The fixmap's L1 goes into the kernel's table at the address the bootstrap table
        // has it, so fixmap pages (a PVH console ring) survive the switch. new_root made all
        // four L2s; a root without its slot-3 L2 has no fixmap to carry.
        let l2 = mapper::read_entry(self, root, PdptIndex::new_const(3))
            .ok()
            .filter(|e| e.is_present())
            .and_then(|e| e.frame())
            .map(|m| PhysFrame::new(m.number()));
        if let Some(l2) = l2 {
            let slot = EntrySlot::new(l2, EntryIndex::new_const(fixmap::PD_INDEX));
            let l1 = MachineFrame::new(fixmap::table_frame().number());
            // SAFETY: `root` is the kernel's table, not live yet; the fixmap L1 is the image's
            // own page table, already used (with these entries) by the bootstrap table.
            unsafe { self.set_pmd(slot, PageTableEntry::new(l1, TABLE_FLAGS)) }?;
        }
        Ok(())
    }
    fn pagetable_setup_done(&mut self, root: PhysFrame) -> Result<FrameRange, NativeError> {
        // The bootstrap PDPT and page directory are plain .bss frames: nothing to retire, but
        // they are handed to the allocator only once cr3 has left them for `root`.
        retire_bootstrap(self.read_cr3(), root, self.bootstrap)
    }
    fn alloc_pt(&mut self, _frame: PhysFrame, _level: Level) -> Result<(), NativeError> {
        Ok(())
    }
    fn release_pt(&mut self, _frame: PhysFrame, _level: Level) -> Result<(), NativeError> {
        Ok(())
    }
}

impl Platform for Native {
    fn frame_ptr(&self, frame: PhysFrame) -> Option<*mut u8> {
        (frame < self.reach)
            .then(|| (PAGE_OFFSET as usize + ((frame.number() as usize) << 12)) as *mut u8)
    }
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        // SAFETY: the caller vouches for `va`; an unmapped page traps to the IDT.
        unsafe { pvops_core::ops::hardware_read_virt(va, buf) };
        Ok(())
    }
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        // SAFETY: as read_virt.
        unsafe { pvops_core::ops::hardware_write_virt(va, data) };
        Ok(())
    }
    fn cycles(&self) -> u64 {
        // SAFETY: rdtsc has no side effects.
        unsafe { core::arch::x86::_rdtsc() }
    }
}

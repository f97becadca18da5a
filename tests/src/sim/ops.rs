//! [`MmuOps`] and [`Platform`] for the simulated machine.

use super::*;

impl MmuOps for SimMachine {
    pvops_core::direct_mmu_hooks!();

    type Error = SimError;
    type Counters = backend_native::counters::NoHypercalls;
    fn counters(&self) -> Self::Counters {
        backend_native::counters::NoHypercalls
    }
    const NAME: &'static str = "sim";
    const READ_ONLY_PAGE_TABLES: bool = false;

    fn layout(&self) -> MemoryLayout {
        self.tick();
        self.cfg.layout
    }

    fn phys_to_machine(&self, frame: PhysFrame) -> Option<MachineFrame> {
        self.tick();
        self.pfn_to_mfn(frame).map(MachineFrame::new)
    }

    fn machine_to_phys(&self, frame: MachineFrame) -> Option<PhysFrame> {
        self.tick();
        self.mfn_to_pfn(frame.number())
    }

    fn read_cr3(&self) -> PhysFrame {
        self.tick();
        self.mfn_to_pfn(self.cr3.number())
            .expect("cr3 names guest memory")
    }

    unsafe fn write_cr3(&mut self, root: PhysFrame) -> Result<(), SimError> {
        let seq = self.pt_op("write_cr3")?;
        let mfn = self.pfn_to_mfn(root).ok_or(SimError::NoSuchFrame(root))?;
        let old = (self.cr3, self.latched);
        self.cr3 = MachineFrame::new(mfn);
        if let Err(e) = self.latch() {
            (self.cr3, self.latched) = old;
            return Err(e);
        }
        self.tlb.borrow_mut().retain(|_, e| e.global);
        self.cr3_history.push(root);
        self.events.push(SimEvent::Cr3 { seq, root });
        Ok(())
    }

    unsafe fn set_pte(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), SimError> {
        let seq = self.pt_op("set_pte")?;
        self.write_entry(
            seq,
            "set_pte",
            Level::L1,
            slot,
            entry,
            StoreOrder::HighThenLow,
        )
    }

    unsafe fn set_pte_atomic(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), SimError> {
        let seq = self.pt_op("set_pte_atomic")?;
        self.write_entry(
            seq,
            "set_pte_atomic",
            Level::L1,
            slot,
            entry,
            StoreOrder::Whole,
        )
    }

    unsafe fn set_pmd(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), SimError> {
        let seq = self.pt_op("set_pmd")?;
        self.need_table("set_pmd", slot, Level::L2)?;
        self.check_link("set_pmd", slot, entry, Level::L1)?;
        self.write_entry(seq, "set_pmd", Level::L2, slot, entry, StoreOrder::Whole)
    }

    unsafe fn set_pud(&mut self, slot: EntrySlot, entry: PageTableEntry) -> Result<(), SimError> {
        let seq = self.pt_op("set_pud")?;
        self.need_table("set_pud", slot, Level::L3)?;
        self.check_link("set_pud", slot, entry, Level::L2)?;
        self.write_entry(seq, "set_pud", Level::L3, slot, entry, StoreOrder::Whole)
    }

    unsafe fn pte_clear(&mut self, slot: EntrySlot) -> Result<(), SimError> {
        let seq = self.pt_op("pte_clear")?;
        let e = PageTableEntry::EMPTY;
        self.write_entry(
            seq,
            "pte_clear",
            Level::L1,
            slot,
            e,
            StoreOrder::LowThenHigh,
        )
    }

    unsafe fn pmd_clear(&mut self, slot: EntrySlot) -> Result<(), SimError> {
        let seq = self.pt_op("pmd_clear")?;
        let e = PageTableEntry::EMPTY;
        self.write_entry(
            seq,
            "pmd_clear",
            Level::L2,
            slot,
            e,
            StoreOrder::LowThenHigh,
        )
    }

    unsafe fn pud_clear(&mut self, slot: EntrySlot) -> Result<(), SimError> {
        let seq = self.pt_op("pud_clear")?;
        let e = PageTableEntry::EMPTY;
        self.write_entry(
            seq,
            "pud_clear",
            Level::L3,
            slot,
            e,
            StoreOrder::LowThenHigh,
        )?;
        if self.pfn_to_mfn(slot.table()) == Some(self.cr3.number()) {
            // Bare metal reloads cr3: the PDPT entries are latched again, the TLB goes.
            self.latch()?;
            self.tlb.borrow_mut().retain(|_, e| e.global);
            self.events.push(SimEvent::Cr3Reload { seq });
        }
        Ok(())
    }

    fn flush_tlb_single(&mut self, va: VirtAddr) -> Result<(), SimError> {
        let seq = self.pt_op("flush_tlb_single")?;
        self.tlb.borrow_mut().remove(&(va.as_u32() >> 12));
        self.events.push(SimEvent::FlushSingle { seq, va });
        Ok(())
    }

    fn flush_tlb_all(&mut self) -> Result<(), SimError> {
        let seq = self.pt_op("flush_tlb_all")?;
        self.tlb.borrow_mut().retain(|_, e| e.global);
        self.events.push(SimEvent::FlushAll { seq });
        Ok(())
    }

    fn pagetable_setup_start(&mut self, root: PhysFrame) -> Result<(), SimError> {
        let seq = self.pt_op("pagetable_setup_start")?;
        let slot = EntrySlot::new(root, EntryIndex::new_const(0));
        self.need_table("pagetable_setup_start", slot, Level::L3)?;
        self.events.push(SimEvent::SetupStart { seq, root });
        Ok(())
    }

    fn pagetable_setup_done(&mut self, root: PhysFrame) -> Result<FrameRange, SimError> {
        let seq = self.pt_op("pagetable_setup_done")?;
        let live = self
            .mfn_to_pfn(self.cr3.number())
            .expect("cr3 names guest memory");
        if live != root {
            return Err(SimError::NotLive { root, live });
        }
        if self.retired.is_some() {
            return Err(SimError::AlreadyRetired);
        }
        for f in self.bootstrap.iter() {
            self.tables[f.number() as usize] = None;
        }
        let released = self.bootstrap;
        self.retired = Some(released);
        self.events.push(SimEvent::SetupDone {
            seq,
            root,
            released,
        });
        *self.watch.borrow_mut() = Some(Watch {
            frames: released,
            versions: vec![Vec::new(); released.len() as usize],
            ticks_left: WATCH_TICKS,
        });
        self.tick(); // records the content at retirement
        Ok(released)
    }

    fn alloc_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), SimError> {
        let seq = self.pt_op("alloc_pt")?;
        let mfn = self.pfn_to_mfn(frame).ok_or(SimError::NoSuchFrame(frame))?;
        if let Some(l) = self.table_level(frame) {
            return Err(SimError::AlreadyTable { frame, level: l });
        }
        if (0..ENTRIES).any(|i| self.load_entry(mfn, i) != Some(0)) {
            return Err(SimError::NotZeroed(frame));
        }
        self.tables[frame.number() as usize] = Some(level);
        self.events.push(SimEvent::AllocPt { seq, frame, level });
        Ok(())
    }

    fn release_pt(&mut self, frame: PhysFrame, level: Level) -> Result<(), SimError> {
        let seq = self.pt_op("release_pt")?;
        let slot = EntrySlot::new(frame, EntryIndex::new_const(0));
        self.need_table("release_pt", slot, level)?;
        if let Some((from, index)) = self.linked_from(frame) {
            return Err(SimError::StillLinked { frame, from, index });
        }
        self.tables[frame.number() as usize] = None;
        self.events.push(SimEvent::ReleasePt { seq, frame, level });
        Ok(())
    }
}

impl Platform for SimMachine {
    fn frame_ptr(&self, frame: PhysFrame) -> Option<*mut u8> {
        self.tick();
        let mfn = self.pfn_to_mfn(frame)?;
        if self.cfg.strict_reach {
            let va = self.cfg.layout.phys_to_virt(frame.start());
            let reach = frame.start().as_u64()
                < (1u64 << 32) - self.cfg.layout.page_offset.as_u32() as u64
                && self
                    .walk(va, Access::Read)
                    .is_ok_and(|t| t.mfn.number() == mfn);
            if !reach {
                return None;
            }
        }
        self.mframe(mfn)
    }

    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        self.tick();
        self.access_virt(va, buf.len(), Access::Read, |p, at, n| match p {
            // SAFETY: `p` points into a 4096-byte frame with at least `n` bytes left.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, buf[at..].as_mut_ptr(), n) },
            None => buf[at..at + n].fill(0xff), // no RAM there: open bus
        })
    }

    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        self.tick();
        self.access_virt(va, data.len(), Access::Write, |p, at, n| {
            if let Some(p) = p {
                // SAFETY: as in `read_virt`.
                unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), p, n) };
            }
        })
    }

    fn cycles(&self) -> u64 {
        self.tick()
    }
}

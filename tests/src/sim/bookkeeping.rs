//! Numbering and checking page-table operations: fault injection, table levels, the write log.

use super::*;

impl SimMachine {
    pub(super) fn tick(&self) -> u64 {
        let now = self.clock.get() + 1;
        self.clock.set(now);
        let mut w = self.watch.borrow_mut();
        if let Some(w) = w.as_mut().filter(|w| w.ticks_left > 0) {
            w.ticks_left -= 1;
            for (i, f) in w.frames.iter().enumerate() {
                let Some(p) = self.pfn_to_mfn(f).and_then(|m| self.mframe(m)) else {
                    continue;
                };
                // SAFETY: 4096 readable bytes.
                let now = unsafe { std::slice::from_raw_parts(p as *const u8, FRAME_BYTES) };
                if w.versions[i].last().is_none_or(|v| **v != *now) {
                    w.versions[i].push(now.into());
                }
            }
        }
        now
    }

    /// Counts a page-table operation and fails it when injection says so.
    pub(super) fn pt_op(&mut self, op: &'static str) -> Result<u64, SimError> {
        self.tick();
        self.pt_ops += 1;
        let n = self.pt_ops;
        if self.fail_at == Some(n) {
            return Err(SimError::Injected { n, op });
        }
        Ok(n)
    }

    pub(super) fn need_table(
        &self,
        op: &'static str,
        slot: EntrySlot,
        want: Level,
    ) -> Result<u32, SimError> {
        let is = self.table_level(slot.table());
        if is != Some(want) {
            return Err(SimError::NotATable {
                op,
                table: slot.table(),
                want,
                is,
            });
        }
        if want == Level::L3 && slot.index().get() >= PDPT_ENTRIES || slot.index().get() >= ENTRIES
        {
            return Err(SimError::BadIndex { op, slot });
        }
        self.pfn_to_mfn(slot.table())
            .ok_or(SimError::NoSuchFrame(slot.table()))
    }

    pub(super) fn check_link(
        &self,
        op: &'static str,
        slot: EntrySlot,
        entry: PageTableEntry,
        want: Level,
    ) -> Result<(), SimError> {
        if !entry.is_present() || (want == Level::L1 && entry.flags().contains(PteFlags::HUGE)) {
            return Ok(());
        }
        let target = self.mfn_to_pfn(entry.frame().map_or(u32::MAX, MachineFrame::number));
        if target.and_then(|t| self.table_level(t)) != Some(want) {
            return Err(SimError::BadLink { op, slot, entry });
        }
        Ok(())
    }

    /// Writes entry `slot` (of a table of `level`) with `new` in the half order `order`,
    /// as the native backend's primitive does, and logs it. Refused, with nothing written:
    /// a `set_pte` over a present entry, and any order that lets the walker see, between the
    /// two halves, a present entry that is neither the old nor the new one.
    pub(super) fn write_entry(
        &mut self,
        seq: u64,
        op: &'static str,
        level: Level,
        slot: EntrySlot,
        new: PageTableEntry,
        order: StoreOrder,
    ) -> Result<(), SimError> {
        let mfn = self.need_table(op, slot, level)?;
        let old = PageTableEntry::from_bits(self.load_entry(mfn, slot.index().get()).unwrap_or(0));
        if op == "set_pte" && old.is_present() {
            return Err(SimError::PresentTarget { op, slot, old });
        }
        let (hi, lo) = (HalfStore::High(new.high()), HalfStore::Low(new.low()));
        let stores = match order {
            StoreOrder::HighThenLow => [Some(hi), Some(lo)],
            StoreOrder::LowThenHigh => [Some(lo), Some(hi)],
            StoreOrder::Whole => [Some(HalfStore::Whole(new.bits())), None],
        };
        // What memory holds after the first store: the walker may read it.
        let mut between = old.bits();
        if let [Some(first), Some(_)] = stores {
            between = apply(between, first);
            let seen = PageTableEntry::from_bits(between);
            if seen.is_present() && seen != old && seen != new {
                return Err(SimError::TornEntry {
                    op,
                    slot,
                    old,
                    new,
                    seen,
                });
            }
        }
        let mut bits = old.bits();
        for st in stores.into_iter().flatten() {
            bits = apply(bits, st);
            self.store_entry(MachineFrame::new(mfn), slot.index().get(), bits);
        }
        self.writes.push(PtWrite {
            seq,
            op,
            level,
            slot,
            value: new,
            stores,
        });
        let c = &mut self.counts;
        match op {
            "set_pte" => c.pte += 1,
            "set_pte_atomic" => c.pte_atomic += 1,
            "set_pmd" => c.pmd += 1,
            "set_pud" => c.pud += 1,
            "pte_clear" => c.clear += 1,
            "pmd_clear" => c.pmd_clear += 1,
            "pud_clear" => c.pud_clear += 1,
            _ => {}
        }
        Ok(())
    }

    pub(super) fn linked_from(&self, frame: PhysFrame) -> Option<(PhysFrame, usize)> {
        let mfn = self.pfn_to_mfn(frame)?;
        self.tables.iter().enumerate().find_map(|(pfn, l)| {
            let n = match l {
                Some(Level::L3) => PDPT_ENTRIES,
                Some(Level::L2) => ENTRIES,
                _ => return None,
            };
            let tm = self.cfg.p2m.to_machine(pfn as u32);
            (0..n).find_map(|i| {
                let e = PageTableEntry::from_bits(self.load_entry(tm, i).unwrap_or(0));
                let huge = *l == Some(Level::L2) && e.flags().contains(PteFlags::HUGE);
                (e.is_present() && !huge && e.frame().map_or(u32::MAX, MachineFrame::number) == mfn)
                    .then_some((PhysFrame::new(pfn as u32), i))
            })
        })
    }
}

/// An entry's bits after one store.
fn apply(bits: u64, st: HalfStore) -> u64 {
    match st {
        HalfStore::Low(v) => (bits & !0xffff_ffff) | v as u64,
        HalfStore::High(v) => (bits & 0xffff_ffff) | (v as u64) << 32,
        HalfStore::Whole(v) => v,
    }
}

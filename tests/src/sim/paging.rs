//! The CPU side: PDPTE latching at cr3 load, the page walker, the TLB and guest accesses.

use super::*;

impl SimMachine {
    /// The PDPT entries latched by the last cr3 load.
    pub fn latched_pdptes(&self) -> [PageTableEntry; PDPT_ENTRIES] {
        self.latched.map(PageTableEntry::from_bits)
    }

    /// The machine frame in cr3.
    pub fn cr3_mfn(&self) -> MachineFrame {
        self.cr3
    }

    pub(super) fn latch(&mut self) -> Result<(), SimError> {
        let mut l = [0u64; PDPT_ENTRIES];
        for (i, e) in l.iter_mut().enumerate() {
            *e = self.load_entry(self.cr3.number(), i).unwrap_or(u64::MAX);
            if *e & 1 != 0 && *e & PDPTE_RESERVED != 0 {
                return Err(SimError::PdpteReserved { index: i, bits: *e });
            }
        }
        self.latched = l;
        Ok(())
    }

    /// Walks the live address space like the MMU, without the TLB: latched PDPTEs, then the
    /// L2 and L1 frames in memory.
    pub fn walk(&self, va: VirtAddr, access: Access) -> Result<Translation, PageFault> {
        self.walk_from(&self.latched, va, access)
    }

    /// Walks the table rooted at `root` as a CPU would right after loading it into cr3 (its
    /// PDPT entries read from memory now), without the TLB.
    pub fn walk_root(
        &self,
        root: PhysFrame,
        va: VirtAddr,
        access: Access,
    ) -> Result<Translation, PageFault> {
        let mfn = self.pfn_to_mfn(root).expect("root inside RAM");
        let mut l = [0u64; PDPT_ENTRIES];
        for (i, e) in l.iter_mut().enumerate() {
            *e = self.load_entry(mfn, i).unwrap_or(0);
        }
        self.walk_from(&l, va, access)
    }

    pub(super) fn walk_from(
        &self,
        pdptes: &[u64; PDPT_ENTRIES],
        va: VirtAddr,
        access: Access,
    ) -> Result<Translation, PageFault> {
        let w = if access == Access::Write { PF_WRITE } else { 0 };
        let fault = |error: u32| PageFault { addr: va, error };
        let nx_rsvd = if self.cfg.nx {
            0
        } else {
            PteFlags::NO_EXECUTE.bits()
        };
        let l3e = pdptes[va.l3_index().get()];
        if l3e & 1 == 0 {
            return Err(fault(w));
        }
        let l2 = ((l3e & ADDRESS_MASK) / PAGE_SIZE) as u32;
        let l2e = self
            .load_entry(l2, va.l2_index().get())
            .ok_or(fault(w | PF_RSVD))?;
        if l2e & 1 == 0 {
            return Err(fault(w));
        }
        let huge = l2e & PteFlags::HUGE.bits() != 0;
        if l2e & nx_rsvd != 0 || (huge && l2e & HUGE_RESERVED != 0) {
            return Err(fault(w | PF_PRESENT | PF_RSVD));
        }
        let mut writable = l2e & PteFlags::WRITABLE.bits() != 0;
        let (mfn, leaf) = if huge {
            let base = ((l2e & ADDRESS_MASK & !(2 * MIB - 1)) / PAGE_SIZE) as u32;
            (base + va.l1_index().get() as u32, l2e)
        } else {
            let l1 = ((l2e & ADDRESS_MASK) / PAGE_SIZE) as u32;
            let l1e = self
                .load_entry(l1, va.l1_index().get())
                .ok_or(fault(w | PF_RSVD))?;
            if l1e & 1 == 0 {
                return Err(fault(w));
            }
            if l1e & nx_rsvd != 0 {
                return Err(fault(w | PF_PRESENT | PF_RSVD));
            }
            writable &= l1e & PteFlags::WRITABLE.bits() != 0;
            (((l1e & ADDRESS_MASK) / PAGE_SIZE) as u32, l1e)
        };
        if access == Access::Write && !writable {
            return Err(fault(w | PF_PRESENT));
        }
        Ok(Translation {
            mfn: MachineFrame::new(mfn),
            pfn: self.mfn_to_pfn(mfn),
            writable,
            huge,
            global: leaf & PteFlags::GLOBAL.bits() != 0,
            leaf: PageTableEntry::from_bits(leaf),
        })
    }

    /// Translates through the TLB, filling it from a walk on a miss (or when the cached
    /// entry does not allow the access: the CPU re-walks before faulting).
    pub(super) fn tlb_translate(&self, va: VirtAddr, access: Access) -> Result<u32, PageFault> {
        let vpn = va.as_u32() >> 12;
        if let Some(e) = self.tlb.borrow().get(&vpn) {
            if access == Access::Read || e.writable {
                return Ok(e.mfn);
            }
        }
        self.tlb.borrow_mut().remove(&vpn);
        let t = self.walk(va, access)?;
        self.tlb.borrow_mut().insert(
            vpn,
            TlbEntry {
                mfn: t.mfn.number(),
                writable: t.writable,
                global: t.global,
            },
        );
        Ok(t.mfn.number())
    }

    /// True when the TLB holds a translation for `va`'s page.
    pub fn tlb_has(&self, va: VirtAddr) -> bool {
        self.tlb.borrow().contains_key(&(va.as_u32() >> 12))
    }
    /// Translations in the TLB.
    pub fn tlb_len(&self) -> usize {
        self.tlb.borrow().len()
    }

    pub(super) fn access_virt(
        &self,
        va: VirtAddr,
        len: usize,
        access: Access,
        mut f: impl FnMut(Option<*mut u8>, usize, usize),
    ) -> Result<(), PageFault> {
        let mut done = 0usize;
        while done < len {
            let a = VirtAddr::new(va.as_u32().wrapping_add(done as u32));
            let off = a.page_offset() as usize;
            let n = (FRAME_BYTES - off).min(len - done);
            let mfn = self.tlb_translate(a, access)?;
            f(self.mframe(mfn).map(|p| p.wrapping_add(off)), done, n);
            done += n;
        }
        Ok(())
    }
}

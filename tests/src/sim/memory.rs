//! Host storage of machine frames and raw pseudo-physical reads and writes.

use super::*;

impl SimMachine {
    pub(super) fn backed(&self, mfn: u32) -> bool {
        (mfn as usize) < self.store.len()
            && self
                .cfg
                .p2m
                .to_phys(mfn)
                .is_some_and(|p| p < self.ram_frames)
    }

    /// Host storage of a machine frame (allocated and zeroed on first touch); `None` for a
    /// frame that is not RAM.
    pub(super) fn mframe(&self, mfn: u32) -> Option<*mut u8> {
        if let Some(p) = self.store.existing(mfn) {
            return Some(p); // only backed frames are ever allocated
        }
        if !self.backed(mfn) {
            return None;
        }
        self.store.page(mfn)
    }

    /// Entry `index` of machine frame `mfn`; `None` for a frame that is not RAM or an index
    /// of 512 or more (never wrapped into the frame).
    pub(super) fn load_entry(&self, mfn: u32, index: usize) -> Option<u64> {
        let index = EntryIndex::new(index)?;
        let p = self.mframe(mfn)?;
        // SAFETY: `p` is a live 4096-byte, 4096-aligned allocation; an EntryIndex is < 512.
        Some(unsafe { (p as *const u64).add(index.get()).read_volatile() })
    }

    pub(super) fn store_entry(&self, mfn: MachineFrame, index: usize, bits: u64) {
        let index = EntryIndex::new(index).expect("entry index < 512");
        let p = self.mframe(mfn.number()).expect("table frame is backed");
        // SAFETY: as in `load_entry`.
        unsafe { (p as *mut u64).add(index.get()).write_volatile(bits) };
    }

    pub(super) fn pfn_to_mfn(&self, pfn: PhysFrame) -> Option<u32> {
        (pfn.number() < self.ram_frames).then(|| self.cfg.p2m.to_machine(pfn.number()))
    }
    pub(super) fn mfn_to_pfn(&self, mfn: u32) -> Option<PhysFrame> {
        self.cfg
            .p2m
            .to_phys(mfn)
            .filter(|p| *p < self.ram_frames)
            .map(PhysFrame::new)
    }

    /// Reads the raw entry `index` of pseudo-physical table `table` (no reachability check,
    /// no clock tick).
    pub fn entry(&self, table: PhysFrame, index: usize) -> PageTableEntry {
        let mfn = self.pfn_to_mfn(table).expect("table inside RAM");
        PageTableEntry::from_bits(self.load_entry(mfn, index).unwrap_or(0))
    }

    /// Reads pseudo-physical memory (through the p2m, bypassing paging).
    pub fn read_phys(&self, pa: PhysAddr, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = pa.as_u64() + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (FRAME_BYTES - off).min(buf.len() - done);
            let p = self
                .pfn_to_mfn(PhysAddr::new(a).frame().expect("frame below 16 TiB"))
                .and_then(|m| self.mframe(m))
                .expect("pa inside RAM");
            // SAFETY: `p` is 4096 bytes; off + n <= 4096.
            unsafe { std::ptr::copy_nonoverlapping(p.add(off), buf[done..].as_mut_ptr(), n) };
            done += n;
        }
    }

    /// Writes pseudo-physical memory (through the p2m, bypassing paging).
    pub fn write_phys(&mut self, pa: PhysAddr, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = pa.as_u64() + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (FRAME_BYTES - off).min(data.len() - done);
            let p = self
                .pfn_to_mfn(PhysAddr::new(a).frame().expect("frame below 16 TiB"))
                .and_then(|m| self.mframe(m))
                .expect("pa inside RAM");
            // SAFETY: as in `read_phys`.
            unsafe { std::ptr::copy_nonoverlapping(data[done..].as_ptr(), p.add(off), n) };
            done += n;
        }
    }

    /// The 4096 bytes of a pseudo-physical frame.
    pub fn frame_bytes(&self, frame: PhysFrame) -> Vec<u8> {
        let mut v = vec![0u8; FRAME_BYTES];
        self.read_phys(frame.start(), &mut v);
        v
    }
}

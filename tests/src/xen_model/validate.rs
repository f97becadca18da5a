//! Page types and their counts, validation and devalidation of tables, and the checked
//! L1/L2/L3 entry updates (Xen's mm.c rules).

use super::*;

impl XenModel {
    pub(super) fn get_type(&mut self, mfn: u32, ty: PageType, pae: bool) -> R {
        let s = self.frames[mfn as usize];
        if s.count == 0 {
            if ty == PageType::Writable {
                self.snap_check(mfn, "the frame gained a writable mapping");
                self.snaps.remove(&mfn);
                let f = &mut self.frames[mfn as usize];
                (f.ty, f.pae_xen_l2, f.count, f.validated) = (ty, false, 1, true);
                return Ok(());
            }
            self.snap_check(mfn, "the frame became a page table");
            let f = &mut self.frames[mfn as usize];
            (f.ty, f.pae_xen_l2, f.count, f.validated) = (ty, pae, 1, false);
            match self.validate(mfn, ty, pae) {
                Ok(()) => {
                    self.frames[mfn as usize].validated = true;
                    self.snap_take(mfn);
                    Ok(())
                }
                Err(e) => {
                    let f = &mut self.frames[mfn as usize];
                    (f.ty, f.pae_xen_l2, f.count, f.validated) = (PageType::None, false, 0, false);
                    Err(e)
                }
            }
        } else if s.ty == ty && s.pae_xen_l2 == pae {
            self.frames[mfn as usize].count += 1;
            Ok(())
        } else {
            Err(self.why(Errno::EINVAL, || {
                format!(
                    "Bad type (saw {}{} count {} != exp {}{}) mfn {mfn:#x}",
                    s.ty.name(),
                    if s.pae_xen_l2 { "+pae_xen_l2" } else { "" },
                    s.count,
                    ty.name(),
                    if pae { "+pae_xen_l2" } else { "" }
                )
            }))
        }
    }

    pub(super) fn put_type(&mut self, mfn: u32) {
        let s = self.frames[mfn as usize];
        if s.count == 0 {
            self.violations
                .push(format!("model bug: put_type of untyped mfn {mfn:#x}"));
            return;
        }
        self.frames[mfn as usize].count -= 1;
        if s.count == 1 {
            let f = &mut self.frames[mfn as usize];
            (f.ty, f.pae_xen_l2, f.validated) = (PageType::None, false, false);
            match s.ty {
                PageType::Writable => self.snap_take(mfn),
                t if t.is_table() && s.validated => self.devalidate(mfn, t, s.pae_xen_l2),
                _ => {}
            }
        }
    }

    pub(super) fn validate(&mut self, mfn: u32, ty: PageType, pae: bool) -> R {
        match ty {
            PageType::L1 => {
                for i in 0..512 {
                    let e = self.pte(mfn, i);
                    if e & P == 0 {
                        continue;
                    }
                    match self.get_l1e(e) {
                        Err(x) => {
                            let _ = self.why(x, || {
                                format!("Failure in alloc_l1_table: mfn {mfn:#x} slot {i}")
                            });
                            for j in 0..i {
                                self.put_l1e(self.pte(mfn, j));
                            }
                            return Err(x);
                        }
                        Ok(0) => {}
                        // promote_l1_table writes the flipped flags into the table.
                        Ok(flip) => self.xen_write(mfn, i, e ^ flip),
                    }
                }
                Ok(())
            }
            PageType::L2 => {
                let mut taken = Vec::new();
                for i in 0..512 {
                    if pae && i >= FIRST_XEN_L2_SLOT {
                        break;
                    }
                    let e = self.pte(mfn, i);
                    if e & P == 0 {
                        continue;
                    }
                    let t = frame_of(e);
                    let r = if e & L2_DISALLOW != 0 {
                        Err(self.why(Errno::EINVAL, || {
                            format!("Bad L2 flags {:#x}", e & L2_DISALLOW)
                        }))
                    } else {
                        self.get_l2e(e, mfn)
                    };
                    if let Err(x) = r {
                        let _ = self.why(x, || {
                            format!("Failure in alloc_l2_table: mfn {mfn:#x} slot {i}")
                        });
                        self.l2_failed_at = Some(i);
                        for e in taken {
                            self.put_l2e(e, mfn);
                        }
                        return Err(x);
                    }
                    let _ = t;
                    taken.push(e);
                }
                if pae {
                    self.write_xen_slots(mfn);
                }
                Ok(())
            }
            PageType::L3 => self.validate_l3(mfn),
            _ => Ok(()),
        }
    }

    pub(super) fn validate_l3(&mut self, mfn: u32) -> R {
        // "the full page is visible to the MMU": Xen clears entries 4..511.
        for i in 4..512 {
            if self.pte(mfn, i) != 0 {
                self.xen_write(mfn, i, 0);
            }
        }
        let mut taken = Vec::new();
        let mut adjusted = 0u8;
        let mut rc = Ok(());
        for i in 0..4 {
            let e = self.pte(mfn, i);
            if i == 3 && e & P == 0 {
                rc = Err(self.why(Errno::EINVAL, || "PAE L3 3rd slot is empty".into()));
                break;
            }
            if e & P == 0 {
                continue;
            }
            let t = frame_of(e);
            if e & L3_DISALLOW != 0 {
                rc = Err(self.why(Errno::EINVAL, || {
                    format!("Bad L3 flags {:#x}", e & L3_DISALLOW)
                }));
                break;
            }
            if !self.owned(t) {
                rc = Err(self.why(Errno::EINVAL, || {
                    format!("L3 entry names mfn {t:#x}, not the domain's")
                }));
                break;
            }
            self.l2_failed_at = None;
            if let Err(x) = self.get_type(t, PageType::L2, i == 3) {
                // promote_l2_table, failing at an entry other than its first, leaves the
                // L2 partially validated as `old_guest_table`; promote_l3_table, failing
                // at slot i > 0, takes it over as slot i's partial reference, and the
                // teardown (demote_l3_table) then unadjusts slot i as well.
                if i > 0 && self.l2_failed_at.is_some_and(|j| j > 0) {
                    adjusted |= 1 << i;
                }
                rc = Err(x);
                break;
            }
            if i == 3 && self.frames[t as usize].count != 1 {
                // pae_xen_mappings_check (mm.c L1383-1411), before slot 3 is adjusted. The
                // type reference get_page_and_type_from_mfn took on the L2 (L1549) is never
                // dropped: the failure path records 3 validated slots (L1597) and
                // demote_l3_table starts below them (L1912). Xen leaks it; the L2 keeps
                // its type for good (the differential test found it, seed 16).
                self.frames[t as usize].leaked += 1;
                rc = Err(self.why(Errno::EINVAL, || {
                    format!("PAE L3 3rd slot is shared (l2 mfn {t:#x})")
                }));
                break;
            }
            taken.push(t);
            // adjust_guest_l3e (compat): RW|US added.
            self.xen_write(mfn, i, e | RW | US);
            adjusted |= 1 << i;
        }
        if rc.is_err() {
            for t in taken {
                self.put_type(t);
            }
            // promote_l3_table on a failure: `unadjust_guest_l3e` of every entry it had
            // adjusted, which takes RW, US and A away (whatever the guest had written).
            for i in (0..4).filter(|i| adjusted & 1 << i != 0) {
                let e = self.pte(mfn, i);
                self.xen_write(mfn, i, e & !(RW | US | A));
            }
        }
        rc
    }

    /// Xen's private slots of a slot-3 L2: the read-only M2P as 2 MiB pages, the rest empty.
    pub(super) fn write_xen_slots(&mut self, mfn: u32) {
        // As `init_xen_pae_l2_slots` (pv/mm.c) copies them from compat_idle_pg_table_l2:
        // the read-only M2P only as far as machine memory exists, in 2 MiB pages without US
        // (the differential test read slot 428 back as P|PSE and slots 429.. empty on the
        // real machine; 8 slots here made a former slot-3 L2 fail a later plain-L2
        // validation there the real Xen passed).
        let machine_frames = self.frames.len() as u64;
        let m2p_slots = (machine_frames * 4).div_ceil(1 << 21) as usize;
        let max_slots = ((M2P_END - HOLE_START) >> 21) as usize;
        for (k, i) in (FIRST_XEN_L2_SLOT..512).enumerate() {
            let v = if k < m2p_slots.min(max_slots) {
                (((M2P_BACKING_MFN + k as u32 * 512) as u64) << 12) | P | A | PSE
            } else {
                0
            };
            self.xen_write(mfn, i, v);
        }
    }

    pub(super) fn devalidate(&mut self, mfn: u32, ty: PageType, pae: bool) {
        match ty {
            PageType::L1 => {
                for i in 0..512 {
                    self.put_l1e(self.pte(mfn, i));
                }
            }
            PageType::L2 => {
                for i in 0..512 {
                    if pae && i >= FIRST_XEN_L2_SLOT {
                        break;
                    }
                    self.put_l2e(self.pte(mfn, i), mfn);
                }
            }
            PageType::L3 => {
                // demote_l3_table: each entry's reference dropped, then the entry
                // `unadjust_guest_l3e`d: RW, US and A taken away (the differential test saw
                // it; the guest's own bits go too).
                for i in 0..4 {
                    let e = self.pte(mfn, i);
                    if e & P != 0 && self.owned(frame_of(e)) {
                        self.put_type(frame_of(e));
                        self.xen_write(mfn, i, e & !(RW | US | A));
                    }
                }
            }
            _ => {}
        }
    }

    /// The L1 flags refused in a present entry (`l1_disallow_mask`): a domain with I/O
    /// rights (dom0) may set the cache attributes.
    pub(super) fn l1_disallow(&self) -> u64 {
        if self.privileged {
            L1_DISALLOW & !(PWT | PCD | PSE)
        } else {
            L1_DISALLOW
        }
    }

    /// `get_page_from_l1e`: `Ok(flip)`, the flags Xen flips in the entry it stores (0 but
    /// for I/O memory).
    pub(super) fn get_l1e(&mut self, e: u64) -> Result<u64, Errno> {
        let disallow = self.l1_disallow();
        if e & disallow != 0 {
            return Err(self.why(Errno::EINVAL, || {
                format!("Bad L1 flags {:#x}", e & disallow)
            }));
        }
        let t = frame_of(e);
        match self.frames.get(t as usize).map(|s| s.owner) {
            // dom0 has I/O rights over the low 1 MiB (`dom_io`); no reference is taken, and
            // MMIO must not be mapped cacheable (mm.c get_page_from_l1e, `opt_mmio_relax`
            // off): write-back becomes uncached (PWT|PCD flipped on), write-through and
            // write-protect get PCD.
            Some(Owner::Io) if self.privileged && t < LOW_IO_MFNS => {
                return Ok(match e & (PWT | PCD | PSE) {
                    0 => PWT | PCD,
                    x if x == PWT || x == PWT | PSE => PCD | (e & PSE),
                    _ => 0,
                })
            }
            None | Some(Owner::Io) => {
                return Err(self.why(Errno::EPERM, || {
                    format!("d{DOMID} non-privileged attempt to map I/O space mfn {t:#x}")
                }))
            }
            Some(Owner::Domain) => {}
            Some(o) => {
                return Err(self.why(Errno::EBUSY, || {
                    format!(
                    "pg_owner d{DOMID} l1e_owner d{DOMID}, but real_pg_owner {o:?} (mfn {t:#x})"
                )
                }))
            }
        }
        if e & RW != 0 && self.get_type(t, PageType::Writable, false).is_err() {
            return Err(self.why(Errno::EBUSY, || {
                format!("Could not get page type PGT_writable_page for mfn {t:#x}")
            }));
        }
        Ok(0)
    }

    /// `put_page_from_l1e`.
    pub(super) fn put_l1e(&mut self, e: u64) {
        if e & (P | RW) == (P | RW) && self.owned(frame_of(e)) {
            self.put_type(frame_of(e));
        }
    }

    pub(super) fn mod_l1(&mut self, mfn: u32, idx: usize, new: u64) -> R {
        let old = self.pte(mfn, idx);
        let mut new = new;
        if new & P != 0 {
            let disallow = self.l1_disallow();
            if new & disallow != 0 {
                return Err(self.why(Errno::EINVAL, || {
                    format!("Bad L1 flags {:#x}", new & disallow)
                }));
            }
            if (old ^ new) & !FASTPATH_WHITELIST == 0 {
                self.xen_write(mfn, idx, new);
                return Ok(());
            }
            new ^= self.get_l1e(new)?;
        }
        self.xen_write(mfn, idx, new);
        self.put_l1e(old);
        Ok(())
    }

    pub(super) fn mod_l2(&mut self, mfn: u32, idx: usize, new: u64, pae: bool) -> R {
        if pae && idx >= FIRST_XEN_L2_SLOT {
            return Err(self.why(Errno::EPERM, || {
                format!("Illegal L2 update attempt in Xen-private area (slot {idx})")
            }));
        }
        let old = self.pte(mfn, idx);
        if new & P != 0 {
            if new & L2_DISALLOW != 0 {
                return Err(self.why(Errno::EINVAL, || {
                    format!("Bad L2 flags {:#x}", new & L2_DISALLOW)
                }));
            }
            if (old ^ new) & !FASTPATH_WHITELIST == 0 {
                self.xen_write(mfn, idx, new);
                return Ok(());
            }
            self.get_l2e(new, mfn)?;
        }
        self.xen_write(mfn, idx, new);
        self.put_l2e(old, mfn);
        Ok(())
    }

    /// `get_page_from_l2e` (flags checked by the caller): an L1 reference on the frame, or,
    /// where that is refused with EINVAL, a linear page table (`get_l2_linear_pagetable`,
    /// CONFIG_PV_LINEAR_PT=y in the Xen here): a read-only entry naming the L2 itself (no
    /// reference) or another validated L2 of the domain (an L2 type reference), as long as
    /// neither table is on the other side of a linear mapping already.
    pub(super) fn get_l2e(&mut self, e: u64, l2: u32) -> R {
        let t = frame_of(e);
        let rc = if self.owned(t) {
            self.get_type(t, PageType::L1, false)
        } else {
            Err(self.why(Errno::EINVAL, || {
                format!("L2 entry names mfn {t:#x}, not the domain's")
            }))
        };
        match rc {
            Err(Errno::EINVAL) if self.get_l2_linear(e, l2) => {
                self.reason = None;
                Ok(())
            }
            rc => rc,
        }
    }

    fn get_l2_linear(&mut self, e: u64, l2: u32) -> bool {
        let t = frame_of(e);
        if e & RW != 0 {
            return false;
        }
        if t == l2 {
            return true;
        }
        if !self.owned(t)
            || self.frames[l2 as usize].linear < 0
            || self.frames[t as usize].linear > 0
        {
            return false;
        }
        let st = self.frames[t as usize];
        if st.ty != PageType::L2 || !st.validated || st.count == 0 {
            return false;
        }
        self.frames[l2 as usize].linear += 1;
        let f = &mut self.frames[t as usize];
        f.linear -= 1;
        f.count += 1;
        true
    }

    /// `put_page_from_l2e`: nothing for an entry naming the L2 itself; a linear entry's
    /// reference with its linear counts; otherwise the L1 reference.
    pub(super) fn put_l2e(&mut self, e: u64, l2: u32) {
        let t = frame_of(e);
        if e & P == 0 || t == l2 || !self.owned(t) {
            return;
        }
        if self.frames[t as usize].ty == PageType::L2 {
            self.frames[l2 as usize].linear -= 1;
            self.frames[t as usize].linear += 1;
        }
        self.put_type(t);
    }

    pub(super) fn mod_l3(&mut self, mfn: u32, idx: usize, new: u64) -> R {
        if idx >= 3 {
            return Err(self.why(Errno::EINVAL, || {
                format!("L3 slot {idx} of a 32-bit guest's live L3 cannot be updated")
            }));
        }
        let old = self.pte(mfn, idx);
        let mut new = new;
        if new & P != 0 {
            if new & L3_DISALLOW != 0 {
                return Err(self.why(Errno::EINVAL, || {
                    format!("Bad L3 flags {:#x}", new & L3_DISALLOW)
                }));
            }
            let t = frame_of(new);
            if !self.owned(t) {
                return Err(self.why(Errno::EINVAL, || {
                    format!("L3 entry names mfn {t:#x}, not the domain's")
                }));
            }
            self.get_type(t, PageType::L2, false)?;
            new |= RW | US;
        }
        self.xen_write(mfn, idx, new);
        if old & P != 0 && self.owned(frame_of(old)) {
            self.put_type(frame_of(old));
        }
        Ok(())
    }
}

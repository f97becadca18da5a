//! Hypercall decoding: counting, fault injection, `mmu_update`, `mmuext_op`,
//! `update_va_mapping`, `multicall`, and the [`Hypervisor`] implementation.

use super::*;

impl XenModel {
    pub(super) fn enter(&mut self, kind: HcKind, entries: usize) -> Option<i32> {
        let mut c = self.counters.get();
        c.total += 1;
        let n = entries as u64;
        match kind {
            HcKind::MmuUpdate => {
                (c.mmu_update_calls, c.mmu_update_entries) =
                    (c.mmu_update_calls + 1, c.mmu_update_entries + n)
            }
            HcKind::MmuextOp => {
                (c.mmuext_calls, c.mmuext_ops) = (c.mmuext_calls + 1, c.mmuext_ops + n)
            }
            HcKind::UpdateVaMapping => c.update_va_mapping_calls += 1,
            HcKind::Multicall => {
                (c.multicall_calls, c.multicall_entries) =
                    (c.multicall_calls + 1, c.multicall_entries + n)
            }
            HcKind::MachphysMapping => c.machphys_mapping_calls += 1,
        }
        self.counters.set(c);
        self.clock.set(self.clock.get() + 200 + 4 * n);
        if let (Some(ns), HcKind::MmuUpdate | HcKind::MmuextOp | HcKind::Multicall) =
            (self.steal_ns, kind)
        {
            self.stolen_ns.set(self.stolen_ns.get() + ns);
        }
        self.reason = None;
        self.entry_fault = None;
        self.request_fault = None;
        if let Some((k, request, errno)) = self.fail_request_at {
            if k == c.total {
                self.fail_request_at = None;
                if matches!(kind, HcKind::MmuUpdate | HcKind::MmuextOp) {
                    self.request_fault = Some((request, errno));
                }
            }
        }
        if let Some((k, entry, errno)) = self.fail_at {
            if k == c.total {
                self.fail_at = None;
                match entry {
                    None => {
                        self.injected = Some(InjectedFault {
                            seq: k,
                            kind,
                            entry: None,
                            errno,
                        });
                        self.log.push(format!(
                            "model: injected {errno} into hypercall #{k} ({kind:?})"
                        ));
                        return Some(-errno.0);
                    }
                    // Fires inside the multicall (`multicall_entry_result`).
                    Some(j) if kind == HcKind::Multicall => self.entry_fault = Some((j, errno)),
                    Some(_) => {}
                }
            }
        }
        None
    }

    /// Runs entry `i` of the multicall numbered `seq` (`run` returns its result), unless a
    /// failure was injected into it; records a refusal. The entries after a failing one
    /// run all the same, as on Xen (`do_multicall` stores each result and goes on).
    fn multicall_entry_result(
        &mut self,
        seq: u64,
        i: u32,
        op: u32,
        run: impl FnOnce(&mut Self) -> i32,
    ) -> i32 {
        self.reason = None;
        if let Some((j, errno)) = self.entry_fault {
            if j == i {
                self.entry_fault = None;
                self.injected = Some(InjectedFault {
                    seq,
                    kind: HcKind::Multicall,
                    entry: Some(i),
                    errno,
                });
                self.log.push(format!(
                    "model: injected {errno} into entry {i} (op {op}) of multicall #{seq}"
                ));
                return -errno.0;
            }
        }
        let ret = run(self);
        if ret < 0 {
            let reason = format!("entry op {op}: {}", self.reason.take().unwrap_or_default());
            self.failures.push(HvFailure {
                seq,
                kind: HcKind::Multicall,
                index: i,
                errno: Errno(-ret),
                reason,
            });
        }
        ret
    }

    pub(super) fn finish(&mut self, kind: HcKind, index: u32, rc: R) -> i32 {
        match rc {
            Ok(()) => 0,
            Err(errno) => {
                let mut c = self.counters.get();
                c.failed += 1;
                self.counters.set(c);
                let reason = self.reason.take().unwrap_or_default();
                self.failures.push(HvFailure {
                    seq: c.total,
                    kind,
                    index,
                    errno,
                    reason,
                });
                -errno.0
            }
        }
    }

    /// The failure injected at request `i` of this batch, if any (`fail_batch_request`).
    fn injected_request(&mut self, kind: HcKind, i: usize) -> Option<Errno> {
        match self.request_fault {
            Some((j, errno)) if j as usize == i => {
                self.request_fault = None;
                let seq = self.counters.get().total;
                self.injected = Some(InjectedFault {
                    seq,
                    kind,
                    entry: Some(j),
                    errno,
                });
                self.log.push(format!(
                    "model: injected {errno} into request {j} of hypercall #{seq} ({kind:?})"
                ));
                Some(errno)
            }
            _ => None,
        }
    }

    pub(super) fn do_mmu_update(&mut self, reqs: &[MmuUpdate]) -> (u32, R) {
        for (i, r) in reqs.iter().enumerate() {
            if let Some(errno) = self.injected_request(HcKind::MmuUpdate, i) {
                return (i as u32, Err(errno));
            }
            let ma = r.ptr & !7;
            let rc = match r.ptr & 7 {
                0 => self.pt_update(ma, r.val, false),
                MMU_PT_UPDATE_PRESERVE_AD => self.pt_update(ma, r.val, true),
                MMU_MACHPHYS_UPDATE => {
                    let mfn = (ma >> 12) as u32;
                    if self.owned(mfn) {
                        self.m2p[mfn as usize] = r.val as u32;
                        Ok(())
                    } else {
                        Err(self.why(Errno::EINVAL, || {
                            format!("Could not get page for mach->phys update (mfn {mfn:#x})")
                        }))
                    }
                }
                _ => Err(self.why(Errno::ENOSYS, || {
                    format!("Invalid page update command {:#x}", r.ptr & 7)
                })),
            };
            if let Err(e) = rc {
                return (i as u32, Err(e));
            }
        }
        (reqs.len() as u32, Ok(()))
    }

    pub(super) fn pt_update(&mut self, ma: u64, val: u64, preserve_ad: bool) -> R {
        let mfn = (ma >> 12) as u32;
        let idx = ((ma & 0xFFF) >> 3) as usize;
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || {
                format!("Could not get page for normal update (ptr {ma:#x})")
            }));
        }
        let s = self.frames[mfn as usize];
        // PRESERVE_AD keeps the old A/D bits only in a page table (UPDATE_ENTRY); a write
        // into any other frame is a plain write of `val` (paging_write_guest_entry).
        let val = if preserve_ad && s.count > 0 && s.ty.is_table() {
            val | (self.pte(mfn, idx) & (A | D))
        } else {
            val
        };
        if s.count > 0 && s.ty.is_table() {
            self.snap_check(mfn, "a checked update of the table");
            match s.ty {
                PageType::L1 => self.mod_l1(mfn, idx, val),
                PageType::L2 => self.mod_l2(mfn, idx, val, s.pae_xen_l2),
                _ => self.mod_l3(mfn, idx, val),
            }
        } else {
            // Not a page table now: an unchecked write.
            self.xen_write(mfn, idx, val);
            Ok(())
        }
    }

    pub(super) fn do_mmuext(&mut self, ops: &[MmuextOp]) -> (u32, R) {
        for (i, op) in ops.iter().enumerate() {
            if let Some(errno) = self.injected_request(HcKind::MmuextOp, i) {
                return (i as u32, Err(errno));
            }
            let m = op.arg1;
            let rc = match op.cmd {
                mmuext::PIN_L1_TABLE => self.pin(m, PageType::L1),
                mmuext::PIN_L2_TABLE => self.pin(m, PageType::L2),
                mmuext::PIN_L3_TABLE => self.pin(m, PageType::L3),
                MMUEXT_PIN_L4_TABLE => Ok(()),
                mmuext::UNPIN_TABLE => self.unpin(m),
                mmuext::NEW_BASEPTR => self.new_baseptr(m),
                mmuext::TLB_FLUSH_LOCAL | mmuext::INVLPG_LOCAL | 8..=11 => Ok(()),
                c => Err(self.why(Errno::ENOSYS, || {
                    format!("Invalid extended pt command {c:#x}")
                })),
            };
            if let Err(e) = rc {
                return (i as u32, Err(e));
            }
        }
        (ops.len() as u32, Ok(()))
    }

    pub(super) fn pin(&mut self, mfn: u32, ty: PageType) -> R {
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || {
                format!("pin: mfn {mfn:#x} is not the domain's")
            }));
        }
        self.get_type(mfn, ty, false)?;
        if self.frames[mfn as usize].pinned {
            self.put_type(mfn);
            return Err(self.why(Errno::EINVAL, || format!("mfn {mfn:#x} already pinned")));
        }
        self.frames[mfn as usize].pinned = true;
        Ok(())
    }

    pub(super) fn unpin(&mut self, mfn: u32) -> R {
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || format!("mfn {mfn:#x} bad domain")));
        }
        if !self.frames[mfn as usize].pinned {
            return Err(self.why(Errno::EINVAL, || format!("mfn {mfn:#x} not pinned")));
        }
        self.frames[mfn as usize].pinned = false;
        self.put_type(mfn);
        Ok(())
    }

    pub(super) fn new_baseptr(&mut self, mfn: u32) -> R {
        if !self.owned(mfn) {
            return Err(self.why(Errno::EINVAL, || {
                format!("NEW_BASEPTR: mfn {mfn:#x} is not the domain's")
            }));
        }
        self.get_type(mfn, PageType::L3, false)?;
        let old = self.cr3;
        self.cr3 = mfn;
        self.put_type(old);
        Ok(())
    }

    pub(super) fn do_update_va_mapping(&mut self, va: u32, val: u64) -> R {
        let l3e = self.pte(self.cr3, (va >> 30) as usize);
        let l2e = if l3e & P != 0 {
            self.pte(frame_of(l3e), ((va >> 21) & 511) as usize)
        } else {
            0
        };
        let l1 = frame_of(l2e);
        let s = self.state_mfn(MachineFrame::new(l1));
        if l2e & P == 0
            || l2e & PSE != 0
            || s.owner != Owner::Domain
            || s.ty != PageType::L1
            || s.count == 0
        {
            return Err(self.why(Errno::EINVAL, || {
                format!("update_va_mapping {va:#x}: no guest L1 maps it")
            }));
        }
        self.snap_check(l1, "update_va_mapping");
        self.mod_l1(l1, ((va >> 12) & 511) as usize, val)
    }

    pub(super) fn read_guest(&self, va: u32, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        // SAFETY: the model reads its own frames.
        unsafe { self.read_virt(VirtAddr::new(va), &mut buf) }.ok()?;
        Some(buf)
    }

    pub(super) fn write_guest(&mut self, va: u32, data: &[u8]) -> bool {
        // SAFETY: the model writes its own frames.
        unsafe { self.write_virt(VirtAddr::new(va), data) }.is_ok()
    }

    pub(super) fn multicall_entry(&mut self, c: &MulticallEntry) -> i32 {
        let a = c.args;
        let self_dom = |d: u32| d as u16 == DOMID_SELF || d as u16 == DOMID;
        match c.op as usize {
            nr::MMU_UPDATE | nr::MMUEXT_OP => {
                if !self_dom(a[3]) {
                    return -Errno::EPERM.0;
                }
                let is_mmu = c.op as usize == nr::MMU_UPDATE;
                let size = if is_mmu { 16 } else { 12 };
                let Some(raw) = self.read_guest(a[0], a[1] as usize * size) else {
                    return -Errno::EFAULT.0;
                };
                let word = |b: &[u8], o: usize| {
                    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
                };
                let (done, rc) = if is_mmu {
                    let reqs: Vec<MmuUpdate> = raw
                        .chunks(16)
                        .map(|b| MmuUpdate {
                            ptr: word(b, 0) as u64 | (word(b, 4) as u64) << 32,
                            val: word(b, 8) as u64 | (word(b, 12) as u64) << 32,
                        })
                        .collect();
                    self.do_mmu_update(&reqs)
                } else {
                    let ops: Vec<MmuextOp> = raw
                        .chunks(12)
                        .map(|b| MmuextOp {
                            cmd: word(b, 0),
                            arg1: word(b, 4),
                            arg2: word(b, 8),
                        })
                        .collect();
                    self.do_mmuext(&ops)
                };
                if a[2] != 0 && !self.write_guest(a[2], &done.to_le_bytes()) {
                    return -Errno::EFAULT.0;
                }
                rc.err().map_or(0, |e| -e.0)
            }
            nr::UPDATE_VA_MAPPING => self
                .do_update_va_mapping(a[0], a[1] as u64 | (a[2] as u64) << 32)
                .err()
                .map_or(0, |e| -e.0),
            _ => -Errno::ENOSYS.0,
        }
    }
}

impl Hypervisor for XenModel {
    unsafe fn mmu_update(&mut self, reqs: &[MmuUpdate], done: &mut u32) -> i32 {
        if let Some(r) = self.enter(HcKind::MmuUpdate, reqs.len()) {
            *done = 0;
            return r;
        }
        let (n, rc) = self.do_mmu_update(reqs);
        *done = n;
        self.finish(HcKind::MmuUpdate, n, rc)
    }
    unsafe fn mmuext_op(&mut self, ops: &[MmuextOp], done: &mut u32) -> i32 {
        if let Some(r) = self.enter(HcKind::MmuextOp, ops.len()) {
            *done = 0;
            return r;
        }
        let (n, rc) = self.do_mmuext(ops);
        *done = n;
        self.finish(HcKind::MmuextOp, n, rc)
    }
    unsafe fn update_va_mapping(&mut self, va: VirtAddr, val: u64, _flags: u32) -> i32 {
        if let Some(r) = self.enter(HcKind::UpdateVaMapping, 1) {
            return r;
        }
        let rc = self.do_update_va_mapping(va.as_u32(), val);
        self.finish(HcKind::UpdateVaMapping, 0, rc)
    }
    unsafe fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32 {
        if let Some(r) = self.enter(HcKind::Multicall, calls.len()) {
            return r;
        }
        let seq = self.counters.get().total;
        for (i, c) in calls.iter_mut().enumerate() {
            let entry = *c;
            let ret =
                self.multicall_entry_result(seq, i as u32, c.op, |m| m.multicall_entry(&entry));
            c.result = ret as u32;
        }
        0
    }
    /// As the real guest does it: ONE `multicall` of an `mmu_update` entry and an
    /// `mmuext_op` entry; both run whatever the first returns (the trait's default, two
    /// separate hypercalls, skips the second after a failure: not what Xen does).
    unsafe fn mmu_then_mmuext(
        &mut self,
        reqs: &[MmuUpdate],
        done: &mut u32,
        ops: &[MmuextOp],
        ops_done: &mut u32,
    ) -> MixedResult {
        if let Some(r) = self.enter(HcKind::Multicall, 2) {
            return MixedResult {
                mmu_update: r,
                mmuext_op: 0,
                counts_as_multicall: true,
            };
        }
        let seq = self.counters.get().total;
        let mmu_update = self.multicall_entry_result(seq, 0, nr::MMU_UPDATE as u32, |m| {
            let (n, rc) = m.do_mmu_update(reqs);
            *done = n;
            rc.err().map_or(0, |e| -e.0)
        });
        let mmuext_op = self.multicall_entry_result(seq, 1, nr::MMUEXT_OP as u32, |m| {
            let (n, rc) = m.do_mmuext(ops);
            *ops_done = n;
            rc.err().map_or(0, |e| -e.0)
        });
        MixedResult {
            mmu_update,
            mmuext_op,
            counts_as_multicall: true,
        }
    }
    fn machphys_mapping(&mut self, out: &mut MachphysMapping) -> i32 {
        if let Some(r) = self.enter(HcKind::MachphysMapping, 0) {
            return r;
        }
        *out = MachphysMapping {
            v_start: HOLE_START,
            v_end: M2P_END,
            max_mfn: (M2P_END - HOLE_START) / 4 - 1,
        };
        0
    }
    fn p2m(&self, pfn: PhysFrame) -> Option<MachineFrame> {
        self.p2m
            .get(pfn.number() as usize)
            .map(|m| MachineFrame::new(*m))
    }
    fn m2p(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        self.m2p_lookups.set(self.m2p_lookups.get() + 1);
        (mfn.number() < (M2P_END - HOLE_START) / 4).then(|| {
            PhysFrame::new(
                self.m2p
                    .get(mfn.number() as usize)
                    .copied()
                    .unwrap_or(INVALID_M2P),
            )
        })
    }
    fn frame_ptr(&self, pfn: PhysFrame) -> *mut u8 {
        let mfn = *self
            .p2m
            .get(pfn.number() as usize)
            .unwrap_or_else(|| panic!("frame_ptr of pfn {pfn} beyond nr_pages"));
        self.host(mfn)
    }
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        let mut done = 0;
        while done < buf.len() {
            let cur = va.as_u32().wrapping_add(done as u32);
            let m = self.access(VirtAddr::new(cur), false)?;
            let off = (cur & 0xFFF) as usize;
            let n = (FB - off).min(buf.len() - done);
            let mfn = m.mfn.number();
            if (M2P_BACKING_MFN..M2P_BACKING_MFN + 4096).contains(&mfn) {
                // The read-only M2P, synthesised from the model's table.
                for (k, b) in buf[done..done + n].iter_mut().enumerate() {
                    let byte = (mfn - M2P_BACKING_MFN) as usize * FB + off + k;
                    let e = self.m2p.get(byte / 4).copied().unwrap_or(INVALID_M2P);
                    *b = e.to_le_bytes()[byte % 4];
                }
            } else if let Some(src) = self.bytes(mfn) {
                buf[done..done + n].copy_from_slice(&src[off..off + n]);
            } else {
                buf[done..done + n].fill(0);
            }
            done += n;
        }
        Ok(())
    }
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        let mut done = 0;
        while done < data.len() {
            let cur = va.as_u32().wrapping_add(done as u32);
            let m = self.access(VirtAddr::new(cur), true)?;
            let off = (cur & 0xFFF) as usize;
            let n = (FB - off).min(data.len() - done);
            self.write_raw(m.mfn.number(), off, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }
    fn cycles(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }
    fn not_running_ns(&self) -> Option<u64> {
        self.steal_ns.map(|_| self.stolen_ns.get())
    }
}

impl BackendLog for XenModel {
    fn log(&mut self, args: fmt::Arguments<'_>) {
        self.log.push(args.to_string());
    }
}

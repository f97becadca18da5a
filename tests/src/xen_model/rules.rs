//! Every rule of the model as a case provoked through raw hypercalls on any [`Hypervisor`].

use super::*;

/// What a rule case needs: the raw hypercall layer of a booted guest, its frame allocator,
/// its live L3 and two machine frames it does not own. On the model, build it with
/// [`XenBootRun::rule_env`]; on the real Xen, from the booted kernel's state.
pub struct RuleEnv<'a, H: Hypervisor> {
    /// The raw hypercalls.
    pub hv: &'a mut H,
    /// Frames to use (each case frees what it takes, writable and zeroed).
    pub alloc: &'a mut FrameAllocator,
    /// The live L3 (pseudo-physical).
    pub cr3: PhysFrame,
    /// A RAM frame of another domain.
    pub foreign_mfn: MachineFrame,
    /// A frame of the low 1 MiB / MMIO.
    pub io_mfn: MachineFrame,
}

fn ok0(what: &str, ret: i32) -> Result<(), String> {
    if ret == 0 {
        Ok(())
    } else {
        Err(format!("{what} returned {}", errno_name(ret)))
    }
}

fn want(what: &str, ret: i32, expect: i32) -> Result<(), String> {
    if ret == expect {
        Ok(())
    } else {
        Err(format!(
            "{what} returned {} ({ret}), expected {} ({expect})",
            errno_name(ret),
            errno_name(expect)
        ))
    }
}

/// Flags of a kernel read/write data mapping.
pub const KERNEL_RW_FLAGS: u64 = P | RW | A | D;
/// Flags of a kernel read-only mapping.
pub const KERNEL_RO_FLAGS: u64 = P | A | D;

impl<H: Hypervisor> RuleEnv<'_, H> {
    /// `p2m[pfn]`.
    pub fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, String> {
        self.hv.p2m(pfn).ok_or(format!("pfn {pfn} has no mfn"))
    }
    /// Entry `i` of table `t`, read through the direct map.
    pub fn entry(&self, t: PhysFrame, i: usize) -> u64 {
        // SAFETY: `t` is a direct-mapped frame of the guest; i < 512.
        unsafe {
            (self.hv.frame_ptr(t) as *const u64)
                .add(i % 512)
                .read_volatile()
        }
    }
    /// Writes entry `i` of `t` directly (only for writable, untyped frames).
    pub fn poke(&mut self, t: PhysFrame, i: usize, v: u64) {
        // SAFETY: as `entry`; the caller owns the frame and it is mapped writable.
        unsafe {
            (self.hv.frame_ptr(t) as *mut u64)
                .add(i % 512)
                .write_volatile(v)
        }
    }
    /// The guest frame an entry names (M2P cross-checked against the p2m).
    pub fn table_of(&self, e: u64) -> Result<PhysFrame, String> {
        let m = MachineFrame(frame_of(e));
        let p = self.hv.m2p(m).ok_or(format!("mfn {m} beyond the M2P"))?;
        (self.hv.p2m(p) == Some(m))
            .then_some(p)
            .ok_or(format!("mfn {m} is not the guest's"))
    }
    /// The live slot-3 L2.
    pub fn live_l2(&self) -> Result<PhysFrame, String> {
        self.table_of(self.entry(self.cr3, 3))
    }
    /// Machine address of the live L1 entry mapping `pfn` in the direct map.
    pub fn pte_ma(&self, pfn: PhysFrame) -> Result<u64, String> {
        let va = VirtAddr(VIRT_BASE + pfn.0 * PAGE_SIZE as u32);
        let l2 = self.table_of(self.entry(self.cr3, va.l3_index()))?;
        let l2e = self.entry(l2, va.l2_index());
        if l2e & P == 0 {
            return Err(format!("{va} has no L1"));
        }
        let l1 = self.table_of(l2e)?;
        Ok(self.mfn(l1)?.start().0 + va.l1_index() as u64 * 8)
    }
    /// A fresh, zeroed, writable frame.
    pub fn fresh(&mut self) -> Result<PhysFrame, String> {
        let f = self.alloc.alloc().map_err(|e| e.to_string())?;
        // SAFETY: a free direct-mapped frame the case now owns.
        unsafe { core::ptr::write_bytes(self.hv.frame_ptr(f), 0, FB) };
        Ok(f)
    }
    /// Maps `pfn` writable again, zeroes it and gives it back.
    pub fn give_back(&mut self, pfn: PhysFrame) -> Result<(), String> {
        let r = self.map(pfn, true);
        ok0("making the frame writable again", r)?;
        // SAFETY: the frame is ours and writable again.
        unsafe { core::ptr::write_bytes(self.hv.frame_ptr(pfn), 0, FB) };
        self.alloc.free(pfn).map_err(|e| e.to_string())
    }
    /// Remaps `pfn` in the direct map read-only or writable (one raw `mmu_update`).
    pub fn map(&mut self, pfn: PhysFrame, writable: bool) -> i32 {
        let (Ok(ma), Ok(m)) = (self.pte_ma(pfn), self.mfn(pfn)) else {
            return -Errno::EFAULT.0;
        };
        let flags = if writable {
            KERNEL_RW_FLAGS
        } else {
            KERNEL_RO_FLAGS
        };
        self.mmu1(ma, m.start().0 | flags)
    }
    /// One `mmu_update` request.
    pub fn mmu1(&mut self, ptr: u64, val: u64) -> i32 {
        let mut done = 0;
        self.hv.mmu_update(&[MmuUpdate { ptr, val }], &mut done)
    }
    /// One `mmuext_op`.
    pub fn ext1(&mut self, cmd: u32, arg1: u32) -> i32 {
        let mut done = 0;
        self.hv
            .mmuext_op(&[MmuextOp { cmd, arg1, arg2: 0 }], &mut done)
    }
    /// A fresh frame made read-only (ready to become a table).
    pub fn fresh_ro(&mut self) -> Result<PhysFrame, String> {
        let f = self.fresh()?;
        let r = self.map(f, false);
        ok0("making a fresh frame read-only", r)?;
        Ok(f)
    }
    /// The highest guest slot (< 428) of the live L2 that is empty.
    pub fn free_l2_slot(&self) -> Result<usize, String> {
        let l2 = self.live_l2()?;
        (0..FIRST_XEN_L2_SLOT)
            .rev()
            .find(|i| self.entry(l2, *i) & P == 0)
            .ok_or("no free L2 slot".into())
    }
}

/// One rule, provoked through raw hypercalls.
pub struct RuleCase<H: Hypervisor> {
    /// Short name.
    pub name: &'static str,
    /// The rule.
    pub rule: &'static str,
    /// What the provoking call must return: 0 or a negated errno.
    pub expect: i32,
    /// Sets up, provokes (returning the provoking call's raw result), checks controls and
    /// cleans up. `Err` when a setup, control or cleanup step misbehaves.
    pub run: fn(&mut RuleEnv<'_, H>) -> Result<i32, String>,
}

impl<H: Hypervisor> RuleCase<H> {
    /// Runs the case and compares with `expect`.
    pub fn check(&self, env: &mut RuleEnv<'_, H>) -> Result<(), String> {
        let ret = (self.run)(env).map_err(|e| format!("{}: {e}", self.name))?;
        want(self.name, ret, self.expect)
    }
}

fn c_writable_pt<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    ok0(
        "PIN_L1_TABLE of an empty read-only frame",
        env.ext1(mmuext::PIN_L1_TABLE, m),
    )?;
    let ret = env.map(f, true);
    let ro = env.map(f, false);
    ok0("control: a read-only mapping of the pinned L1", ro)?;
    ok0("UNPIN_TABLE", env.ext1(mmuext::UNPIN_TABLE, m))?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_unpin_unpinned<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::UNPIN_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_pinned<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    ok0("first PIN_L1_TABLE", env.ext1(mmuext::PIN_L1_TABLE, m))?;
    let ret = env.ext1(mmuext::PIN_L1_TABLE, m);
    ok0(
        "UNPIN_TABLE (pinned exactly once)",
        env.ext1(mmuext::UNPIN_TABLE, m),
    )?;
    want(
        "second UNPIN_TABLE",
        env.ext1(mmuext::UNPIN_TABLE, m),
        -Errno::EINVAL.0,
    )?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_writable_l1<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L1_TABLE, m);
    ok0("control: making it read-only", env.map(f, false))?;
    ok0(
        "control: PIN_L1_TABLE once read-only",
        env.ext1(mmuext::PIN_L1_TABLE, m),
    )?;
    ok0("UNPIN_TABLE", env.ext1(mmuext::UNPIN_TABLE, m))?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_l3_slot3_absent<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_baseptr_slot3_absent<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::NEW_BASEPTR, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_l3_slot3_shared<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let l2 = env.live_l2()?;
    let l2m = env.mfn(l2)?;
    let f = env.fresh()?;
    env.poke(f, 3, l2m.start().0 | P);
    ok0("making the new L3 read-only", env.map(f, false))?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_new_baseptr_unpinned<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let live = env.cr3;
    let live_m = env.mfn(live)?.0;
    let old_l2 = env.live_l2()?;
    let (l3, l2) = (env.fresh()?, env.fresh()?);
    for i in 0..FIRST_XEN_L2_SLOT {
        let e = env.entry(old_l2, i);
        env.poke(l2, i, e);
    }
    for i in 0..3 {
        let e = env.entry(live, i);
        env.poke(l3, i, e & !(RW | US));
    }
    let l2m = env.mfn(l2)?;
    env.poke(l3, 3, l2m.start().0 | P);
    ok0("making the copy's L2 read-only", env.map(l2, false))?;
    ok0("making the copy's L3 read-only", env.map(l3, false))?;
    let ret = env.ext1(mmuext::NEW_BASEPTR, env.mfn(l3)?.0);
    ok0(
        "NEW_BASEPTR back to the kernel's table",
        env.ext1(mmuext::NEW_BASEPTR, live_m),
    )?;
    env.give_back(l3)?;
    env.give_back(l2)?;
    Ok(ret)
}

fn c_live_l3_slot3<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let ma = env.mfn(env.cr3)?.start().0 + 3 * 8;
    let cur = env.entry(env.cr3, 3);
    Ok(env.mmu1(ma, cur & !(RW | US)))
}

fn c_xen_private_l2<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let l2 = env.live_l2()?;
    let base = env.mfn(l2)?.start().0;
    let cur = env.entry(l2, FIRST_XEN_L2_SLOT);
    let ret = env.mmu1(base + FIRST_XEN_L2_SLOT as u64 * 8, cur);
    let free = env.free_l2_slot()?;
    ok0(
        "control: rewriting an empty guest slot of the same L2",
        env.mmu1(base + free as u64 * 8, 0),
    )?;
    Ok(ret)
}

fn c_l1_foreign<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let ma = env.pte_ma(f)?;
    let ret = env.mmu1(ma, env.foreign_mfn.start().0 | KERNEL_RO_FLAGS);
    env.give_back(f)?;
    Ok(ret)
}

fn c_l1_io<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let ma = env.pte_ma(f)?;
    let ret = env.mmu1(ma, env.io_mfn.start().0 | KERNEL_RW_FLAGS);
    env.give_back(f)?;
    Ok(ret)
}

fn c_unchecked_write<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    // A value an L1 would refuse (another domain's frame, writable): untyped, so unchecked.
    let val = env.foreign_mfn.start().0 | KERNEL_RW_FLAGS;
    let ret = env.mmu1(env.mfn(f)?.start().0 + 5 * 8, val);
    if ret == 0 && env.entry(f, 5) != val {
        return Err(format!(
            "the write did not land: entry 5 = {:#x}",
            env.entry(f, 5)
        ));
    }
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_l4<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(MMUEXT_PIN_L4_TABLE, m);
    want(
        "control: UNPIN after PIN_L4 (nothing was pinned)",
        env.ext1(mmuext::UNPIN_TABLE, m),
        -Errno::EINVAL.0,
    )?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_slot3_l2<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let l2 = env.live_l2()?;
    Ok(env.ext1(mmuext::PIN_L2_TABLE, env.mfn(l2)?.0))
}

fn c_l3_pcd<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    // Live L3 slot 0 (user space: empty in the kernel) is replaced by a fresh L2 and restored.
    let old = env.entry(env.cr3, 0);
    if old & P != 0 {
        let l2 = env.table_of(old)?;
        if (0..512).any(|i| env.entry(l2, i) & P != 0) {
            return Err("live L3 slot 0 maps something".into());
        }
    }
    let l2 = env.fresh_ro()?;
    let ma = env.mfn(env.cr3)?.start().0;
    let l2m = env.mfn(l2)?.start().0;
    let ret = env.mmu1(ma, l2m | P | PCD);
    ok0(
        "control: the same L3 entry with Present only",
        env.mmu1(ma, l2m | P),
    )?;
    ok0("restoring live L3 slot 0", env.mmu1(ma, old & !(RW | US)))?;
    env.give_back(l2)?;
    Ok(ret)
}

fn c_l2_pse<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let slot = env.free_l2_slot()?;
    let l2 = env.live_l2()?;
    let ma = env.mfn(l2)?.start().0 + slot as u64 * 8;
    let l1 = env.fresh_ro()?;
    let l1m = env.mfn(l1)?.start().0;
    let ret = env.mmu1(ma, l1m | KERNEL_RW_FLAGS | PSE);
    ok0(
        "control: the same L2 entry without PSE",
        env.mmu1(ma, l1m | KERNEL_RW_FLAGS),
    )?;
    ok0("clearing the L2 entry", env.mmu1(ma, 0))?;
    env.give_back(l1)?;
    Ok(ret)
}

fn c_uvm_pt_writable<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let va = VirtAddr(VIRT_BASE + env.cr3.0 * PAGE_SIZE as u32);
    let m = env.mfn(env.cr3)?.start().0;
    let ret = env
        .hv
        .update_va_mapping(va, m | KERNEL_RW_FLAGS, UVMF_INVLPG);
    ok0(
        "control: the same mapping read-only",
        env.hv
            .update_va_mapping(va, m | KERNEL_RO_FLAGS, UVMF_INVLPG),
    )?;
    Ok(ret)
}

fn c_multicall_uvm<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let va = VIRT_BASE + env.cr3.0 * PAGE_SIZE as u32;
    let m = env.mfn(env.cr3)?.start().0;
    let uvm = |val: u64| MulticallEntry {
        op: nr::UPDATE_VA_MAPPING as u32,
        result: 0x5A5A,
        args: [va, val as u32, (val >> 32) as u32, UVMF_INVLPG, 0, 0],
    };
    let mut calls = [uvm(m | KERNEL_RO_FLAGS), uvm(m | KERNEL_RW_FLAGS)];
    ok0("multicall itself", env.hv.multicall(&mut calls))?;
    ok0(
        "control: the first entry (read-only)",
        calls[0].result as i32,
    )?;
    Ok(calls[1].result as i32)
}

fn c_multicall_mmu_update<H: Hypervisor>(env: &mut RuleEnv<'_, H>) -> Result<i32, String> {
    let buf = env.fresh()?;
    let buf_va = VIRT_BASE + buf.0 * PAGE_SIZE as u32;
    let (ok_ma, bad_ma) = (env.pte_ma(buf)?, env.pte_ma(env.cr3)?);
    let (bm, rm) = (env.mfn(buf)?.start().0, env.mfn(env.cr3)?.start().0);
    // Two requests in guest memory: rewrite the buffer's own mapping (fine), then map the
    // live L3 writable (refused); `done` goes at offset 64.
    env.poke(buf, 0, ok_ma);
    env.poke(buf, 1, bm | KERNEL_RW_FLAGS);
    env.poke(buf, 2, bad_ma);
    env.poke(buf, 3, rm | KERNEL_RW_FLAGS);
    env.poke(buf, 8, 0xFFFF_FFFF);
    let mut calls = [MulticallEntry {
        op: nr::MMU_UPDATE as u32,
        result: 0x5A5A,
        args: [buf_va, 2, buf_va + 64, DOMID_SELF as u32, 0, 0],
    }];
    ok0("multicall itself", env.hv.multicall(&mut calls))?;
    let done = env.entry(buf, 8) as u32;
    if done != 1 {
        return Err(format!(
            "done = {done}, expected 1 (the first request succeeded)"
        ));
    }
    env.give_back(buf)?;
    Ok(calls[0].result as i32)
}

/// Every rule of the model as a case runnable on any [`Hypervisor`] (the model or the
/// real Xen), with the result Xen 4.17.5 gives.
pub fn rule_cases<H: Hypervisor>() -> Vec<RuleCase<H>> {
    let (einval, ebusy, eperm) = (-Errno::EINVAL.0, -Errno::EBUSY.0, -Errno::EPERM.0);
    vec![
        RuleCase {
            name: "writable_map_of_pagetable",
            rule: "a present writable L1e naming a page-table frame (a pinned L1)",
            expect: ebusy,
            run: c_writable_pt,
        },
        RuleCase {
            name: "unpin_unpinned",
            rule: "MMUEXT_UNPIN_TABLE of a frame that is not pinned",
            expect: einval,
            run: c_unpin_unpinned,
        },
        RuleCase {
            name: "pin_pinned",
            rule: "MMUEXT_PIN_L1_TABLE of a frame pinned already",
            expect: einval,
            run: c_pin_pinned,
        },
        RuleCase {
            name: "pin_l1_mapped_writable",
            rule: "MMUEXT_PIN_L1_TABLE of a frame still mapped writable (type conflict)",
            expect: einval,
            run: c_pin_writable_l1,
        },
        RuleCase {
            name: "l3_slot3_absent",
            rule: "MMUEXT_PIN_L3_TABLE of an L3 whose slot 3 is empty",
            expect: einval,
            run: c_l3_slot3_absent,
        },
        RuleCase {
            name: "new_baseptr_validates",
            rule: "MMUEXT_NEW_BASEPTR validates on the spot: an L3 without slot 3",
            expect: einval,
            run: c_baseptr_slot3_absent,
        },
        RuleCase {
            name: "l3_slot3_l2_shared",
            rule: "an L3 whose slot-3 L2 is the live L3's (shared)",
            expect: einval,
            run: c_l3_slot3_shared,
        },
        RuleCase {
            name: "new_baseptr_needs_no_pin",
            rule: "MMUEXT_NEW_BASEPTR of an unpinned copy of the kernel table, then back",
            expect: 0,
            run: c_new_baseptr_unpinned,
        },
        RuleCase {
            name: "live_l3_slot3_update",
            rule: "mmu_update of slot 3 of the live L3 (same value)",
            expect: einval,
            run: c_live_l3_slot3,
        },
        RuleCase {
            name: "xen_private_l2_slot",
            rule: "mmu_update of slot 428 of the slot-3 L2 (Xen-private, same value)",
            expect: eperm,
            run: c_xen_private_l2,
        },
        RuleCase {
            name: "l1_foreign_ram",
            rule: "an L1e naming another domain's RAM (read-only)",
            expect: ebusy,
            run: c_l1_foreign,
        },
        RuleCase {
            name: "l1_io_frame",
            rule: "an L1e naming a low-1-MiB (dom_io) frame without I/O rights",
            expect: eperm,
            run: c_l1_io,
        },
        RuleCase {
            name: "unchecked_write_untyped",
            rule: "mmu_update into a frame with no page-table type is an unchecked write",
            expect: 0,
            run: c_unchecked_write,
        },
        RuleCase {
            name: "pin_l4_noop",
            rule: "MMUEXT_PIN_L4_TABLE on a 32-bit guest does nothing and returns 0",
            expect: 0,
            run: c_pin_l4,
        },
        RuleCase {
            name: "pin_slot3_l2",
            rule: "MMUEXT_PIN_L2_TABLE of the live slot-3 (pae_xen_l2) L2",
            expect: einval,
            run: c_pin_slot3_l2,
        },
        RuleCase {
            name: "l3_entry_pcd",
            rule: "an L3e with PCD (live L3 slot 0, then restored)",
            expect: einval,
            run: c_l3_pcd,
        },
        RuleCase {
            name: "l2_entry_pse",
            rule: "an L2e with PSE (no superpages)",
            expect: einval,
            run: c_l2_pse,
        },
        RuleCase {
            name: "update_va_mapping_pt_writable",
            rule: "update_va_mapping mapping the live L3 writable",
            expect: ebusy,
            run: c_uvm_pt_writable,
        },
        RuleCase {
            name: "multicall_update_va_mapping",
            rule: "multicall: each entry's result, the call returns 0",
            expect: ebusy,
            run: c_multicall_uvm,
        },
        RuleCase {
            name: "multicall_mmu_update",
            rule: "multicall of an mmu_update from guest memory: result and done",
            expect: ebusy,
            run: c_multicall_mmu_update,
        },
    ]
}

//! The cases: one of Xen's rules each, in the order they run, with Xen 4.17.5's answers.

use super::*;

fn c_writable_map_of_pagetable<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.number();
    ok0(
        "PIN_L1_TABLE of an empty read-only frame",
        env.ext1(mmuext::PIN_L1_TABLE, m),
    )?;
    let ret = env.map(f, true)?;
    ok0(
        "control: a read-only mapping of the pinned L1",
        env.map(f, false)?,
    )?;
    ok0("UNPIN_TABLE", env.ext1(mmuext::UNPIN_TABLE, m))?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_unpin_unpinned<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.number();
    let ret = env.ext1(mmuext::UNPIN_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_pinned<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.number();
    ok0("first PIN_L1_TABLE", env.ext1(mmuext::PIN_L1_TABLE, m))?;
    let ret = env.ext1(mmuext::PIN_L1_TABLE, m);
    ok0(
        "UNPIN_TABLE (pinned exactly once)",
        env.ext1(mmuext::UNPIN_TABLE, m),
    )?;
    want(
        "control: a second UNPIN_TABLE",
        env.ext1(mmuext::UNPIN_TABLE, m),
        Errno::EINVAL,
    )?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_l1_mapped_writable<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh()?;
    let m = env.mfn(f)?.number();
    let ret = env.ext1(mmuext::PIN_L1_TABLE, m);
    if ret == 0 {
        ok0(
            "UNPIN_TABLE of the wrongly pinned L1",
            env.ext1(mmuext::UNPIN_TABLE, m),
        )?;
    }
    ok0("control: making it read-only", env.map(f, false)?)?;
    ok0(
        "control: PIN_L1_TABLE once read-only",
        env.ext1(mmuext::PIN_L1_TABLE, m),
    )?;
    ok0("UNPIN_TABLE", env.ext1(mmuext::UNPIN_TABLE, m))?;
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_l3_slot3_absent<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.number();
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_l3_slot3_shared<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let l2m = env.mfn(env.live_l2()?)?;
    let f = env.fresh()?;
    env.poke(f, 3, l2m.start().as_u64() | P)?;
    let ro = env.map(f, false)?;
    ok0("making the new L3 read-only", ro)?;
    let m = env.mfn(f)?.number();
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_new_baseptr_slot3_absent<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // NEW_BASEPTR validates on the spot (no pin needed): an L3 without slot 3 fails and
    // the live table stays.
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.number();
    let ret = env.ext1(mmuext::NEW_BASEPTR, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_live_l3_slot3_update<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // The same value: a wrong success would change nothing.
    let ma = env.mfn(env.cr3)?.start().as_u64() + 3 * 8;
    let cur = env.entry(env.cr3, 3)?;
    Ok(env.mmu1(ma, cur & !(RW | US)))
}

fn c_xen_private_l2_slot<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let l2 = env.live_l2()?;
    let base = env.mfn(l2)?.start().as_u64();
    let slot = env.first_xen_slot();
    let cur = env.entry(l2, slot)?;
    let ret = env.mmu1(base + slot as u64 * 8, cur);
    let free = env.free_l2_slot()?;
    ok0(
        "control: rewriting an empty guest slot of the same L2",
        env.mmu1(base + free as u64 * 8, 0),
    )?;
    Ok(ret)
}

fn c_pin_slot3_l2<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let m = env.mfn(env.live_l2()?)?.number();
    let ret = env.ext1(mmuext::PIN_L2_TABLE, m);
    if ret == 0 {
        ok0(
            "UNPIN_TABLE of the wrongly pinned L2",
            env.ext1(mmuext::UNPIN_TABLE, m),
        )?;
    }
    Ok(ret)
}

fn c_l3_entry_pcd<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // Live L3 slot 0 (user space: its L2 maps nothing) gets a fresh L2, then is restored.
    let old = env.entry(env.cr3, 0)?;
    if old & P != 0 {
        let l2 = env.table_of(old)?;
        for i in 0..512 {
            if env.entry(l2, i)? & P != 0 {
                return Err(Verdict::broken(
                    "live L3 slot 0 maps nothing",
                    format_args!("its L2 entry {i} is present"),
                ));
            }
        }
    }
    let l2 = env.fresh_ro()?;
    let ma = env.mfn(env.cr3)?.start().as_u64();
    let l2m = env.mfn(l2)?.start().as_u64();
    let ret = env.mmu1(ma, l2m | P | PCD);
    ok0(
        "control: the same L3 entry with Present only",
        env.mmu1(ma, l2m | P),
    )?;
    ok0("restoring live L3 slot 0", env.mmu1(ma, old & !(RW | US)))?;
    ok0("TLB_FLUSH_LOCAL", env.ext1(mmuext::TLB_FLUSH_LOCAL, 0))?;
    env.give_back(l2)?;
    Ok(ret)
}

fn c_l2_entry_pse<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let slot = env.free_l2_slot()?;
    let ma = env.mfn(env.live_l2()?)?.start().as_u64() + slot as u64 * 8;
    let l1 = env.fresh_ro()?;
    let l1m = env.mfn(l1)?.start().as_u64();
    let ret = env.mmu1(ma, l1m | RW_FLAGS | PSE);
    ok0(
        "control: the same L2 entry without PSE",
        env.mmu1(ma, l1m | RW_FLAGS),
    )?;
    ok0("clearing the L2 entry", env.mmu1(ma, 0))?;
    ok0("TLB_FLUSH_LOCAL", env.ext1(mmuext::TLB_FLUSH_LOCAL, 0))?;
    env.give_back(l1)?;
    Ok(ret)
}

/// Points the direct-map entry of a fresh frame at `target` (read-only), then restores it.
fn l1_entry_to<H: Hypervisor>(env: &mut Env<'_, H>, target: MachineFrame) -> Result<i32, Verdict> {
    let f = env.fresh()?;
    let ma = env.pte_ma(f)?;
    let ret = env.mmu1(ma, target.start().as_u64() | RO_FLAGS);
    if ret == 0 {
        ok0(
            "INVLPG_LOCAL",
            env.ext1(mmuext::INVLPG_LOCAL, direct_va(f).as_u32()),
        )?;
    }
    env.give_back(f)?;
    Ok(ret)
}

fn c_l1_xen_frame<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let (xen, _) = env.xen_frame()?;
    l1_entry_to(env, xen)
}

fn c_l1_mmio_denied<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    l1_entry_to(env, LAPIC_MFN)
}

fn c_l1_low_io_frame<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    l1_entry_to(env, LOW_IO_MFN)
}

fn c_uvm_pt_writable<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let va = direct_va(env.cr3);
    let m = env.mfn(env.cr3)?.start().as_u64();
    let ret = env.uvm(va, m | RW_FLAGS);
    ok0(
        "control: the same mapping read-only",
        env.uvm(va, m | RO_FLAGS),
    )?;
    Ok(ret)
}

fn c_uvm_no_l1<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // 4 MiB: user space, no L1 table in the kernel's table.
    let va = VirtAddr::new(0x0040_0000);
    if env.live_l1(va).is_ok() {
        return Err(Verdict::broken(
            "the address has no mapping",
            format_args!("{va} is mapped"),
        ));
    }
    let m = env.mfn(env.cr3)?.start().as_u64();
    Ok(env.uvm(va, m | RO_FLAGS))
}

fn c_multicall_uvm<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let va = direct_va(env.cr3).as_u32();
    let m = env.mfn(env.cr3)?.start().as_u64();
    let uvm = |val: u64| MulticallEntry {
        op: nr::UPDATE_VA_MAPPING as u32,
        result: 0x5A5A,
        args: [va, val as u32, (val >> 32) as u32, UVMF_INVLPG, 0, 0],
    };
    let mut calls = [uvm(m | RO_FLAGS), uvm(m | RW_FLAGS)];
    ok0("multicall itself", env.multicall(&mut calls))?;
    ok0(
        "control: the first entry (read-only)",
        calls[0].result as i32,
    )?;
    Ok(calls[1].result as i32)
}

fn c_multicall_mmu_update<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let buf = env.fresh()?;
    let buf_va = direct_va(buf).as_u32();
    let (ok_ma, bad_ma) = (env.pte_ma(buf)?, env.pte_ma(env.cr3)?);
    let (bm, rm) = (
        env.mfn(buf)?.start().as_u64(),
        env.mfn(env.cr3)?.start().as_u64(),
    );
    // Two requests in guest memory: rewrite the buffer's own mapping (unchanged), then map
    // the live L3 writable (refused); `done` goes at byte 64.
    env.poke(buf, 0, ok_ma)?;
    env.poke(buf, 1, bm | RW_FLAGS)?;
    env.poke(buf, 2, bad_ma)?;
    env.poke(buf, 3, rm | RW_FLAGS)?;
    env.poke(buf, 8, 0xFFFF_FFFF)?;
    let mut calls = [MulticallEntry {
        op: nr::MMU_UPDATE as u32,
        result: 0x5A5A,
        args: [buf_va, 2, buf_va + 64, DOMID_SELF as u32, 0, 0],
    }];
    ok0("multicall itself", env.multicall(&mut calls))?;
    let done = env.entry(buf, 8)? as u32;
    if done != 1 {
        return Err(Verdict::broken(
            "control: done counts the first request",
            format_args!("done = {done}, expected 1"),
        ));
    }
    env.give_back(buf)?;
    Ok(calls[0].result as i32)
}

fn c_mmu_update_in_xen_frame<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // The first 8 bytes of the M2P (m2p[0], m2p[1]) rewritten with what they hold: a wrong
    // success would change nothing.
    let (xen, superpage) = env.xen_frame()?;
    if !superpage {
        return Err(Verdict::Skipped(
            "Xen maps the M2P through an L1 here: its first frame's content is unknown",
        ));
    }
    let hv = &*env.hv;
    let word = |m| {
        hv.m2p(MachineFrame::new(m))
            .map_or(u32::MAX, |p| p.number()) as u64
    };
    let val = word(0) | word(1) << 32;
    Ok(env.mmu1(xen.start().as_u64(), val))
}

fn c_unpin_xen_frame<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let (xen, _) = env.xen_frame()?;
    Ok(env.ext1(mmuext::UNPIN_TABLE, xen.number()))
}

fn c_mmu_update_bad_subcommand<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh()?;
    let ptr = env.mfn(f)?.start().as_u64() | UNKNOWN_MMU_SUBCMD;
    let ret = env.mmu1(ptr, 0);
    env.give_back(f)?;
    Ok(ret)
}

fn c_mmuext_unknown_command<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    Ok(env.ext1(UNKNOWN_MMUEXT_CMD, 0))
}

/// Xen's rules as misuse cases, in the order they run, with Xen 4.17.5's answers.
pub fn cases<H: Hypervisor>() -> [XenCase<H>; 23] {
    use Expect::{Accepted, Refused};
    let (einval, ebusy, eperm, enosys) = (
        Refused(Errno::EINVAL),
        Refused(Errno::EBUSY),
        Refused(Errno::EPERM),
        Refused(Errno::ENOSYS),
    );
    let both = |name, rule, e: Expect, run| XenCase {
        name,
        rule,
        domu: e,
        dom0: e,
        run,
    };
    [
        both(
            "writable_map_of_pagetable",
            "a writable L1 entry naming a page-table frame (a pinned L1)",
            ebusy,
            c_writable_map_of_pagetable,
        ),
        both(
            "unpin_unpinned",
            "MMUEXT_UNPIN_TABLE of a frame that is not pinned",
            einval,
            c_unpin_unpinned,
        ),
        both(
            "pin_pinned",
            "MMUEXT_PIN_L1_TABLE of a frame pinned already",
            einval,
            c_pin_pinned,
        ),
        both(
            "pin_l1_mapped_writable",
            "MMUEXT_PIN_L1_TABLE of a frame still mapped writable (type conflict)",
            einval,
            c_pin_l1_mapped_writable,
        ),
        both(
            "pin_l3_slot3_absent",
            "MMUEXT_PIN_L3_TABLE of an L3 whose slot 3 is empty",
            einval,
            c_pin_l3_slot3_absent,
        ),
        both(
            "pin_l3_slot3_l2_shared",
            "MMUEXT_PIN_L3_TABLE of an L3 whose slot-3 L2 is the live L3's",
            einval,
            c_pin_l3_slot3_shared,
        ),
        both(
            "new_baseptr_slot3_absent",
            "MMUEXT_NEW_BASEPTR validates on the spot: an L3 without slot 3",
            einval,
            c_new_baseptr_slot3_absent,
        ),
        both(
            "live_l3_slot3_update",
            "mmu_update of slot 3 of the live L3 (same value)",
            einval,
            c_live_l3_slot3_update,
        ),
        both(
            "xen_private_l2_slot",
            "mmu_update of the first Xen-private slot (the hole's) of the slot-3 L2",
            eperm,
            c_xen_private_l2_slot,
        ),
        both(
            "pin_slot3_l2",
            "MMUEXT_PIN_L2_TABLE of the live slot-3 (pae_xen_l2) L2",
            einval,
            c_pin_slot3_l2,
        ),
        both(
            "l3_entry_pcd",
            "an L3 entry with PCD (live L3 slot 0, then restored)",
            einval,
            c_l3_entry_pcd,
        ),
        both(
            "l2_entry_pse",
            "an L2 entry with PSE (no superpages for a PV guest)",
            einval,
            c_l2_entry_pse,
        ),
        both(
            "l1_xen_frame",
            "an L1 entry naming a frame Xen owns (the M2P), read-only",
            ebusy,
            c_l1_xen_frame,
        ),
        both(
            "l1_mmio_denied",
            "an L1 entry naming the local APIC page (MMIO denied even to dom0)",
            eperm,
            c_l1_mmio_denied,
        ),
        XenCase {
            name: "l1_low_io_frame",
            rule: "an L1 entry naming a low-1-MiB (dom_io) frame: needs I/O rights",
            domu: eperm,
            dom0: Accepted,
            run: c_l1_low_io_frame,
        },
        both(
            "update_va_mapping_pt_writable",
            "update_va_mapping mapping the live L3 writable",
            ebusy,
            c_uvm_pt_writable,
        ),
        both(
            "update_va_mapping_no_l1",
            "update_va_mapping of an address no guest L1 maps",
            einval,
            c_uvm_no_l1,
        ),
        both(
            "multicall_update_va_mapping",
            "multicall: the live L3 mapped writable in the second entry",
            ebusy,
            c_multicall_uvm,
        ),
        both(
            "multicall_mmu_update",
            "multicall of an mmu_update batch from guest memory: the second request",
            ebusy,
            c_multicall_mmu_update,
        ),
        both(
            "mmu_update_in_xen_frame",
            "mmu_update whose ptr lies in a frame Xen owns (the M2P, same value)",
            einval,
            c_mmu_update_in_xen_frame,
        ),
        both(
            "unpin_xen_frame",
            "MMUEXT_UNPIN_TABLE of a frame Xen owns",
            einval,
            c_unpin_xen_frame,
        ),
        both(
            "mmu_update_bad_subcommand",
            "mmu_update with an unknown sub-command (ptr & 7 = 7)",
            enosys,
            c_mmu_update_bad_subcommand,
        ),
        both(
            "mmuext_unknown_command",
            "mmuext_op with an unknown command",
            enosys,
            c_mmuext_unknown_command,
        ),
    ]
}

//! pvops-xen-conformance: Xen's own refusals, provoked through the raw hypercall layer.
//!
//! Each case takes fresh frames from the boot path's allocator, sets up its precondition with
//! raw hypercalls, issues ONE provoking call, checks a control where it proves something
//! (the same operation without the fault succeeds), and undoes everything: frames go back
//! writable and zeroed, pins are dropped, live entries it touched are restored. Nothing that
//! maps the kernel is ever written: only fresh frames, the empty user slot 0 of the live L3,
//! empty slots of the live slot-3 L2 (the scratch area) and the direct-map entries of the
//! case's own frames.
//!
//! The cases never go through `XenMmu`'s checked methods (no check of ours answers first):
//! they run on any [`Hypervisor`]. ONE list ([`cases`]) serves guest-demo's `misuse` stage on
//! the real Xen (through `RealXen`) and the host tests on the model of Xen's rules
//! (`tests/tests/misuse_model.rs`, `tests/tests/xen_model.rs`), which must give the errno
//! real Xen 4.17.5 gives. The expected errno is given per mode: dom0 is privileged (it may
//! map the low 1 MiB).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

use backend_xen::abi::{
    mmuext, nr, Errno, MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry, StartInfo, DOMID_SELF,
    SIF_INITDOMAIN, START_INFO_MAGIC, UVMF_INVLPG, VIRT_BASE,
};
use backend_xen::Hypervisor;
use core::fmt;
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::mem::FrameAllocator;
use pvops_core::paging::{PteFlags, ADDRESS_MASK, KERNEL_RO, KERNEL_RW};
use pvops_selftest::{CaseResult, Status, Tally, Verdict};

const P: u64 = PteFlags::PRESENT.bits();
const RW: u64 = PteFlags::WRITABLE.bits();
const US: u64 = PteFlags::USER.bits();
const PCD: u64 = PteFlags::NO_CACHE.bits();
const PSE: u64 = PteFlags::HUGE.bits();
const RW_FLAGS: u64 = KERNEL_RW.bits();
const RO_FLAGS: u64 = KERNEL_RO.bits();

/// The local APIC page (0xFEE00000): MMIO inside the MSI range Xen denies even to dom0.
pub const LAPIC_MFN: MachineFrame = MachineFrame(0xFEE00);
/// A low-1-MiB frame (VGA text memory): I/O space, mappable only with I/O rights.
pub const LOW_IO_MFN: MachineFrame = MachineFrame(0xB8);
/// An mmuext command number Xen does not know.
pub const UNKNOWN_MMUEXT_CMD: u32 = 0x7F;
/// An `mmu_update` sub-command (`ptr & 7`) Xen does not know.
pub const UNKNOWN_MMU_SUBCMD: u64 = 7;

/// The kind of domain: Xen answers some operations differently for the privileged dom0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An unprivileged guest (`xl create`).
    DomU,
    /// The initial domain (SIF_INITDOMAIN).
    Dom0,
}

impl Mode {
    /// `domU` / `dom0`.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::DomU => "domU",
            Mode::Dom0 => "dom0",
        }
    }
}

/// What a case expects in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Xen refuses with this errno.
    Refused(Errno),
    /// Xen carries it out (a privilege of this mode).
    Accepted,
}

impl Expect {
    /// As a [`Verdict`].
    pub fn verdict(self) -> Verdict {
        match self {
            Expect::Refused(e) => Verdict::Xen(e.name()),
            Expect::Accepted => Verdict::Accepted,
        }
    }
}

/// The verdict of a raw hypercall's return value.
pub fn verdict_of(ret: i32) -> Verdict {
    match Errno::from_ret(ret) {
        Some(e) => Verdict::Xen(e.name()),
        None => Verdict::Accepted,
    }
}

/// One of Xen's rules, provoked through raw hypercalls.
pub struct XenCase<H: Hypervisor> {
    /// Short name (printed).
    pub name: &'static str,
    /// The rule.
    pub rule: &'static str,
    /// Xen's answer to a domU.
    pub domu: Expect,
    /// Xen's answer to dom0.
    pub dom0: Expect,
    /// Sets up, provokes (returning the provoking call's raw result), checks controls,
    /// cleans up. `Err` (a [`Verdict::Broken`]) when a setup, control or cleanup step fails.
    pub run: fn(&mut Env<'_, H>) -> Result<i32, Verdict>,
}

impl<H: Hypervisor> XenCase<H> {
    /// The answer expected in `mode`.
    pub fn expect(&self, mode: Mode) -> Expect {
        match mode {
            Mode::DomU => self.domu,
            Mode::Dom0 => self.dom0,
        }
    }
}

/// What a case works with: the raw hypercall layer of a booted guest (hypercalls, p2m/m2p,
/// the direct map), the boot path's frame allocator and the live L3.
pub struct Env<'a, H: Hypervisor> {
    /// The raw hypercall layer.
    pub hv: &'a mut H,
    alloc: &'a mut FrameAllocator,
    /// The live L3 (pseudo-physical).
    pub cr3: PhysFrame,
    /// Where the hypervisor hole starts (`XENMEM_machphys_mapping`).
    hole: u32,
    calls: u64,
}

struct Ret(i32);

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Errno::from_ret(self.0) {
            Some(e) => write!(f, "returned {e}"),
            None => write!(f, "returned {}", self.0),
        }
    }
}

/// `Ok` when a setup, control or cleanup call returned 0.
fn ok0(step: &'static str, ret: i32) -> Result<(), Verdict> {
    if ret == 0 {
        Ok(())
    } else {
        Err(Verdict::broken(step, format_args!("{}", Ret(ret))))
    }
}

/// `Ok` when a control call returned `expect`.
fn want(step: &'static str, ret: i32, expect: Errno) -> Result<(), Verdict> {
    if ret == -expect.0 {
        Ok(())
    } else {
        Err(Verdict::broken(
            step,
            format_args!("{}, expected {expect}", Ret(ret)),
        ))
    }
}

fn frame_of(e: u64) -> MachineFrame {
    MachineFrame(((e & ADDRESS_MASK) >> 12) as u32)
}

fn direct_va(pfn: PhysFrame) -> VirtAddr {
    VirtAddr(VIRT_BASE + pfn.0 * PAGE_SIZE as u32)
}

impl<'a, H: Hypervisor> Env<'a, H> {
    /// An environment over a booted guest whose live L3 is `cr3`; asks Xen where the
    /// hypervisor hole starts.
    ///
    /// # Safety
    /// The cases issue raw hypercalls behind the backend's back: nothing else may use the
    /// hypercall layer or `alloc` while the environment lives, `cr3` must be the live L3,
    /// and every frame `alloc` hands out must be direct-mapped and writable.
    pub unsafe fn new(
        hv: &'a mut H,
        alloc: &'a mut FrameAllocator,
        cr3: PhysFrame,
    ) -> Result<Self, Verdict> {
        let mut mm = MachphysMapping::default();
        ok0(
            "memory_op(XENMEM_machphys_mapping)",
            hv.machphys_mapping(&mut mm),
        )?;
        Ok(Env {
            hv,
            alloc,
            cr3,
            hole: mm.v_start,
            calls: 0,
        })
    }
    /// Raw hypercalls issued so far.
    pub fn hypercalls(&self) -> u64 {
        self.calls
    }
    /// `p2m[pfn]`.
    pub fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, Verdict> {
        self.hv
            .p2m(pfn)
            .ok_or_else(|| Verdict::broken("p2m lookup", format_args!("pfn {pfn} has no mfn")))
    }
    fn ptr(&self, t: PhysFrame) -> Result<*mut u64, Verdict> {
        // Frames the cases touch are the allocator's and the live tables': all direct-mapped.
        self.mfn(t)?;
        Ok(self.hv.frame_ptr(t) as *mut u64)
    }
    /// Entry `i` of table `t`, read through the direct map.
    pub fn entry(&self, t: PhysFrame, i: usize) -> Result<u64, Verdict> {
        let p = self.ptr(t)?;
        // SAFETY: frame_ptr gives 4096 readable bytes of a direct-mapped frame; i < 512.
        Ok(unsafe { p.add(i % 512).read_volatile() })
    }
    /// Writes entry `i` of `t` directly (only for the case's own writable, untyped frames;
    /// the model reports any other direct write as a violation).
    pub fn poke(&mut self, t: PhysFrame, i: usize, v: u64) -> Result<(), Verdict> {
        let p = self.ptr(t)?;
        // SAFETY: as `entry`; the frame is the case's own and mapped writable.
        unsafe { p.add(i % 512).write_volatile(v) };
        Ok(())
    }
    fn zero(&mut self, t: PhysFrame) -> Result<(), Verdict> {
        let p = self.ptr(t)? as *mut u8;
        // SAFETY: the case's own frame, mapped writable; 4096 bytes.
        unsafe { core::ptr::write_bytes(p, 0, PAGE_SIZE as usize) };
        Ok(())
    }
    /// The guest frame a present entry names (M2P cross-checked against the p2m).
    pub fn table_of(&self, e: u64) -> Result<PhysFrame, Verdict> {
        let m = frame_of(e);
        if e & P == 0 {
            return Err(Verdict::broken(
                "follow an entry",
                format_args!("not present"),
            ));
        }
        self.hv
            .m2p(m)
            .filter(|p| self.hv.p2m(*p) == Some(m))
            .ok_or_else(|| Verdict::broken("follow an entry", format_args!("mfn {m} not ours")))
    }
    /// The live slot-3 L2.
    pub fn live_l2(&self) -> Result<PhysFrame, Verdict> {
        self.table_of(self.entry(self.cr3, 3)?)
    }
    /// First Xen-private slot of the slot-3 L2: the hypervisor hole's.
    pub fn first_xen_slot(&self) -> usize {
        (self.hole.wrapping_sub(VIRT_BASE) >> 21) as usize
    }
    /// Machine address of the live L1 entry that maps `pfn` in the direct map.
    pub fn pte_ma(&self, pfn: PhysFrame) -> Result<u64, Verdict> {
        let (l1, i) = self.live_l1(direct_va(pfn))?;
        Ok(self.mfn(l1)?.start().0 + i as u64 * 8)
    }
    /// The live L1 that maps `va` and the index of its entry (4 KiB pages only).
    pub fn live_l1(&self, va: VirtAddr) -> Result<(PhysFrame, usize), Verdict> {
        let l2 = self.table_of(self.entry(self.cr3, va.l3_index())?)?;
        let l2e = self.entry(l2, va.l2_index())?;
        if l2e & PSE != 0 {
            return Err(Verdict::broken(
                "find a 4 KiB mapping",
                format_args!("{va} is in a 2 MiB page"),
            ));
        }
        Ok((self.table_of(l2e)?, va.l1_index()))
    }
    /// One `mmu_update` request.
    pub fn mmu1(&mut self, ptr: u64, val: u64) -> i32 {
        let mut done = 0;
        self.calls += 1;
        self.hv.mmu_update(&[MmuUpdate { ptr, val }], &mut done)
    }
    /// One `mmuext_op`.
    pub fn ext1(&mut self, cmd: u32, arg1: u32) -> i32 {
        let mut done = 0;
        self.calls += 1;
        self.hv
            .mmuext_op(&[MmuextOp { cmd, arg1, arg2: 0 }], &mut done)
    }
    /// `update_va_mapping(va, val, UVMF_INVLPG)`.
    pub fn uvm(&mut self, va: VirtAddr, val: u64) -> i32 {
        self.calls += 1;
        self.hv.update_va_mapping(va, val, UVMF_INVLPG)
    }
    /// `multicall`.
    pub fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32 {
        self.calls += 1;
        self.hv.multicall(calls)
    }
    /// Remaps `pfn` in the direct map read-only or writable (one raw `mmu_update`, then an
    /// invlpg when it succeeded). Returns the `mmu_update` result.
    pub fn map(&mut self, pfn: PhysFrame, writable: bool) -> Result<i32, Verdict> {
        let ma = self.pte_ma(pfn)?;
        let m = self.mfn(pfn)?;
        let flags = if writable { RW_FLAGS } else { RO_FLAGS };
        let ret = self.mmu1(ma, m.start().0 | flags);
        if ret == 0 {
            ok0(
                "INVLPG_LOCAL after a remap",
                self.ext1(mmuext::INVLPG_LOCAL, direct_va(pfn).0),
            )?;
        }
        Ok(ret)
    }
    /// A fresh, zeroed, writable frame.
    pub fn fresh(&mut self) -> Result<PhysFrame, Verdict> {
        let f = self
            .alloc
            .alloc()
            .map_err(|e| Verdict::broken("allocate a frame", format_args!("{e}")))?;
        if let Err(v) = self.zero(f) {
            let _ = self.alloc.free(f);
            return Err(v);
        }
        Ok(f)
    }
    /// A fresh frame mapped read-only (ready to become a table).
    pub fn fresh_ro(&mut self) -> Result<PhysFrame, Verdict> {
        let f = self.fresh()?;
        match self.map(f, false) {
            Ok(0) => Ok(f),
            Ok(ret) => {
                let _ = self.alloc.free(f);
                Err(Verdict::broken(
                    "make a fresh frame read-only",
                    format_args!("{}", Ret(ret)),
                ))
            }
            Err(v) => {
                let _ = self.alloc.free(f);
                Err(v)
            }
        }
    }
    /// Maps `pfn` writable again, zeroes it and gives it back to the allocator.
    pub fn give_back(&mut self, pfn: PhysFrame) -> Result<(), Verdict> {
        let ret = self.map(pfn, true)?;
        ok0("make the frame writable again", ret)?;
        self.zero(pfn)?;
        self.alloc
            .free(pfn)
            .map_err(|e| Verdict::broken("free the frame", format_args!("{e}")))
    }
    /// The highest guest slot of the live slot-3 L2 that is empty (the scratch area's, after
    /// a boot: it maps nothing).
    pub fn free_l2_slot(&self) -> Result<usize, Verdict> {
        let l2 = self.live_l2()?;
        for i in (0..self.first_xen_slot()).rev() {
            if self.entry(l2, i)? & P == 0 {
                return Ok(i);
            }
        }
        Err(Verdict::broken(
            "find an empty L2 slot",
            format_args!("none below the hole"),
        ))
    }
    /// A frame Xen owns: the first frame of the read-only M2P that Xen maps in the first
    /// private slot of the live slot-3 L2 (a 2 MiB page), and whether that is a superpage
    /// (then the frame holds `m2p[0..1024]`).
    pub fn xen_frame(&self) -> Result<(MachineFrame, bool), Verdict> {
        let e = self.entry(self.live_l2()?, self.first_xen_slot())?;
        if e & P == 0 {
            return Err(Verdict::broken(
                "read Xen's first private L2 slot",
                format_args!("empty"),
            ));
        }
        let superpage = e & PSE != 0;
        let m = frame_of(e).0;
        Ok((
            MachineFrame(if superpage { m & !0x1FF } else { m }),
            superpage,
        ))
    }
}

// ----- the cases -----

fn c_writable_map_of_pagetable<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
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
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::UNPIN_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_pinned<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
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
    let m = env.mfn(f)?.0;
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
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_pin_l3_slot3_shared<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let l2m = env.mfn(env.live_l2()?)?;
    let f = env.fresh()?;
    env.poke(f, 3, l2m.start().0 | P)?;
    let ro = env.map(f, false)?;
    ok0("making the new L3 read-only", ro)?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::PIN_L3_TABLE, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_new_baseptr_slot3_absent<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // NEW_BASEPTR validates on the spot (no pin needed): an L3 without slot 3 fails and
    // the live table stays.
    let f = env.fresh_ro()?;
    let m = env.mfn(f)?.0;
    let ret = env.ext1(mmuext::NEW_BASEPTR, m);
    env.give_back(f)?;
    Ok(ret)
}

fn c_live_l3_slot3_update<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // The same value: a wrong success would change nothing.
    let ma = env.mfn(env.cr3)?.start().0 + 3 * 8;
    let cur = env.entry(env.cr3, 3)?;
    Ok(env.mmu1(ma, cur & !(RW | US)))
}

fn c_xen_private_l2_slot<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let l2 = env.live_l2()?;
    let base = env.mfn(l2)?.start().0;
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
    let m = env.mfn(env.live_l2()?)?.0;
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
    let ma = env.mfn(env.cr3)?.start().0;
    let l2m = env.mfn(l2)?.start().0;
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
    let ma = env.mfn(env.live_l2()?)?.start().0 + slot as u64 * 8;
    let l1 = env.fresh_ro()?;
    let l1m = env.mfn(l1)?.start().0;
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
    let ret = env.mmu1(ma, target.start().0 | RO_FLAGS);
    if ret == 0 {
        ok0(
            "INVLPG_LOCAL",
            env.ext1(mmuext::INVLPG_LOCAL, direct_va(f).0),
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
    let m = env.mfn(env.cr3)?.start().0;
    let ret = env.uvm(va, m | RW_FLAGS);
    ok0(
        "control: the same mapping read-only",
        env.uvm(va, m | RO_FLAGS),
    )?;
    Ok(ret)
}

fn c_uvm_no_l1<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    // 4 MiB: user space, no L1 table in the kernel's table.
    let va = VirtAddr(0x0040_0000);
    if env.live_l1(va).is_ok() {
        return Err(Verdict::broken(
            "the address has no mapping",
            format_args!("{va} is mapped"),
        ));
    }
    let m = env.mfn(env.cr3)?.start().0;
    Ok(env.uvm(va, m | RO_FLAGS))
}

fn c_multicall_uvm<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let va = direct_va(env.cr3).0;
    let m = env.mfn(env.cr3)?.start().0;
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
    let buf_va = direct_va(buf).0;
    let (ok_ma, bad_ma) = (env.pte_ma(buf)?, env.pte_ma(env.cr3)?);
    let (bm, rm) = (env.mfn(buf)?.start().0, env.mfn(env.cr3)?.start().0);
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
    let word = |m| hv.m2p(MachineFrame(m)).map_or(u32::MAX, |p| p.0) as u64;
    let val = word(0) | word(1) << 32;
    Ok(env.mmu1(xen.start().0, val))
}

fn c_unpin_xen_frame<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let (xen, _) = env.xen_frame()?;
    Ok(env.ext1(mmuext::UNPIN_TABLE, xen.0))
}

fn c_mmu_update_bad_subcommand<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<i32, Verdict> {
    let f = env.fresh()?;
    let ptr = env.mfn(f)?.start().0 | UNKNOWN_MMU_SUBCMD;
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

/// Runs every case in `mode`, reporting each; stops at the first failure.
pub fn run_cases<H: Hypervisor>(
    env: &mut Env<'_, H>,
    mode: Mode,
    report: &mut dyn FnMut(&CaseResult),
) -> Tally {
    let mut tally = Tally::default();
    let calls = env.hypercalls();
    for case in cases::<H>() {
        let got = match (case.run)(env) {
            Ok(ret) => verdict_of(ret),
            Err(v) => v,
        };
        let r = CaseResult {
            name: case.name,
            expected: case.expect(mode).verdict(),
            got,
        };
        tally.count(&r);
        report(&r);
        if r.status() == Status::Failed {
            break;
        }
    }
    tally.raw_hypercalls = env.hypercalls() - calls;
    tally
}

/// The mode, from start_info's flags (`None` if `start_info` does not hold a PAE
/// start_info).
pub fn mode_of<H: Hypervisor>(hv: &H, start_info: PhysFrame) -> Option<Mode> {
    hv.p2m(start_info)?;
    let p = hv.frame_ptr(start_info) as *const StartInfo;
    // SAFETY: the frame is direct-mapped and readable; StartInfo is plain old data of
    // 1112 bytes inside it; the fields are read without holding a reference.
    let (magic, flags) = unsafe {
        (
            core::ptr::addr_of!((*p).magic).read_unaligned(),
            core::ptr::addr_of!((*p).flags).read_unaligned(),
        )
    };
    magic
        .starts_with(START_INFO_MAGIC)
        .then_some(if flags & SIF_INITDOMAIN != 0 {
            Mode::Dom0
        } else {
            Mode::DomU
        })
}

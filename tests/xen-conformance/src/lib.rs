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
use pvops_core::addr::{EntryIndex, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::mem::FrameAllocator;
use pvops_core::paging::{PteFlags, ADDRESS_MASK, KERNEL_RO, KERNEL_RW};
use pvops_selftest::{CaseResult, Status, Tally, Verdict};

mod cases;
pub mod difftest;
mod env;

pub use cases::cases;
pub use env::Env;

const P: u64 = PteFlags::PRESENT.bits();
const RW: u64 = PteFlags::WRITABLE.bits();
const US: u64 = PteFlags::USER.bits();
const PCD: u64 = PteFlags::NO_CACHE.bits();
const PSE: u64 = PteFlags::HUGE.bits();
const RW_FLAGS: u64 = KERNEL_RW.bits();
const RO_FLAGS: u64 = KERNEL_RO.bits();

/// The local APIC page (0xFEE00000): MMIO inside the MSI range Xen denies even to dom0.
pub const LAPIC_MFN: MachineFrame = MachineFrame::new(0xFEE00);
/// A low-1-MiB frame (VGA text memory): I/O space, mappable only with I/O rights.
pub const LOW_IO_MFN: MachineFrame = MachineFrame::new(0xB8);
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
    MachineFrame::new(((e & ADDRESS_MASK) >> 12) as u32)
}

fn direct_va(pfn: PhysFrame) -> VirtAddr {
    VirtAddr::new(VIRT_BASE + pfn.number() * PAGE_SIZE as u32)
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

//! The Xen backend's errors: which hypercall failed and how, and the backend's own refusals.

use super::MAX_PINNED;
use crate::abi::{mmuext, Errno, VIRT_BASE};
use core::fmt;
use pvops_core::addr::{PhysFrame, VirtAddr};

/// The hypercall (or sub-operation) that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenOp {
    /// `mmu_update`.
    MmuUpdate,
    /// `mmuext_op` with this command.
    MmuextOp(u32),
    /// `memory_op(XENMEM_machphys_mapping)`.
    MachphysMapping,
}

impl fmt::Display for XenOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenOp::MmuUpdate => f.write_str("mmu_update"),
            XenOp::MmuextOp(cmd) => f.write_str(match *cmd {
                mmuext::PIN_L1_TABLE => "mmuext_op(PIN_L1_TABLE)",
                mmuext::PIN_L2_TABLE => "mmuext_op(PIN_L2_TABLE)",
                mmuext::PIN_L3_TABLE => "mmuext_op(PIN_L3_TABLE)",
                mmuext::UNPIN_TABLE => "mmuext_op(UNPIN_TABLE)",
                mmuext::NEW_BASEPTR => "mmuext_op(NEW_BASEPTR)",
                mmuext::TLB_FLUSH_LOCAL => "mmuext_op(TLB_FLUSH_LOCAL)",
                mmuext::INVLPG_LOCAL => "mmuext_op(INVLPG_LOCAL)",
                _ => "mmuext_op",
            }),
            XenOp::MachphysMapping => f.write_str("memory_op(XENMEM_machphys_mapping)"),
        }
    }
}

/// An error of the Xen backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenError {
    /// Xen refused a hypercall.
    Hypercall {
        /// Which.
        op: XenOp,
        /// The errno Xen returned.
        errno: Errno,
        /// Index of the failing entry in the batch (Xen reports how many succeeded).
        index: u32,
        /// The failing entry's main argument (ptr of an mmu_update, mfn of an mmuext_op).
        arg: u64,
    },
    /// A frame that must be reachable is not mapped in the live table.
    NotMapped {
        /// The virtual address.
        va: VirtAddr,
    },
    /// A pfn outside the p2m list.
    NoMachineFrame {
        /// The pfn.
        pfn: PhysFrame,
    },
    /// `pin_root` of a root that is pinned already (Xen would say EINVAL; asked never).
    AlreadyPinned {
        /// The root.
        pfn: PhysFrame,
    },
    /// `unpin_root` of a root that is not pinned.
    NotPinned {
        /// The root.
        pfn: PhysFrame,
    },
    /// `unpin_root` of the live root.
    LiveRoot {
        /// The root.
        pfn: PhysFrame,
    },
    /// More roots pinned at once than the backend tracks ([`MAX_PINNED`]).
    TooManyPinned {
        /// The root that could not be pinned.
        pfn: PhysFrame,
    },
    /// The hypervisor hole (`XENMEM_machphys_mapping`) starts too low to leave the
    /// early_ioremap window, the scratch area and any lowmem above `VIRT_BASE`.
    HoleTooLow {
        /// The hole's start as Xen reported it.
        v_start: u32,
    },
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenError::Hypercall {
                op,
                errno,
                index,
                arg,
            } => {
                write!(f, "xen {errno}: {op}[{index}] arg={arg:#x}")
            }
            XenError::NotMapped { va } => {
                write!(f, "xen backend: {va} is not mapped in the live table")
            }
            XenError::NoMachineFrame { pfn } => {
                write!(f, "xen backend: pfn {pfn} is not in the p2m list")
            }
            XenError::AlreadyPinned { pfn } => {
                write!(f, "xen backend: root pfn {pfn} is pinned already")
            }
            XenError::NotPinned { pfn } => write!(f, "xen backend: root pfn {pfn} is not pinned"),
            XenError::LiveRoot { pfn } => {
                write!(f, "xen backend: root pfn {pfn} is live, cannot unpin it")
            }
            XenError::TooManyPinned { pfn } => write!(
                f,
                "xen backend: cannot pin root pfn {pfn}: {MAX_PINNED} roots pinned already"
            ),
            XenError::HoleTooLow { v_start } => write!(
                f,
                "xen backend: hypervisor hole at {v_start:#x} leaves no lowmem above {VIRT_BASE:#x}"
            ),
        }
    }
}

//! The model's hypercall counters, injected faults and the refusals it records.

use super::*;

/// The hypercall kinds the model counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HcKind {
    /// `mmu_update`.
    MmuUpdate,
    /// `mmuext_op`.
    MmuextOp,
    /// `update_va_mapping`.
    UpdateVaMapping,
    /// `multicall`.
    Multicall,
    /// `memory_op(XENMEM_machphys_mapping)`.
    MachphysMapping,
}

pvops_core::counters! {
    /// Hypercalls the guest made (top-level traps; a multicall counts once, its entries apart).
    pub struct HvCounters {
        /// Every hypercall.
        total,
        /// `mmu_update` calls.
        mmu_update_calls,
        /// Requests they carried.
        mmu_update_entries,
        /// `mmuext_op` calls.
        mmuext_calls,
        /// Operations they carried.
        mmuext_ops,
        /// `update_va_mapping` calls.
        update_va_mapping_calls,
        /// `multicall` calls.
        multicall_calls,
        /// Entries they carried.
        multicall_entries,
        /// `memory_op(XENMEM_machphys_mapping)` calls.
        machphys_mapping_calls,
        /// Calls that returned an error (injected ones excluded).
        failed,
    }
}

/// A hypercall the model failed on purpose ([`XenModel::fail_hypercall`],
/// [`XenModel::fail_multicall_entry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Its number (1-based, over all hypercalls).
    pub seq: u64,
    /// Its kind.
    pub kind: HcKind,
    /// The multicall entry or batch request that failed (`None`: the whole hypercall).
    pub entry: Option<u32>,
    /// The errno returned.
    pub errno: Errno,
}

/// A hypercall that Xen's rules refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HvFailure {
    /// Its number.
    pub seq: u64,
    /// Its kind.
    pub kind: HcKind,
    /// Index of the failing entry (= `done`).
    pub index: u32,
    /// The errno.
    pub errno: Errno,
    /// Why (the message a debug Xen would print).
    pub reason: String,
}

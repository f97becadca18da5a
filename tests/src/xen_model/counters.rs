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

/// Hypercalls the guest made (top-level traps; a multicall counts once, its entries apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvCounters {
    /// Every hypercall.
    pub total: u64,
    /// `mmu_update` calls.
    pub mmu_update_calls: u64,
    /// Requests they carried.
    pub mmu_update_entries: u64,
    /// `mmuext_op` calls.
    pub mmuext_calls: u64,
    /// Operations they carried.
    pub mmuext_ops: u64,
    /// `update_va_mapping` calls.
    pub update_va_mapping_calls: u64,
    /// `multicall` calls.
    pub multicall_calls: u64,
    /// Entries they carried.
    pub multicall_entries: u64,
    /// `memory_op(XENMEM_machphys_mapping)` calls.
    pub machphys_mapping_calls: u64,
    /// Calls that returned an error (injected ones excluded).
    pub failed: u64,
}

impl HvCounters {
    /// `self - earlier`, field by field.
    pub fn since(&self, e: &HvCounters) -> HvCounters {
        HvCounters {
            total: self.total - e.total,
            mmu_update_calls: self.mmu_update_calls - e.mmu_update_calls,
            mmu_update_entries: self.mmu_update_entries - e.mmu_update_entries,
            mmuext_calls: self.mmuext_calls - e.mmuext_calls,
            mmuext_ops: self.mmuext_ops - e.mmuext_ops,
            update_va_mapping_calls: self.update_va_mapping_calls - e.update_va_mapping_calls,
            multicall_calls: self.multicall_calls - e.multicall_calls,
            multicall_entries: self.multicall_entries - e.multicall_entries,
            machphys_mapping_calls: self.machphys_mapping_calls - e.machphys_mapping_calls,
            failed: self.failed - e.failed,
        }
    }
}

/// A hypercall the model failed on purpose ([`XenModel::fail_hypercall`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Its number (1-based, over all hypercalls).
    pub seq: u64,
    /// Its kind.
    pub kind: HcKind,
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

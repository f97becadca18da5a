//! Bare metal's counters: none. Page-table writes are plain stores and cost no call.

use core::fmt;
use pvops_core::ops::Counters;

/// The counters of a backend that never calls a hypervisor (bare metal; the native MMU under
/// Xen PVH, where Xen shadows the guest's own tables).
///
/// The stage and stats lines have one format for every backend (the README's contract, which
/// scripts parse), so these print the Xen backend's fields, all zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoHypercalls;

impl Counters for NoHypercalls {
    fn since(&self, _: &Self) -> Self {
        NoHypercalls
    }
    fn hypercalls(&self) -> u64 {
        0
    }
    fn write_json(&self, stage: &str, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            out,
            ",\"{stage}_hypercalls\":0,\"{stage}_mmu_update_entries\":0,\"{stage}_mmuext_ops\":0,\"{stage}_multicalls\":0"
        )
    }
}

impl fmt::Display for NoHypercalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hypercalls=0 mmu_update=0/0 mmuext_op=0/0 update_va_mapping=0 multicall=0")
    }
}

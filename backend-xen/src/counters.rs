//! The Xen backend's counters: hypercalls by kind and the entries they carried, per stage.

use core::fmt;
use pvops_core::ops::Counters;

pvops_core::counters! {
    /// Hypercalls `XenMmu` issued, by kind, and the entries they carried.
    pub struct XenCounters {
        /// `mmu_update` calls.
        mmu_update_calls,
        /// Page-table updates they carried.
        mmu_update_entries,
        /// `mmuext_op` calls.
        mmuext_calls,
        /// Operations they carried (pin, unpin, new baseptr, flushes).
        mmuext_ops,
        /// `multicall` calls (each counted once; the calls inside are counted by kind too).
        multicall_calls,
    }
}

impl Counters for XenCounters {
    fn since(&self, earlier: &Self) -> Self {
        XenCounters::since(self, earlier)
    }
    /// Traps into Xen: a multicall is one, whatever it carries.
    fn hypercalls(&self) -> u64 {
        self.mmu_update_calls + self.mmuext_calls + self.multicall_calls
    }
    fn write_json(&self, stage: &str, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            out,
            ",\"{stage}_hypercalls\":{},\"{stage}_mmu_update_entries\":{},\"{stage}_mmuext_ops\":{},\"{stage}_multicalls\":{}",
            self.hypercalls(),
            self.mmu_update_entries,
            self.mmuext_ops,
            self.multicall_calls
        )
    }
}

impl fmt::Display for XenCounters {
    /// `hypercalls=H mmu_update=C/E mmuext_op=C/O update_va_mapping=0 multicall=M` (the
    /// README's stage-line format; `XenMmu` never issues `update_va_mapping`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hypercalls={} mmu_update={}/{} mmuext_op={}/{} update_va_mapping=0 multicall={}",
            self.hypercalls(),
            self.mmu_update_calls,
            self.mmu_update_entries,
            self.mmuext_calls,
            self.mmuext_ops,
            self.multicall_calls
        )
    }
}

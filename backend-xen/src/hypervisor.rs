//! The hypercall trait: everything backend-xen asks of Xen, so the same backend code runs on
//! the real hypervisor and on the host's model of Xen's rules.

use crate::abi::{MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry};
use core::fmt;
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr};
use pvops_core::ops::PageFault;

/// The results of [`Hypervisor::mmu_then_mmuext`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedResult {
    /// The `mmu_update` return value.
    pub mmu_update: i32,
    /// The `mmuext_op` return value (0 when it did not run).
    pub mmuext_op: i32,
    /// True when both went to Xen as one `multicall`.
    pub counts_as_multicall: bool,
}

/// Raw hypercalls (return values exactly as Xen gives them: 0 or a negated errno) plus the
/// guest-memory primitives of a PV guest. Implemented by the real hypercall page and by the
/// host model; backend-xen's checks sit above this layer, never inside it.
pub trait Hypervisor {
    /// `HYPERVISOR_mmu_update(reqs, count, &done, DOMID_SELF)`.
    fn mmu_update(&mut self, reqs: &[MmuUpdate], done: &mut u32) -> i32;
    /// `HYPERVISOR_mmuext_op(ops, count, &done, DOMID_SELF)`.
    fn mmuext_op(&mut self, ops: &[MmuextOp], done: &mut u32) -> i32;
    /// `HYPERVISOR_update_va_mapping(va, val, flags)`.
    fn update_va_mapping(&mut self, va: VirtAddr, val: u64, flags: u32) -> i32;
    /// `HYPERVISOR_multicall(calls, count)`; each entry's `result` is filled in.
    fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32;
    /// An `mmu_update` batch followed by an `mmuext_op` batch (e.g. PTE writes and their
    /// invlpgs). The real guest issues both as ONE `multicall`; this default issues them one
    /// after the other, with the same semantics: the second runs whatever the first returned
    /// (Xen's multicall runs every entry). Returns both return values; `counts_as_multicall`
    /// tells the caller which happened.
    fn mmu_then_mmuext(
        &mut self,
        reqs: &[MmuUpdate],
        done: &mut u32,
        ops: &[MmuextOp],
        ops_done: &mut u32,
    ) -> MixedResult {
        let first = self.mmu_update(reqs, done);
        let second = self.mmuext_op(ops, ops_done);
        MixedResult {
            mmu_update: first,
            mmuext_op: second,
            counts_as_multicall: false,
        }
    }
    /// `HYPERVISOR_memory_op(XENMEM_machphys_mapping, out)`.
    fn machphys_mapping(&mut self, out: &mut MachphysMapping) -> i32;

    /// `p2m[pfn]` from the p2m list the domain builder handed over.
    fn p2m(&self, pfn: PhysFrame) -> Option<MachineFrame>;
    /// `m2p[mfn]` from Xen's read-only M2P table (not yet cross-checked).
    fn m2p(&self, mfn: MachineFrame) -> Option<PhysFrame>;
    /// Where the guest reaches pseudo-physical frame `pfn` (its direct-mapped address on the
    /// real guest; host memory in the model). The caller checks that it is mapped.
    fn frame_ptr(&self, pfn: PhysFrame) -> *mut u8;
    /// Reads guest virtual memory through the live table.
    ///
    /// # Safety
    /// As [`pvops_core::Platform::read_virt`].
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault>;
    /// Writes guest virtual memory through the live table.
    ///
    /// # Safety
    /// As [`pvops_core::Platform::write_virt`].
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault>;
    /// A cycle counter (a domU's TSC is emulated by Xen: compare within one backend only).
    fn cycles(&self) -> u64;
    /// Nanoseconds this vCPU has spent not running so far (Xen's runstate: runnable,
    /// blocked, offline), or `None` without a registered runstate area (the model).
    fn not_running_ns(&self) -> Option<u64> {
        None
    }
    /// Prints a backend log line (console on the real guest, a buffer in the model).
    fn log(&mut self, args: fmt::Arguments<'_>);
}

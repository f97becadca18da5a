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
///
/// # Safety of the hypercall methods
/// A raw page-table hypercall changes what the guest's memory means (mappings, page types,
/// pins, the live table) behind every check and all bookkeeping of [`crate::XenMmu`], so
/// each one is `unsafe`. Its caller guarantees that the request keeps the running kernel's
/// code, data and stack mapped as the kernel relies on, maps no page-table frame writable,
/// frees or unmaps nothing still in use, and that every buffer it names (`reqs`, `ops`,
/// `calls`' arguments) is live for the call. Xen refusing a request is harmless; an accepted
/// one is the caller's responsibility. Reads ([`Hypervisor::p2m`], [`Hypervisor::m2p`],
/// [`Hypervisor::machphys_mapping`]) are safe.
///
/// Safe code cannot issue a raw hypercall (issue 11: it could, through any `&mut H`):
/// ```compile_fail,E0133
/// fn raw<H: backend_xen::Hypervisor>(hv: &mut H) -> i32 {
///     let mut done = 0;
///     hv.mmu_update(&[], &mut done)
/// }
/// ```
/// ```compile_fail,E0133
/// fn raw<H: backend_xen::Hypervisor>(hv: &mut H) -> i32 {
///     hv.multicall(&mut [])
/// }
/// ```
/// Only inside `unsafe`, with the contract kept:
/// ```
/// fn raw<H: backend_xen::Hypervisor>(hv: &mut H) -> i32 {
///     let mut done = 0;
///     // SAFETY: an empty batch changes nothing.
///     unsafe { hv.mmu_update(&[], &mut done) }
/// }
/// ```
pub trait Hypervisor {
    /// `HYPERVISOR_mmu_update(reqs, count, &done, DOMID_SELF)`.
    ///
    /// # Safety
    /// See the trait docs: each accepted request changes a page-table entry.
    unsafe fn mmu_update(&mut self, reqs: &[MmuUpdate], done: &mut u32) -> i32;
    /// `HYPERVISOR_mmuext_op(ops, count, &done, DOMID_SELF)`.
    ///
    /// # Safety
    /// See the trait docs: pins, unpins, a new base pointer and flushes change the address
    /// space.
    unsafe fn mmuext_op(&mut self, ops: &[MmuextOp], done: &mut u32) -> i32;
    /// `HYPERVISOR_update_va_mapping(va, val, flags)`.
    ///
    /// # Safety
    /// See the trait docs: it rewrites the live L1 entry of `va`.
    unsafe fn update_va_mapping(&mut self, va: VirtAddr, val: u64, flags: u32) -> i32;
    /// `HYPERVISOR_multicall(calls, count)`; each entry's `result` is filled in.
    ///
    /// # Safety
    /// See the trait docs, for every call of the batch; the buffers the entries' arguments
    /// point at must be live.
    unsafe fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32;
    /// An `mmu_update` batch followed by an `mmuext_op` batch (e.g. PTE writes and their
    /// invlpgs). The real guest issues both as ONE `multicall`; this default issues them one
    /// after the other, with the same semantics: the second runs whatever the first returned
    /// (Xen's multicall runs every entry). Returns both return values; `counts_as_multicall`
    /// tells the caller which happened.
    ///
    /// # Safety
    /// As [`Hypervisor::mmu_update`] and [`Hypervisor::mmuext_op`].
    unsafe fn mmu_then_mmuext(
        &mut self,
        reqs: &[MmuUpdate],
        done: &mut u32,
        ops: &[MmuextOp],
        ops_done: &mut u32,
    ) -> MixedResult {
        // SAFETY: forwarded contract.
        let first = unsafe { self.mmu_update(reqs, done) };
        // SAFETY: forwarded contract.
        let second = unsafe { self.mmuext_op(ops, ops_done) };
        MixedResult {
            mmu_update: first,
            mmuext_op: second,
            counts_as_multicall: false,
        }
    }
    /// `HYPERVISOR_memory_op(XENMEM_machphys_mapping, out)` (a read: it only fills `out`).
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
}

/// Where [`crate::XenMmu`] prints its own log lines (the console on the real guest, a buffer
/// in the host model). Not a hypervisor operation, so not part of [`Hypervisor`].
pub trait BackendLog {
    /// Prints one backend log line.
    fn log(&mut self, args: fmt::Arguments<'_>);
}

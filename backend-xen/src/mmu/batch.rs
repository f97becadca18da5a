//! Lazy-mode batching of the Xen backend: the queue of `mmu_update` requests and mmuext
//! operations, how a batch is issued (one `mmu_update`, one `mmuext_op`, or a multicall of
//! both), what a failed batch reports, and what a walk sees of the queue.

use super::{XenError, XenMmu, XenOp, EXT_QUEUE_CAPACITY};
use crate::abi::{Errno, MmuUpdate, MmuextOp, MMU_NORMAL_PT_UPDATE};
use crate::hypervisor::{BackendLog, Hypervisor};
use pvops_core::paging::{EntrySlot, PageTableEntry};

impl<H: Hypervisor + BackendLog> XenMmu<H> {
    /// Queues (or, outside lazy mode, issues) one checked page-table write. An error kept
    /// from an earlier flush nobody could report ([`pvops_core::ops::MmuOps::defer_error`]) comes first.
    pub(super) fn update(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
    ) -> Result<(), XenError> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let ptr = self.mfn(slot.table())?.start().as_u64() + slot.byte_offset();
        self.queue[self.queued] = MmuUpdate {
            ptr: ptr | MMU_NORMAL_PT_UPDATE,
            val: entry.bits(),
        };
        self.queued += 1;
        if !self.lazy || self.queued >= self.batch {
            return self.flush_queue();
        }
        Ok(())
    }

    /// Issues what lazy mode queued: the page-table updates as one `mmu_update`, the flushes
    /// (and pins) as one `mmuext_op`, or both together as one `multicall` when both are
    /// pending. The queue is empty afterwards, also after a failure: Xen applied the updates
    /// before the failing one, not the failing one nor those after it (the error names it).
    /// An error kept by [`pvops_core::ops::MmuOps::defer_error`] is reported here if nothing else failed.
    pub(super) fn flush_queue(&mut self) -> Result<(), XenError> {
        let r = self.issue_queue();
        match self.deferred.take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn issue_queue(&mut self) -> Result<(), XenError> {
        let (n, m) = (self.queued, self.ext_queued);
        self.queued = 0;
        self.ext_queued = 0;
        match (n, m) {
            (0, 0) => Ok(()),
            (_, 0) => {
                let mut done = 0;
                self.stats.mmu_update_calls += 1;
                // SAFETY: the queue holds only requests XenMmu's checks built (machine
                // addresses of tables it tracks, page-table frames never mapped writable).
                let ret = unsafe { self.hv.mmu_update(&self.queue[..n], &mut done) };
                self.stats.mmu_update_entries += (done as u64).min(n as u64);
                self.mmu_result(ret, done, n)
            }
            (0, _) => {
                let ops = self.ext_queue;
                self.issue_mmuext(&ops[..m])
            }
            _ => {
                let (mut done, mut ops_done) = (0, 0);
                // SAFETY: as above; the mmuext ops are the backend's own flushes and pins.
                let r = unsafe {
                    self.hv.mmu_then_mmuext(
                        &self.queue[..n],
                        &mut done,
                        &self.ext_queue[..m],
                        &mut ops_done,
                    )
                };
                if r.counts_as_multicall {
                    self.stats.multicall_calls += 1;
                } else {
                    self.stats.mmu_update_calls += 1;
                    self.stats.mmuext_calls += 1;
                }
                self.stats.mmu_update_entries += (done as u64).min(n as u64);
                self.stats.mmuext_ops += m as u64;
                self.mmu_result(r.mmu_update, done, n)?;
                self.ext_result(r.mmuext_op, ops_done, &self.ext_queue[..m])
            }
        }
    }

    fn mmu_result(&self, ret: i32, done: u32, n: usize) -> Result<(), XenError> {
        match Errno::from_ret(ret) {
            None => Ok(()),
            Some(errno) => {
                let index = done.min(n as u32 - 1);
                Err(XenError::Hypercall {
                    op: XenOp::MmuUpdate,
                    errno,
                    index,
                    arg: self.queue[index as usize].ptr,
                })
            }
        }
    }

    fn ext_result(&self, ret: i32, done: u32, ops: &[MmuextOp]) -> Result<(), XenError> {
        match Errno::from_ret(ret) {
            None => Ok(()),
            Some(errno) => {
                let i = done.min(ops.len() as u32 - 1);
                let op = ops[i as usize];
                Err(XenError::Hypercall {
                    op: XenOp::MmuextOp(op.cmd),
                    errno,
                    index: i,
                    arg: op.arg1 as u64,
                })
            }
        }
    }

    /// Issues mmuext operations as one hypercall, after anything queued.
    pub(super) fn mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), XenError> {
        self.flush_queue()?;
        self.issue_mmuext(ops)
    }

    fn issue_mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), XenError> {
        let mut done = 0;
        self.stats.mmuext_calls += 1;
        self.stats.mmuext_ops += ops.len() as u64;
        // SAFETY: every mmuext op XenMmu builds (pin/unpin of tables it made read-only, a new
        // base pointer of a validated root, flushes) is one of its checked operations.
        let ret = unsafe { self.hv.mmuext_op(ops, &mut done) };
        self.ext_result(ret, done, ops)
    }

    /// A TLB flush: issued now, or queued with the page-table updates in lazy mode.
    pub(super) fn flush_op(&mut self, op: MmuextOp) -> Result<(), XenError> {
        if !self.lazy {
            return self.mmuext(&[op]);
        }
        self.queue_ext(op)
    }

    /// Queues an mmuext operation behind the queued updates (issued at the next flush).
    pub(super) fn queue_ext(&mut self, op: MmuextOp) -> Result<(), XenError> {
        if self.ext_queued == EXT_QUEUE_CAPACITY {
            self.flush_queue()?;
        }
        self.ext_queue[self.ext_queued] = op;
        self.ext_queued += 1;
        Ok(())
    }

    /// The value the newest queued update of `slot` writes, if one is queued.
    pub(super) fn queued_value(&self, slot: EntrySlot) -> Option<PageTableEntry> {
        if self.queued == 0 {
            return None;
        }
        let ptr = (self.hv.p2m(slot.table())?.start().as_u64() + slot.byte_offset())
            | MMU_NORMAL_PT_UPDATE;
        self.queue[..self.queued]
            .iter()
            .rev()
            .find(|u| u.ptr == ptr)
            .map(|u| PageTableEntry::from_bits(u.val))
    }
}

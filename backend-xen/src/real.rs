//! The real hypercall layer: [`Hypervisor`] over the raw hypercalls (`crate::hypercall`),
//! the p2m list from start_info, and Xen's read-only M2P table.

use crate::abi::VcpuRunstateInfo;
use crate::abi::{nr, MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry, DOMID_SELF, VIRT_BASE};
use crate::hypercall::{hypercall3, hypercall4};
use crate::hypervisor::Hypervisor;
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{compiler_fence, Ordering};
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr};
use pvops_core::ops::PageFault;

/// The hypercall layer of a running 32-bit PV guest.
pub struct RealXen {
    p2m: *const u32,
    nr_pages: u32,
    m2p: *const u32,
    m2p_entries: u32,
    /// True once Xen accepted [`RUNSTATE`] as vCPU 0's runstate area.
    runstate: bool,
}

/// vCPU 0's runstate area: Xen writes it whenever it schedules the vCPU; the guest only reads.
struct RunstateArea(UnsafeCell<VcpuRunstateInfo>);
// SAFETY: one vCPU; the guest only reads it (volatile), Xen writes it.
unsafe impl Sync for RunstateArea {}
static RUNSTATE: RunstateArea = RunstateArea(UnsafeCell::new(VcpuRunstateInfo {
    state: 0,
    state_entry_time: 0,
    time: [0; 4],
}));

impl RealXen {
    /// Uses the p2m list at virtual `mfn_list` (nr_pages entries) and Xen's M2P at
    /// `machphys.v_start`.
    ///
    /// # Safety
    /// `mfn_list` must be start_info's p2m list, mapped for the guest's whole life.
    pub unsafe fn new(mfn_list: u32, nr_pages: u32, machphys: &MachphysMapping) -> RealXen {
        // SAFETY: RUNSTATE is a static of the kernel image, which stays mapped at the same
        // virtual address for the domain's life, and nothing but Xen writes it.
        let runstate = unsafe { crate::hypercall::register_runstate_area(0, RUNSTATE.0.get()) };
        if runstate < 0 {
            let _ = writeln!(
                crate::console::Console,
                "xen: VCPUOP_register_runstate_memory_area failed ({runstate}): no notrun figures"
            );
        }
        RealXen {
            p2m: mfn_list as *const u32,
            nr_pages,
            m2p: machphys.v_start as *const u32,
            m2p_entries: machphys.max_mfn.saturating_add(1),
            runstate: runstate == 0,
        }
    }
}

impl RealXen {
    /// Xen's system time (ns, from vCPU 0's creation) as of this call, from
    /// `VCPUOP_get_runstate_info`: a clock independent of the TSC Xen gives the domU, to
    /// calibrate it against. `None` if Xen refused.
    pub fn clock_ns(&self) -> Option<u64> {
        crate::hypercall::runstate_info(0)
            .ok()
            .map(|i| i.total_ns())
    }
}

impl Hypervisor for RealXen {
    fn mmu_update(&mut self, reqs: &[MmuUpdate], done: &mut u32) -> i32 {
        // SAFETY: Xen reads `reqs` and writes `done`.
        unsafe {
            hypercall4(
                nr::MMU_UPDATE,
                reqs.as_ptr() as u32,
                reqs.len() as u32,
                done as *mut u32 as u32,
                DOMID_SELF as u32,
            )
        }
    }
    fn mmuext_op(&mut self, ops: &[MmuextOp], done: &mut u32) -> i32 {
        // SAFETY: Xen reads `ops` and writes `done`.
        unsafe {
            hypercall4(
                nr::MMUEXT_OP,
                ops.as_ptr() as u32,
                ops.len() as u32,
                done as *mut u32 as u32,
                DOMID_SELF as u32,
            )
        }
    }
    fn update_va_mapping(&mut self, va: VirtAddr, val: u64, flags: u32) -> i32 {
        // SAFETY: by-value arguments only (the 64-bit PTE split lo/hi).
        unsafe {
            hypercall4(
                nr::UPDATE_VA_MAPPING,
                va.0,
                val as u32,
                (val >> 32) as u32,
                flags,
            )
        }
    }
    fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32 {
        // SAFETY: Xen reads the entries (and the buffers their args name) and writes results.
        unsafe {
            hypercall3(
                nr::MULTICALL,
                calls.as_mut_ptr() as u32,
                calls.len() as u32,
                0,
            )
        }
    }
    fn machphys_mapping(&mut self, out: &mut MachphysMapping) -> i32 {
        crate::hypercall::machphys_mapping(out)
    }
    fn mmu_then_mmuext(
        &mut self,
        reqs: &[MmuUpdate],
        done: &mut u32,
        ops: &[MmuextOp],
        ops_done: &mut u32,
    ) -> crate::hypervisor::MixedResult {
        let dom = DOMID_SELF as u32;
        let mut calls = [
            MulticallEntry {
                op: nr::MMU_UPDATE as u32,
                result: 0,
                args: [
                    reqs.as_ptr() as u32,
                    reqs.len() as u32,
                    done as *mut u32 as u32,
                    dom,
                    0,
                    0,
                ],
            },
            MulticallEntry {
                op: nr::MMUEXT_OP as u32,
                result: 0,
                args: [
                    ops.as_ptr() as u32,
                    ops.len() as u32,
                    ops_done as *mut u32 as u32,
                    dom,
                    0,
                    0,
                ],
            },
        ];
        let ret = self.multicall(&mut calls);
        if ret < 0 {
            return crate::hypervisor::MixedResult {
                mmu_update: ret,
                mmuext_op: 0,
                counts_as_multicall: true,
            };
        }
        crate::hypervisor::MixedResult {
            mmu_update: calls[0].result as i32,
            mmuext_op: calls[1].result as i32,
            counts_as_multicall: true,
        }
    }
    fn p2m(&self, pfn: PhysFrame) -> Option<MachineFrame> {
        if pfn.0 >= self.nr_pages {
            return None;
        }
        // SAFETY: the p2m list holds nr_pages entries and stays mapped.
        let mfn = unsafe { core::ptr::read_volatile(self.p2m.add(pfn.0 as usize)) };
        (mfn != u32::MAX).then_some(MachineFrame(mfn))
    }
    fn m2p(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        if mfn.0 >= self.m2p_entries {
            return None;
        }
        // SAFETY: Xen maps the M2P read-only for every guest up to max_mfn.
        Some(PhysFrame(unsafe {
            core::ptr::read_volatile(self.m2p.add(mfn.0 as usize))
        }))
    }
    fn frame_ptr(&self, pfn: PhysFrame) -> *mut u8 {
        (VIRT_BASE as usize + ((pfn.0 as usize) << 12)) as *mut u8
    }
    unsafe fn read_virt(&self, va: VirtAddr, buf: &mut [u8]) -> Result<(), PageFault> {
        // SAFETY: the caller vouches for `va`; a fault goes to the trap table.
        unsafe { pvops_core::ops::hardware_read_virt(va, buf) };
        Ok(())
    }
    unsafe fn write_virt(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), PageFault> {
        // SAFETY: as read_virt.
        unsafe { pvops_core::ops::hardware_write_virt(va, data) };
        Ok(())
    }
    fn cycles(&self) -> u64 {
        // SAFETY: rdtsc (emulated by Xen for a domU) has no side effects.
        unsafe { core::arch::x86::_rdtsc() }
    }
    fn not_running_ns(&self) -> Option<u64> {
        if !self.runstate {
            return None;
        }
        // Xen rewrites the area when it schedules this vCPU back in, which can happen
        // between two loads: take a copy whose entry time did not change while it was read.
        loop {
            // SAFETY: RUNSTATE is a live, 4-aligned static; volatile because Xen writes it.
            let a = unsafe { core::ptr::read_volatile(RUNSTATE.0.get()) };
            compiler_fence(Ordering::SeqCst);
            // SAFETY: as above.
            let b = unsafe { core::ptr::read_volatile(RUNSTATE.0.get()) };
            if { a.state_entry_time } == { b.state_entry_time } && !b.updating() {
                return Some(b.not_running_ns());
            }
        }
    }
    fn log(&mut self, args: fmt::Arguments<'_>) {
        let _ = writeln!(crate::console::Console, "{args}");
    }
}

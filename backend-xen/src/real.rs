//! The real hypercall layer: [`Hypervisor`] over the raw hypercalls (`crate::hypercall`),
//! the p2m list from start_info, and Xen's read-only M2P table.

use crate::abi::VcpuRunstateInfo;
use crate::abi::{nr, MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry, DOMID_SELF, VIRT_BASE};
use crate::hypercall::{hypercall3, hypercall4};
use crate::hypervisor::{BackendLog, Hypervisor};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{compiler_fence, Ordering};
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr};
use pvops_core::ops::PageFault;

// The one load of an M2P entry, with its fixup: Xen maps the M2P area up to max_mfn only
// where machine memory exists, so the entry of a frame beyond RAM (or in a hole) is not
// mapped. Like Linux's __get_user on the M2P, a fault of this load does not reach the fault
// printer: the trap handler (entry.rs) sees its eip and resumes at the fixup, which returns
// "no entry" (edx = 0). The reader keeps the callee-saved registers on its own stack, so
// the fixup restores them whatever the trap handler did to them before it resumed here.
core::arch::global_asm!(
    r#"
    .section .text.pvops_xen_m2p, "ax"
    .global pvops_xen_m2p_read
    .global pvops_xen_m2p_load
    .global pvops_xen_m2p_fixup
pvops_xen_m2p_read:
    push %ebx
    push %esi
    push %edi
    push %ebp
    mov 20(%esp), %ecx
    mov $1, %edx
pvops_xen_m2p_load:
    mov (%ecx), %eax
3:
    pop %ebp
    pop %edi
    pop %esi
    pop %ebx
    ret
pvops_xen_m2p_fixup:
    xor %eax, %eax
    xor %edx, %edx
    jmp 3b
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// Reads the u32 at `entry`: `1 << 32 | value`, or 0 when the load faulted.
    fn pvops_xen_m2p_read(entry: *const u32) -> u64;
    /// The load instruction of [`pvops_xen_m2p_read`] (only its address is taken).
    fn pvops_xen_m2p_load();
}

/// True when a fault at `eip` is the M2P load's: resume with [`resume_at_m2p_fixup`].
pub(crate) fn is_m2p_load(eip: u32) -> bool {
    eip == pvops_xen_m2p_load as *const () as u32
}

/// Resumes the faulting M2P load at its fixup: `frame` is the trap stub's frame (vector,
/// error code, then Xen's bounce frame eip, cs, eflags on the interrupted ring-1 stack).
///
/// # Safety
/// `frame` must be the live trap frame of a fault at the M2P load ([`is_m2p_load`]).
pub(crate) unsafe fn resume_at_m2p_fixup(frame: *const u32) -> ! {
    // SAFETY: the frame lies on the interrupted stack; dropping vector and error code and
    // replacing eip leaves a same-ring iret frame that returns into the reader's fixup, which
    // restores the callee-saved registers from its own stack.
    unsafe {
        core::arch::asm!(
            "mov {0}, %esp",
            "add $8, %esp",
            "movl $pvops_xen_m2p_fixup, (%esp)",
            "iret",
            in(reg) frame,
            options(att_syntax, noreturn)
        )
    }
}

/// M2P loads that faulted and were resumed at the fixup.
static M2P_FAULTS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// `m2p[mfn]` from the M2P at `m2p` with `entries` entries (max_mfn + 1): `None` beyond
/// them, and `None` where Xen has not mapped the entry (the load's fault is fixed up).
pub(crate) fn read_m2p(m2p: *const u32, entries: u32, mfn: u32) -> Option<u32> {
    if mfn >= entries {
        return None;
    }
    // SAFETY: the address lies in the M2P area Xen reserves for the guest (below
    // v_start + 4 * (max_mfn + 1)); a fault of the load is fixed up by the trap entry.
    let r = unsafe { pvops_xen_m2p_read(m2p.wrapping_add(mfn as usize)) };
    if r >> 32 == 0 {
        M2P_FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        return None;
    }
    Some(r as u32)
}

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
    /// A `RealXen` that knows no domain (no p2m or M2P entry, no runstate area): the
    /// placeholder in the entry's static `XenMmu` until the entry sets it up in place.
    pub(crate) const fn unset() -> RealXen {
        RealXen {
            p2m: core::ptr::null(),
            nr_pages: 0,
            m2p: core::ptr::null(),
            m2p_entries: 0,
            runstate: false,
        }
    }

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
    unsafe fn mmu_update(&mut self, reqs: &[MmuUpdate], done: &mut u32) -> i32 {
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
    unsafe fn mmuext_op(&mut self, ops: &[MmuextOp], done: &mut u32) -> i32 {
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
    unsafe fn update_va_mapping(&mut self, va: VirtAddr, val: u64, flags: u32) -> i32 {
        // SAFETY: by-value arguments only (the 64-bit PTE split lo/hi).
        unsafe {
            hypercall4(
                nr::UPDATE_VA_MAPPING,
                va.as_u32(),
                val as u32,
                (val >> 32) as u32,
                flags,
            )
        }
    }
    unsafe fn multicall(&mut self, calls: &mut [MulticallEntry]) -> i32 {
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
    unsafe fn mmu_then_mmuext(
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
        // SAFETY: the caller's contract covers both batches; `calls` names live buffers.
        let ret = unsafe { self.multicall(&mut calls) };
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
        if pfn.number() >= self.nr_pages {
            return None;
        }
        // SAFETY: the p2m list holds nr_pages entries and stays mapped.
        let mfn = unsafe { core::ptr::read_volatile(self.p2m.add(pfn.number() as usize)) };
        (mfn != u32::MAX).then_some(MachineFrame::new(mfn))
    }
    fn m2p(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        read_m2p(self.m2p, self.m2p_entries, mfn.number()).map(PhysFrame::new)
    }
    fn frame_ptr(&self, pfn: PhysFrame) -> *mut u8 {
        (VIRT_BASE as usize + ((pfn.number() as usize) << 12)) as *mut u8
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
}

impl BackendLog for RealXen {
    fn log(&mut self, args: fmt::Arguments<'_>) {
        let _ = writeln!(crate::console::Console, "{args}");
    }
}

impl RealXen {
    /// Entries of the M2P area (max_mfn + 1): [`Hypervisor::m2p`] reads none beyond.
    pub fn m2p_entries(&self) -> u32 {
        self.m2p_entries
    }
    /// M2P loads that faulted (an unmapped entry) and read as `None` instead.
    pub fn m2p_faults() -> u32 {
        M2P_FAULTS.load(core::sync::atomic::Ordering::Relaxed)
    }
}

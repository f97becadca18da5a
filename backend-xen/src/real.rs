//! The real hypercall layer: calls through the hypercall page Xen fills in (ELF note
//! HYPERCALL_PAGE for a PV guest; the CPUID-named MSR for a PVH guest), the p2m list from
//! start_info, and Xen's read-only M2P table. The free functions work for PV and PVH guests
//! alike (the same registers, the same page layout: 32 bytes per hypercall).

use crate::abi::{
    self, nr, MachphysMapping, MmuUpdate, MmuextOp, MulticallEntry, DOMID_SELF, VIRT_BASE,
};
use crate::hypervisor::Hypervisor;
use core::fmt::{self, Write};
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr};
use pvops_core::ops::PageFault;

unsafe extern "C" {
    static pvops_hypercall_page: [u8; 4096];
}

fn entry(nr: usize) -> usize {
    &raw const pvops_hypercall_page as usize + nr * 32
}

/// A hypercall with up to three arguments (ebx, ecx, edx). Xen may clobber argument registers.
///
/// # Safety
/// The arguments must be valid for hypercall `nr` (pointers to live buffers).
pub unsafe fn hypercall3(nr: usize, a1: u32, a2: u32, a3: u32) -> i32 {
    let ret: i32;
    // SAFETY: calls Xen's stub for `nr` in the hypercall page; the caller vouches for the args.
    unsafe {
        core::arch::asm!(
            "call *%edi",
            inout("edi") entry(nr) => _,
            inout("ebx") a1 => _,
            inout("ecx") a2 => _,
            inout("edx") a3 => _,
            lateout("eax") ret,
            options(att_syntax)
        );
    }
    ret
}

/// A hypercall with four arguments. LLVM reserves esi, Xen's 4th argument register: the
/// asm saves it, loads it from eax (which the stub overwrites with the call number anyway)
/// and restores it.
///
/// # Safety
/// As [`hypercall3`].
pub unsafe fn hypercall4(nr: usize, a1: u32, a2: u32, a3: u32, a4: u32) -> i32 {
    let ret: i32;
    // SAFETY: as hypercall3; esi is saved and restored around the call.
    unsafe {
        core::arch::asm!(
            "push %esi",
            "mov %eax, %esi",
            "call *%edi",
            "pop %esi",
            inout("edi") entry(nr) => _,
            inout("eax") a4 => ret,
            inout("ebx") a1 => _,
            inout("ecx") a2 => _,
            inout("edx") a3 => _,
            options(att_syntax)
        );
    }
    ret
}

/// The hypercall layer of a running 32-bit PV guest.
pub struct RealXen {
    p2m: *const u32,
    nr_pages: u32,
    m2p: *const u32,
    m2p_entries: u32,
}

impl RealXen {
    /// Uses the p2m list at virtual `mfn_list` (nr_pages entries) and Xen's M2P at
    /// `machphys.v_start`.
    ///
    /// # Safety
    /// `mfn_list` must be start_info's p2m list, mapped for the guest's whole life.
    pub unsafe fn new(mfn_list: u32, nr_pages: u32, machphys: &MachphysMapping) -> RealXen {
        RealXen {
            p2m: mfn_list as *const u32,
            nr_pages,
            m2p: machphys.v_start as *const u32,
            m2p_entries: machphys.max_mfn.saturating_add(1),
        }
    }
}

/// `memory_op(XENMEM_machphys_mapping)` without a RealXen (the entry needs it first).
pub fn machphys_mapping(out: &mut MachphysMapping) -> i32 {
    // SAFETY: `out` is a live 12-byte buffer Xen fills in.
    unsafe {
        hypercall3(
            nr::MEMORY_OP,
            abi::XENMEM_MACHPHYS_MAPPING,
            out as *mut _ as u32,
            0,
        )
    }
}

/// `sched_op(cmd, arg)`.
pub fn sched_op(cmd: u32, arg: &mut u32) -> i32 {
    // SAFETY: `arg` is a live 4-byte buffer (sched_shutdown's reason, or unused).
    unsafe { hypercall3(nr::SCHED_OP, cmd, arg as *mut u32 as u32, 0) }
}

/// `event_channel_op(EVTCHNOP_send, port)`.
pub fn evtchn_send(port: u32) -> i32 {
    let mut p = port;
    // SAFETY: `p` is a live struct evtchn_send.
    unsafe {
        hypercall3(
            nr::EVENT_CHANNEL_OP,
            abi::EVTCHNOP_SEND,
            &mut p as *mut u32 as u32,
            0,
        )
    }
}

/// `hvm_op(HVMOP_get_param, {DOMID_SELF, index})`: the parameter's value or the negated
/// errno (HVM and PVH guests).
pub fn hvm_get_param(index: u32) -> Result<u64, i32> {
    let mut p = abi::HvmParam {
        domid: DOMID_SELF,
        pad: 0,
        index,
        value: 0,
    };
    // SAFETY: `p` is a live struct xen_hvm_param that Xen reads and fills in.
    let ret = unsafe {
        hypercall3(
            nr::HVM_OP,
            abi::HVMOP_GET_PARAM,
            &mut p as *mut abi::HvmParam as u32,
            0,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(p.value)
    }
}

/// The hypercall page's virtual address (an HVM/PVH guest gives Xen its physical address
/// through the MSR CPUID names; a PV guest's builder fills it through the ELF note).
pub fn hypercall_page() -> usize {
    &raw const pvops_hypercall_page as usize
}

/// `console_io(CONSOLEIO_write, ...)` (dom0 only on a non-debug Xen).
pub fn console_io_write(s: &[u8]) -> i32 {
    // SAFETY: Xen reads `s.len()` bytes from `s`.
    unsafe {
        hypercall3(
            nr::CONSOLE_IO,
            abi::CONSOLEIO_WRITE,
            s.len() as u32,
            s.as_ptr() as u32,
        )
    }
}

/// `physdev_op(PHYSDEVOP_set_iopl, iopl)`.
pub fn set_iopl(iopl: u32) -> i32 {
    let mut v = iopl;
    // SAFETY: `v` is a live struct physdev_set_iopl.
    unsafe {
        hypercall3(
            nr::PHYSDEV_OP,
            abi::PHYSDEVOP_SET_IOPL,
            &mut v as *mut u32 as u32,
            0,
        )
    }
}

/// `set_trap_table(table)`; the table ends with a zero entry.
pub fn set_trap_table(table: &[abi::TrapInfo]) -> i32 {
    // SAFETY: Xen reads the table up to its zero-address terminator, which the caller provides.
    unsafe { hypercall3(nr::SET_TRAP_TABLE, table.as_ptr() as u32, 0, 0) }
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
        machphys_mapping(out)
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
    fn log(&mut self, args: fmt::Arguments<'_>) {
        let _ = writeln!(crate::console::Console, "{args}");
    }
}

//! The raw hypercalls: calls through the hypercall page Xen fills in (ELF note
//! HYPERCALL_PAGE for a PV guest; the CPUID-named MSR for a PVH guest), and the one-shot
//! hypercalls of the entries and the console. They work for PV and PVH guests alike (the
//! same registers, the same page layout: 32 bytes per hypercall). A leaf module: the console
//! and the `Hypervisor` implementation ([`crate::real`]) both sit on it.

use crate::abi::{self, nr, MachphysMapping, DOMID_SELF};

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
///
/// # Safety
/// `arg` must be the argument structure `cmd` expects (Xen reads, and for some commands
/// writes, as many bytes as that structure has, not just 4), and the command's effect on the
/// domain is the caller's to answer for. [`sched_yield`] and [`sched_shutdown`] are the safe
/// forms of the two commands the backends use.
pub unsafe fn sched_op(cmd: u32, arg: &mut u32) -> i32 {
    // SAFETY: the caller guarantees `arg` is what `cmd` reads.
    unsafe { hypercall3(nr::SCHED_OP, cmd, arg as *mut u32 as u32, 0) }
}

/// `sched_op(SCHEDOP_yield)`: gives the CPU back to Xen for a moment.
pub fn sched_yield() -> i32 {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { sched_op(abi::SCHEDOP_YIELD, &mut 0) }
}

/// `sched_op(SCHEDOP_shutdown, {reason})`: ends the domain (poweroff, crash, ...).
pub fn sched_shutdown(reason: u32) -> i32 {
    let mut r = reason;
    // SAFETY: struct sched_shutdown is one u32, the reason.
    unsafe { sched_op(abi::SCHEDOP_SHUTDOWN, &mut r) }
}

/// Ends the domain: `SCHEDOP_shutdown` with `SHUTDOWN_poweroff` (`pass`) or `SHUTDOWN_crash`;
/// should Xen return, yields forever.
pub fn shutdown(pass: bool) -> ! {
    let reason = if pass {
        abi::SHUTDOWN_POWEROFF
    } else {
        abi::SHUTDOWN_CRASH
    };
    let _ = sched_shutdown(reason);
    loop {
        let _ = sched_yield();
    }
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
///
/// # Safety
/// With an IOPL of 1 the kernel (ring 1) may touch any I/O port Xen lets dom0 reach: a device
/// programmed through a port can write memory behind the compiler's back. The caller takes
/// responsibility for every port access it then makes.
pub unsafe fn set_iopl(iopl: u32) -> i32 {
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
///
/// # Safety
/// The last entry of `table` must be the all-zero terminator (Xen reads up to it, past the
/// slice otherwise), and every other entry's handler must be code of this kernel that handles
/// that vector: Xen jumps there on the next exception.
pub unsafe fn set_trap_table(table: &[abi::TrapInfo]) -> i32 {
    // SAFETY: the caller guarantees the terminator and the handlers.
    unsafe { hypercall3(nr::SET_TRAP_TABLE, table.as_ptr() as u32, 0, 0) }
}

/// `vcpu_op(VCPUOP_register_runstate_memory_area, vcpu, {area})`: from now on Xen writes
/// vCPU `vcpu`'s runstate to `area` whenever it schedules it (and once right away).
///
/// # Safety
/// `area` must stay mapped at the same virtual address, writable and used for nothing else,
/// for the rest of the domain's life: Xen writes it behind the compiler's back.
pub unsafe fn register_runstate_area(vcpu: u32, area: *mut abi::VcpuRunstateInfo) -> i32 {
    let mut arg = abi::VcpuRegisterRunstateMemoryArea {
        addr: area as u32 as u64,
    };
    // SAFETY: `arg` is a live struct vcpu_register_runstate_memory_area; the caller vouches
    // for the area it names.
    unsafe {
        hypercall3(
            nr::VCPU_OP,
            abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
            vcpu,
            &mut arg as *mut abi::VcpuRegisterRunstateMemoryArea as u32,
        )
    }
}

/// `vcpu_op(VCPUOP_get_runstate_info, vcpu, &info)`: vCPU `vcpu`'s runstate as of now.
pub fn runstate_info(vcpu: u32) -> Result<abi::VcpuRunstateInfo, i32> {
    let mut info = abi::VcpuRunstateInfo::default();
    // SAFETY: `info` is a live 44-byte struct vcpu_runstate_info that Xen fills in.
    let ret = unsafe {
        hypercall3(
            nr::VCPU_OP,
            abi::VCPUOP_GET_RUNSTATE_INFO,
            vcpu,
            &mut info as *mut abi::VcpuRunstateInfo as u32,
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(info)
    }
}

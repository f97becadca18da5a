//! The Xen 4.17 guest ABI for a 32-bit PAE PV guest: numbers and `#[repr(C)]` structs, each
//! size and offset checked against the public headers (xen/include/public, x86_32).

use core::fmt;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// Hypercall numbers (`xen.h` `__HYPERVISOR_*`).
pub mod nr {
    /// set_trap_table
    pub const SET_TRAP_TABLE: usize = 0;
    /// mmu_update
    pub const MMU_UPDATE: usize = 1;
    /// update_va_mapping
    pub const UPDATE_VA_MAPPING: usize = 14;
    /// console_io
    pub const CONSOLE_IO: usize = 18;
    /// memory_op
    pub const MEMORY_OP: usize = 12;
    /// multicall
    pub const MULTICALL: usize = 13;
    /// mmuext_op
    pub const MMUEXT_OP: usize = 26;
    /// sched_op
    pub const SCHED_OP: usize = 29;
    /// event_channel_op
    pub const EVENT_CHANNEL_OP: usize = 32;
    /// physdev_op
    pub const PHYSDEV_OP: usize = 33;
    /// `__HYPERVISOR_hvm_op` (HVM and PVH guests).
    pub const HVM_OP: usize = 34;
    /// vcpu_op
    pub const VCPU_OP: usize = 24;
}

/// `mmu_update` sub-command in the low bits of `ptr`: a checked page-table write.
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7FF0;

/// `mmuext_op` commands.
pub mod mmuext {
    /// Pin an L1.
    pub const PIN_L1_TABLE: u32 = 0;
    /// Pin an L2.
    pub const PIN_L2_TABLE: u32 = 1;
    /// Pin an L3 (the PAE top level).
    pub const PIN_L3_TABLE: u32 = 2;
    /// Unpin.
    pub const UNPIN_TABLE: u32 = 4;
    /// Install a new top-level table (cr3).
    pub const NEW_BASEPTR: u32 = 5;
    /// Flush this vCPU's TLB.
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    /// invlpg on this vCPU.
    pub const INVLPG_LOCAL: u32 = 7;
}

/// `update_va_mapping` flag: invlpg the address.
pub const UVMF_INVLPG: u32 = 2;
/// `console_io` write.
pub const CONSOLEIO_WRITE: u32 = 0;
/// `sched_op` commands.
pub const SCHEDOP_YIELD: u32 = 0;
/// `sched_op` shutdown.
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// Shutdown reasons.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Crash.
pub const SHUTDOWN_CRASH: u32 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u32 = 4;
/// `XENMEM_machphys_mapping`.
pub const XENMEM_MACHPHYS_MAPPING: u32 = 12;
/// `PHYSDEVOP_set_iopl`.
pub const PHYSDEVOP_SET_IOPL: u32 = 6;
/// Ring-1 kernel code selector (`FLAT_KERNEL_CS`).
pub const FLAT_KERNEL_CS: u16 = 0xe019;
/// `start_info.flags`: this is the initial domain (dom0).
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `start_info.flags`: `mod_start` is a pfn, not a virtual address (xen/include/public/xen.h).
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// The magic of a 32-bit PAE guest's start_info.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_32p";
/// The guest's virtual base (ELF note VIRT_BASE).
pub const VIRT_BASE: u32 = 0xC000_0000;
/// The hole a 32-bit domU sees (`__HYPERVISOR_VIRT_START_PAE`); a lower limit on 64-bit Xen.
pub const HYPERVISOR_VIRT_START_PAE: u32 = 0xF580_0000;

/// `vcpu.h` `VCPUOP_register_runstate_memory_area`: Xen keeps a copy of this vCPU's
/// [`VcpuRunstateInfo`] at a guest virtual address, updated whenever the vCPU is scheduled.
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// `vcpu.h` `VCPUOP_get_runstate_info`: a copy of the vCPU's runstate as of now (the
/// current state's time counted up to the call).
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// `vcpu.h` `RUNSTATE_running`: the vCPU is running on a physical CPU.
pub const RUNSTATE_RUNNING: usize = 0;
/// `vcpu.h` `RUNSTATE_runnable`: runnable but another vCPU (dom0's, say) has the CPU.
pub const RUNSTATE_RUNNABLE: usize = 1;
/// `vcpu.h` `RUNSTATE_blocked`: waiting for an event.
pub const RUNSTATE_BLOCKED: usize = 2;
/// `vcpu.h` `RUNSTATE_offline`: not runnable (paused, down).
pub const RUNSTATE_OFFLINE: usize = 3;

/// `struct vcpu_runstate_info` as a 32-bit guest sees it (Xen's compat layout: `uint64_t`
/// is 4-aligned on x86_32), 44 bytes.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuRunstateInfo {
    /// The vCPU's current state (`RUNSTATE_*`).
    pub state: i32,
    /// Xen system time (ns) when it entered that state.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each `RUNSTATE_*` so far.
    pub time: [u64; 4],
}
const_assert_eq!(size_of::<VcpuRunstateInfo>(), 44);

impl VcpuRunstateInfo {
    /// Nanoseconds spent not running (runnable + blocked + offline) up to `state_entry_time`.
    /// Read while the vCPU runs, that is all of it: the running state's current stretch
    /// counts as running.
    pub fn not_running_ns(&self) -> u64 {
        let t = self.time;
        t[RUNSTATE_RUNNABLE]
            .wrapping_add(t[RUNSTATE_BLOCKED])
            .wrapping_add(t[RUNSTATE_OFFLINE])
    }
    /// Nanoseconds in all states: Xen system time since the vCPU's first state entry.
    pub fn total_ns(&self) -> u64 {
        let t = self.time;
        t.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }
    /// True while Xen is in the middle of writing the area (`XEN_RUNSTATE_UPDATE` in
    /// `state_entry_time`; only with `VMASST_TYPE_runstate_update_flag`, which pvops does
    /// not enable, but harmless to honour).
    pub fn updating(&self) -> bool {
        self.state_entry_time & XEN_RUNSTATE_UPDATE != 0
    }
}

/// `vcpu.h` `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` while Xen updates the area.
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;
const_assert_eq!(offset_of!(VcpuRunstateInfo, state_entry_time), 4);
const_assert_eq!(offset_of!(VcpuRunstateInfo, time), 12);

/// `struct vcpu_register_runstate_memory_area`: a union of the guest handle and a
/// `uint64_t`; Xen's compat layer refuses an address whose upper 32 bits are not zero.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest virtual address of the [`VcpuRunstateInfo`], zero-extended.
    pub addr: u64,
}
const_assert_eq!(size_of::<VcpuRegisterRunstateMemoryArea>(), 8);

/// `struct start_info` (x86_32), 1112 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StartInfo {
    /// `xen-<version>-<platform>`.
    pub magic: [u8; 32],
    /// Pages allocated to the domain.
    pub nr_pages: u32,
    /// Machine address of shared_info.
    pub shared_info: u32,
    /// SIF_* flags.
    pub flags: u32,
    /// Machine frame of the xenstore ring.
    pub store_mfn: u32,
    /// Its event channel.
    pub store_evtchn: u32,
    /// domU: machine frame of the console ring; dom0: info_off.
    pub console_mfn: u32,
    /// domU: console event channel; dom0: info_size.
    pub console_evtchn: u32,
    /// Virtual address of the bootstrap L3.
    pub pt_base: u32,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u32,
    /// Virtual address of the p2m list.
    pub mfn_list: u32,
    /// Initrd (virtual address or pfn).
    pub mod_start: u32,
    /// Initrd length.
    pub mod_len: u32,
    /// Command line, NUL-terminated.
    pub cmd_line: [u8; 1024],
    /// First pfn of the initial p2m table (INIT_P2M only).
    pub first_p2m_pfn: u32,
    /// Frames of it.
    pub nr_p2m_frames: u32,
}
const_assert_eq!(size_of::<StartInfo>(), 1112);
const_assert_eq!(offset_of!(StartInfo, nr_pages), 32);
const_assert_eq!(offset_of!(StartInfo, shared_info), 36);
const_assert_eq!(offset_of!(StartInfo, flags), 40);
const_assert_eq!(offset_of!(StartInfo, store_mfn), 44);
const_assert_eq!(offset_of!(StartInfo, console_mfn), 52);
const_assert_eq!(offset_of!(StartInfo, console_evtchn), 56);
const_assert_eq!(offset_of!(StartInfo, pt_base), 60);
const_assert_eq!(offset_of!(StartInfo, nr_pt_frames), 64);
const_assert_eq!(offset_of!(StartInfo, mfn_list), 68);
const_assert_eq!(offset_of!(StartInfo, mod_start), 72);
const_assert_eq!(offset_of!(StartInfo, cmd_line), 80);
const_assert_eq!(offset_of!(StartInfo, first_p2m_pfn), 1104);

impl StartInfo {
    /// Size of the structure in bytes.
    pub const SIZE: usize = size_of::<StartInfo>();

    /// Decodes a start_info from its bytes (x86 little-endian layout, as Xen writes it);
    /// `None` when `bytes` is shorter than [`StartInfo::SIZE`]. The safe entry point for host
    /// tests, Miri and the fuzzer; the boot itself reads the structure where Xen placed it.
    pub fn from_bytes(bytes: &[u8]) -> Option<StartInfo> {
        let b = bytes.get(..Self::SIZE)?;
        let word = |off: usize| u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
        let mut magic = [0; 32];
        magic.copy_from_slice(&b[..32]);
        let mut cmd_line = [0; 1024];
        let cmd = offset_of!(StartInfo, cmd_line);
        cmd_line.copy_from_slice(&b[cmd..cmd + 1024]);
        Some(StartInfo {
            magic,
            nr_pages: word(offset_of!(StartInfo, nr_pages)),
            shared_info: word(offset_of!(StartInfo, shared_info)),
            flags: word(offset_of!(StartInfo, flags)),
            store_mfn: word(offset_of!(StartInfo, store_mfn)),
            store_evtchn: word(offset_of!(StartInfo, store_evtchn)),
            console_mfn: word(offset_of!(StartInfo, console_mfn)),
            console_evtchn: word(offset_of!(StartInfo, console_evtchn)),
            pt_base: word(offset_of!(StartInfo, pt_base)),
            nr_pt_frames: word(offset_of!(StartInfo, nr_pt_frames)),
            mfn_list: word(offset_of!(StartInfo, mfn_list)),
            mod_start: word(offset_of!(StartInfo, mod_start)),
            mod_len: word(offset_of!(StartInfo, mod_len)),
            cmd_line,
            first_p2m_pfn: word(offset_of!(StartInfo, first_p2m_pfn)),
            nr_p2m_frames: word(offset_of!(StartInfo, nr_p2m_frames)),
        })
    }
}

/// `struct mmu_update`: 16 bytes on x86_32 too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// Machine address of the entry | sub-command.
    pub ptr: u64,
    /// New value.
    pub val: u64,
}
const_assert_eq!(size_of::<MmuUpdate>(), 16);
const_assert_eq!(offset_of!(MmuUpdate, val), 8);

/// `struct mmuext_op` (x86_32): 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuextOp {
    /// MMUEXT_* command.
    pub cmd: u32,
    /// mfn or linear_addr.
    pub arg1: u32,
    /// nr_ents / vcpumask / src_mfn.
    pub arg2: u32,
}
const_assert_eq!(size_of::<MmuextOp>(), 12);
const_assert_eq!(offset_of!(MmuextOp, arg1), 4);
const_assert_eq!(offset_of!(MmuextOp, arg2), 8);

/// `struct multicall_entry` (x86_32): 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticallEntry {
    /// Hypercall number.
    pub op: u32,
    /// Its result.
    pub result: u32,
    /// Arguments (Xen honours 5).
    pub args: [u32; 6],
}
const_assert_eq!(size_of::<MulticallEntry>(), 32);
const_assert_eq!(offset_of!(MulticallEntry, args), 8);

/// `struct xencons_interface` (Xen 4.17: no `connection` field): 3088 bytes.
#[repr(C)]
pub struct XenconsInterface {
    /// Input ring.
    pub input: [u8; 1024],
    /// Output ring.
    pub output: [u8; 2048],
    /// Input consumer index.
    pub in_cons: u32,
    /// Input producer index.
    pub in_prod: u32,
    /// Output consumer index (xenconsoled).
    pub out_cons: u32,
    /// Output producer index (the guest).
    pub out_prod: u32,
}
const_assert_eq!(size_of::<XenconsInterface>(), 3088);
const_assert_eq!(offset_of!(XenconsInterface, output), 1024);
const_assert_eq!(offset_of!(XenconsInterface, in_cons), 3072);
const_assert_eq!(offset_of!(XenconsInterface, out_cons), 3080);
const_assert_eq!(offset_of!(XenconsInterface, out_prod), 3084);

/// `struct xen_machphys_mapping` (x86_32): where the M2P table sits, i.e. the hole start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachphysMapping {
    /// Start of the M2P (= the hypervisor hole for this guest).
    pub v_start: u32,
    /// End of the M2P.
    pub v_end: u32,
    /// Largest mfn the M2P covers.
    pub max_mfn: u32,
}
const_assert_eq!(size_of::<MachphysMapping>(), 12);

/// `hvm_op` sub-command: read an HVM parameter of a domain (`hvm/hvm_op.h`).
pub const HVMOP_GET_PARAM: u32 = 1;
/// HVM parameter: the pfn of the PV console ring (`hvm/params.h`).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// HVM parameter: the event channel of the PV console.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// `struct xen_hvm_param`: 16 bytes (domid, pad, index, value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmParam {
    /// The domain (`DOMID_SELF`).
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// Which parameter (`HVM_PARAM_*`).
    pub index: u32,
    /// Its value (out for get_param).
    pub value: u64,
}
const_assert_eq!(size_of::<HvmParam>(), 16);
const_assert_eq!(offset_of!(HvmParam, index), 4);
const_assert_eq!(offset_of!(HvmParam, value), 8);

/// First CPUID leaf of the hypervisor range Xen may answer at (it can sit at any multiple of
/// 0x100 up to 0x40010000 when Xen emulates another hypervisor's leaves too).
pub const CPUID_XEN_FIRST_BASE: u32 = 0x4000_0000;
/// Last CPUID base searched.
pub const CPUID_XEN_LAST_BASE: u32 = 0x4001_0000;
/// The signature in ebx, ecx, edx of the base leaf.
pub const CPUID_XEN_SIGNATURE: &[u8; 12] = b"XenVMMXenVMM";

/// `struct trap_info` (x86_32): 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    /// Exception vector.
    pub vector: u8,
    /// Bits 0-1: DPL; bit 2: mask events on entry.
    pub flags: u8,
    /// Code selector.
    pub cs: u16,
    /// Handler address.
    pub address: u32,
}
const_assert_eq!(size_of::<TrapInfo>(), 8);
const_assert_eq!(offset_of!(TrapInfo, cs), 2);
const_assert_eq!(offset_of!(TrapInfo, address), 4);

/// A Xen errno (hypercalls return its negation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// EPERM
    pub const EPERM: Errno = Errno(1);
    /// ENOENT
    pub const ENOENT: Errno = Errno(2);
    /// ESRCH
    pub const ESRCH: Errno = Errno(3);
    /// EINTR
    pub const EINTR: Errno = Errno(4);
    /// EIO
    pub const EIO: Errno = Errno(5);
    /// EAGAIN
    pub const EAGAIN: Errno = Errno(11);
    /// ENOMEM
    pub const ENOMEM: Errno = Errno(12);
    /// EACCES
    pub const EACCES: Errno = Errno(13);
    /// EFAULT
    pub const EFAULT: Errno = Errno(14);
    /// EBUSY
    pub const EBUSY: Errno = Errno(16);
    /// EEXIST
    pub const EEXIST: Errno = Errno(17);
    /// ENODEV
    pub const ENODEV: Errno = Errno(19);
    /// EINVAL
    pub const EINVAL: Errno = Errno(22);
    /// ENOSPC
    pub const ENOSPC: Errno = Errno(28);
    /// ERANGE
    pub const ERANGE: Errno = Errno(34);
    /// ENOSYS
    pub const ENOSYS: Errno = Errno(38);
    /// EOPNOTSUPP
    pub const EOPNOTSUPP: Errno = Errno(95);

    /// The errno a raw hypercall return value carries, if negative.
    pub const fn from_ret(ret: i32) -> Option<Errno> {
        if ret < 0 {
            Some(Errno(-ret))
        } else {
            None
        }
    }

    /// The errno's name (`EBUSY`), or `E?` for one pvops does not know.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            7 => "E2BIG",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            19 => "ENODEV",
            22 => "EINVAL",
            28 => "ENOSPC",
            34 => "ERANGE",
            38 => "ENOSYS",
            61 => "ENODATA",
            75 => "EOVERFLOW",
            95 => "EOPNOTSUPP",
            _ => "E?",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name() == "E?" {
            write!(f, "E?({})", self.0)
        } else {
            f.write_str(self.name())
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

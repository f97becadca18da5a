//! platform-pvh: pvops as a Xen PVH guest, the third entry protocol of one kernel image.
//!
//! Under PVH the page tables are the hardware's (Xen virtualises them with shadow paging or
//! HAP), so the MMU is backend-native's `Native`, unchanged: its raw PAE
//! stores, its bootstrap stub, its IDT, and the kernel main registered with
//! `backend_native::register_kernel!`. What is Xen's is the platform around it:
//!
//! - the entry: `XEN_ELFNOTE_PHYS32_ENTRY`, 32-bit protected mode, paging off,
//!   `ebx` = the physical address of `struct hvm_start_info` ([`start_info`] validates it);
//! - the memory map, the command line and the modules, from `hvm_start_info`;
//! - the hypercall page, found through the CPUID leaves at 0x40000000 and the MSR they name;
//! - the console: port 0xe9 first, then the PV console ring (`HVMOP_get_param`
//!   `HVM_PARAM_CONSOLE_PFN`/`_EVTCHN`), mapped through backend-native's fixmap;
//! - the exit: `SCHEDOP_shutdown` (poweroff on PASS, crash on FAIL).
//!
//! The hypercall, console and shutdown code is backend-xen's (`backend_xen::real`,
//! `backend_xen::console`): a PVH guest calls the same hypercall-page stubs with the same
//! registers as a PV guest. This crate depends on both backends; neither depends on it, and
//! pvops-core knows none of them.
//!
//! A kernel links it with `use platform_pvh as _;` and `EXTERN(pvops_pvh_entry)` in its
//! linker script; it needs no registration of its own.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod start_info;

pub use start_info::{parse, PvhError, PvhStartInfo};

/// The platform of a PVH boot (`platform=xen-pvh` in the result lines).
pub const PLATFORM_XEN_PVH: pvops_core::boot::PlatformInfo = pvops_core::boot::PlatformInfo {
    name: "xen-pvh",
    entry:
        "PVH (XEN_ELFNOTE_PHYS32_ENTRY, 32-bit protected mode, paging off, ebx = hvm_start_info)",
};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the ELF note type of the PVH entry's physical address.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

cfg_if::cfg_if! {
    if #[cfg(all(target_arch = "x86", target_os = "none"))] {
        mod entry;
        pub use entry::HypercallPageError;
    }
}

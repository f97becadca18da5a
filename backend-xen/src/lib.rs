//! backend-xen: pvops as a 32-bit PAE Xen PV guest (`xen-3.0-x86_32p`).
//!
//! The same kernel image carries Xen's ELF notes and a ring-1 entry (`esi` = start_info).
//! [`mmu::XenMmu`] implements [`pvops_core::MmuOps`] over the [`hypervisor::Hypervisor`]
//! trait: every page-table write is an `mmu_update` with machine addresses from the p2m list
//! (batched in lazy mode), every page-table frame is read-only in every mapping before Xen
//! validates it, the kernel's L3 is pinned and installed with `MMUEXT_NEW_BASEPTR`, and
//! `start_info.pt_base` is unpinned once the kernel's table is live (Linux 2b5407811db7).
//! The real hypercall page implements the trait on the guest; a model of Xen's rules
//! implements it in the host tests.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod abi;
pub mod counters;
pub mod hypervisor;
pub mod mmu;
pub mod options;
pub mod pool;
pub mod start_info;

pub use counters::XenCounters;
pub use hypervisor::{BackendLog, Hypervisor, MixedResult};
pub use mmu::{XenError, XenMmu, XenOp};
pub use options::XenOptions;
pub use start_info::{StartInfoError, XenBootFacts};

use pvops_core::addr::{FrameRange, PhysAddr, PAGE_SIZE};
use pvops_core::boot::{BootInfo, IoremapProbe};
use pvops_core::mem::{MemoryMap, RegionKind};
use pvops_core::registry::{BackendDescriptor, BACKENDS};

#[doc(hidden)]
pub use pvops_core::linkme;

#[linkme::distributed_slice(BACKENDS)]
#[linkme(crate = pvops_core::linkme)]
static XEN_BACKEND: BackendDescriptor = BackendDescriptor { name: "xen" };

/// The platform of a Xen PV guest.
pub const PLATFORM_XEN_PV: pvops_core::boot::PlatformInfo = pvops_core::boot::PlatformInfo {
    name: "xen-pv",
    entry: "Xen PV (XEN_ELFNOTE_ENTRY, ring 1, paging on, esi = start_info)",
};

/// Bytes of start_info that early_ioremap reads back (magic, nr_pages, shared_info, flags...).
pub const PROBE_LEN: u64 = 64;

/// The [`BootInfo`] of a Xen guest: all `nr_pages` usable, the builder's structures and the
/// boot stack below `first_free`, start_info, the p2m list, the rings and the module reserved, the bootstrap table's frames, start_info as the early_ioremap probe,
/// and `table_pool` (frames inside the image for early page tables; see [`pool`]).
pub fn boot_info<'a, H: Hypervisor + BackendLog>(
    mmu: &XenMmu<H>,
    facts: &'a XenBootFacts<'a>,
    kernel_image: FrameRange,
    table_pool: FrameRange,
) -> BootInfo<'a> {
    let mut memory = MemoryMap::new();
    // A single region that cannot be empty, wrap or overlap: nr_pages was validated.
    let _ = memory.add(
        PhysAddr::new(0),
        facts.nr_pages as u64 * PAGE_SIZE,
        RegionKind::Usable,
    );
    BootInfo {
        platform: PLATFORM_XEN_PV,
        memory,
        cmdline: facts.cmdline,
        first_free: facts.first_free,
        bootstrap_reach: mmu.reach(),
        bootstrap_tables: facts.bootstrap_tables,
        kernel_image,
        table_pool,
        probe: Some(IoremapProbe {
            addr: facts.start_info.start(),
            len: PROBE_LEN,
            what: "start_info",
        }),
        reserved: facts.reserved,
        modules: facts.module.as_slice(),
    }
}

cfg_if::cfg_if! {
    if #[cfg(all(target_arch = "x86", target_os = "none"))] {
        pub mod console;
        mod entry;
        pub mod hypercall;
        pub mod real;
        pub use real::RealXen;

        /// The kernel main(s) registered for the Xen backend (one expected): a
        /// kernel adds itself with `pvops::register_kernel!` (or
        /// `pvops_core::register_kernel_for!`).
        #[linkme::distributed_slice]
        #[linkme(crate = pvops_core::linkme)]
        pub static XEN_KERNEL: [fn(pvops_core::registry::Handoff<'_, XenMmu<RealXen>>) -> pvops_core::registry::Outcome];
    }
}

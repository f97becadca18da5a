//! backend-native: pvops on bare metal (multiboot1, 32-bit PAE, ring 0).
//!
//! Linked into a kernel image, it supplies the multiboot header and entry stub, a bootstrap
//! PAE table (2 MiB pages over the first 64 MiB, identity and at 0xC0000000, deliberately not
//! covering the early_ioremap window), COM1, an IDT that reports faults as a FAIL line, and
//! the [`pvops_core::MmuOps`] implementation whose `set_pte` is two plain stores.
//!
//! The hardware parts exist only on the freestanding i686 target; the multiboot parser and the
//! layout are plain code and are tested on the host.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod counters;
pub mod error;
pub mod fixmap;
pub mod multiboot;
pub mod store;

pub use error::NativeError;
use pvops_core::addr::VirtAddr;
use pvops_core::ops::MemoryLayout;
use pvops_core::registry::{BackendDescriptor, BACKENDS};

#[doc(hidden)]
pub use pvops_core::linkme;

/// Virtual address of physical 0.
pub const PAGE_OFFSET: u32 = 0xC000_0000;
/// The bare-metal layout: 896 MiB of lowmem as in Linux 32-bit, a vmalloc-like scratch area
/// 8 MiB above it, and the early_ioremap window near the top (fixmap-like).
pub const LAYOUT: MemoryLayout = MemoryLayout {
    page_offset: VirtAddr::new(PAGE_OFFSET),
    lowmem_limit: 896 * 1024 * 1024,
    ioremap_window: VirtAddr::new(0xFF80_0000),
    scratch_area: VirtAddr::new(0xF880_0000),
    lowmem_formula: "Linux 32-bit lowmem: 4 GiB - 0xC0000000 - 128 MiB vmalloc reserve",
    hypervisor_start: None,
};
/// Bytes the bootstrap table maps (2 MiB pages, from physical 0).
pub const BOOTSTRAP_MAPPED: u64 = 64 * 1024 * 1024;
/// isa-debug-exit value for PASS (QEMU exits with status 33).
pub const EXIT_PASS: u8 = 0x10;
/// isa-debug-exit value for FAIL (QEMU exits with status 35).
pub const EXIT_FAIL: u8 = 0x11;

#[linkme::distributed_slice(BACKENDS)]
#[linkme(crate = pvops_core::linkme)]
static NATIVE_BACKEND: BackendDescriptor = BackendDescriptor { name: "native" };

/// The platform of a multiboot1 boot on bare hardware (or bare QEMU).
pub const PLATFORM_BARE: pvops_core::boot::PlatformInfo = pvops_core::boot::PlatformInfo {
    name: "bare",
    entry: "multiboot1 (32-bit protected mode, paging off, ebx = multiboot info)",
};

cfg_if::cfg_if! {
    if #[cfg(all(target_arch = "x86", target_os = "none"))] {
        mod entry;
        mod idt;
        mod mmu;
        pub mod pic;
        mod tss;
        pub mod serial;
        pub use entry::{bootstrap_tables, kernel_image};
        pub use idt::TrapPlatform;
        pub use mmu::Native;

        /// The trap handling of every entry that runs the native MMU in ring 0 (bare metal,
        /// Xen PVH): the IDT, whose 32 exception gates end the run with a FAIL line through
        /// the kernel's fatal handler, and the double-fault task (vector 8 a task gate to its
        /// own TSS, stack and cr3, which follows every `write_cr3`), so that a fault whose
        /// frame cannot be pushed still prints instead of ending in a triple fault. A fault
        /// inside the fault printer ends through `platform`. Call once at entry, interrupts
        /// off, before anything can trap. (The 8259s are bare metal's alone: see [`pic`].)
        pub fn install_traps(platform: TrapPlatform) {
            idt::install(platform);
            tss::install();
        }


        /// The kernel main(s) registered for the native backend (one expected): a
        /// kernel adds itself with `pvops::register_kernel!` (or
        /// `pvops_core::register_kernel_for!`).
        #[linkme::distributed_slice]
        #[linkme(crate = pvops_core::linkme)]
        pub static NATIVE_KERNEL: [fn(pvops_core::registry::Handoff<'_, Native>) -> pvops_core::registry::Outcome];

        /// The last step of an entry that runs the native MMU (bare metal, Xen PVH): builds
        /// [`Native`] over the bootstrap table (`reach` frames mapped, `bootstrap_tables`
        /// its frames) and runs the kernel registered for the native backend with `info`
        /// and `console`; `None` when no kernel is registered.
        pub fn run_native_kernel(
            reach: pvops_core::addr::PhysFrame,
            bootstrap_tables: pvops_core::addr::FrameRange,
            info: &pvops_core::boot::BootInfo<'_>,
            console: &mut dyn core::fmt::Write,
        ) -> Option<pvops_core::registry::Outcome> {
            let main = NATIVE_KERNEL.first()?;
            let mut native = Native::new(reach, bootstrap_tables, &info.memory);
            Some(main(pvops_core::registry::Handoff {
                platform: &mut native,
                info,
                console,
            }))
        }
    }
}

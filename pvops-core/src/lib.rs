//! pvops-core: a paravirt-ops MMU layer for 32-bit PAE kernels.
//!
//! One boot path ([`boot::boot`]) is written once against the [`ops::MmuOps`] trait (Linux's
//! `pv_mmu_ops`) and runs on bare metal and as a Xen PV guest. The layer makes the two bugs
//! that broke Linux 2.6.25-rc1 as a Xen PAE domU structural:
//! - [`ioremap::EarlyIoremap`] walks the table `read_cr3` returns, never a static kernel table;
//! - the backend's `pagetable_setup_done` retires the bootstrap table (under Xen: unpins
//!   `start_info.pt_base`) before its frames go back to the allocator.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod addr;
pub mod boot;
pub mod boot_input;
pub mod cmdline;
pub mod frame_alloc;
pub mod handoff;
pub mod ioremap;
pub mod mapper;
pub mod mem;
pub mod ops;
pub mod options;
pub mod pae;
pub mod paging;
pub mod registry;
pub mod space;
pub mod trap;
pub mod walk;

pub use linkme;

pub use addr::{FrameRange, MachineAddr, MachineFrame, PhysAddr, PhysFrame, VirtAddr, PAGE_SIZE};
pub use ops::{Counters, LazyMmu, MemoryLayout, MmuOps, PageFault, Platform};
pub use paging::{EntrySlot, Level, PageTable, PageTableEntry, PteFlags};

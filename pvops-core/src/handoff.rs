//! What a backend's entry hands the boot path and the kernel (a leaf module: the boot path,
//! the registry and the backends all depend on it, it depends on none of them).

use crate::addr::{FrameRange, PhysAddr, PhysFrame};
use crate::mem::{MemoryMap, Reservations};

/// Something the boot path must read back through early_ioremap and compare with what the
/// bootstrap mapping shows (native: the multiboot info; Xen: the console ring).
#[derive(Clone, Copy, Debug)]
pub struct IoremapProbe {
    /// Pseudo-physical address of the bytes.
    pub addr: PhysAddr,
    /// How many bytes to compare (at most 64).
    pub len: u64,
    /// What it is, for the log.
    pub what: &'static str,
}

/// A module the loader placed in memory (a multiboot module, a Xen initrd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModule {
    /// Its first byte (pseudo-physical).
    pub start: PhysAddr,
    /// Its length in bytes.
    pub len: u64,
}

/// The machine a kernel runs on and how its loader entered it: the `platform=` of the
/// result lines and the banner's entry protocol. Separate from the MMU backend: a PVH guest
/// runs the native MMU (`backend=native`) on Xen's platform (`platform=xen-pvh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformInfo {
    /// `bare`, `xen-pv` or `xen-pvh`.
    pub name: &'static str,
    /// The entry protocol, e.g. `multiboot1 (protected mode, paging off, ebx = multiboot info)`.
    pub entry: &'static str,
}

/// What the backend's entry code learned about the machine.
#[derive(Clone, Debug)]
pub struct BootInfo<'a> {
    /// The platform and the entry protocol that started the kernel.
    pub platform: PlatformInfo,
    /// The memory map (pseudo-physical).
    pub memory: MemoryMap,
    /// The guest command line.
    pub cmdline: &'a str,
    /// First frame not used by the kernel image or by loader structures.
    pub first_free: PhysFrame,
    /// Frames below this are reachable through the bootstrap table.
    pub bootstrap_reach: PhysFrame,
    /// The bootstrap table's frames (read-only under Xen; freed after the switch).
    pub bootstrap_tables: FrameRange,
    /// The kernel image's frames (always mapped).
    pub kernel_image: FrameRange,
    /// Frames inside the image reserved for early page tables (backend-xen's `pool`), handed
    /// to page tables only, before any other frame; empty when the bootstrap table reaches
    /// enough free memory (native).
    pub table_pool: FrameRange,
    /// What early_ioremap maps and checks.
    pub probe: Option<IoremapProbe>,
    /// Memory the loader filled (boot information, memory map, command line, modules...):
    /// never handed out by the frame allocator; one `mem: reserved` line each at boot.
    pub reserved: Reservations,
    /// The modules the loader passed, in order.
    pub modules: &'a [BootModule],
}

/// What a backend hands the kernel's main: the platform, what the entry learned, a console.
pub struct Handoff<'a, P> {
    /// The backend (ops table and machine access).
    pub platform: &'a mut P,
    /// Memory map, command line, bootstrap-table facts.
    pub info: &'a BootInfo<'a>,
    /// The console (serial on native, the console ring or console_io under Xen).
    pub console: &'a mut dyn core::fmt::Write,
}

/// How the kernel's run ended; the backend turns it into an exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything passed.
    Pass,
    /// Something failed (and was printed).
    Fail,
}

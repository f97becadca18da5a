//! How a simulated machine is configured: RAM size, p2m, bootstrap table, holes, command line.

use super::*;

/// How pseudo-physical frames map to machine frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2m {
    /// mfn = pfn (bare metal).
    Identity,
    /// mfn = pfn ^ mask. Permutes frames inside 2 MiB chunks when the mask has bits below 9,
    /// so it needs [`BootstrapStyle::Small4K`].
    Xor(u32),
    /// mfn = pfn + offset (offset a multiple of 512 keeps 2 MiB pages possible).
    Offset(u32),
}

impl P2m {
    /// The machine frame of `pfn` (no range check).
    pub const fn to_machine(self, pfn: u32) -> u32 {
        match self {
            P2m::Identity => pfn,
            P2m::Xor(m) => pfn ^ m,
            P2m::Offset(o) => pfn.wrapping_add(o),
        }
    }
    /// The pseudo-physical frame of `mfn` (no range check), `None` when no pfn maps there.
    pub const fn to_phys(self, mfn: u32) -> Option<u32> {
        match self {
            P2m::Identity => Some(mfn),
            P2m::Xor(m) => Some(mfn ^ m),
            P2m::Offset(o) => mfn.checked_sub(o),
        }
    }
}

/// How the sim's bootstrap table maps the first 64 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapStyle {
    /// PDPT + one page directory of 2 MiB pages (the native multiboot stub).
    Huge2M,
    /// PDPT + one page directory + 32 L1 tables of 4 KiB pages (what Xen hands a PV guest).
    Small4K,
}

/// The machine to build.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// RAM size in MiB (at least 8).
    pub ram_mib: u32,
    /// The p2m.
    pub p2m: P2m,
    /// How the bootstrap table is built.
    pub bootstrap: BootstrapStyle,
    /// Reserved ranges `(start, len)` carved out of usable RAM above 1 MiB (page aligned).
    pub holes: Vec<(u64, u64)>,
    /// The kernel image's frames.
    pub kernel_image: FrameRange,
    /// The layout the sim reports.
    pub layout: MemoryLayout,
    /// The command line in the boot info.
    pub cmdline: &'static str,
    /// `frame_ptr` answers only for frames the live table maps in the direct map.
    pub strict_reach: bool,
    /// EFER.NXE: when off, bit 63 in an entry is a reserved-bit fault.
    pub nx: bool,
}

impl SimConfig {
    /// A QEMU-like multiboot machine with `ram_mib` MiB of RAM, identity p2m, native
    /// bootstrap table and layout.
    pub fn new(ram_mib: u32) -> SimConfig {
        SimConfig {
            ram_mib,
            p2m: P2m::Identity,
            bootstrap: BootstrapStyle::Huge2M,
            holes: Vec::new(),
            kernel_image: DEFAULT_KERNEL_IMAGE,
            layout: NATIVE_LAYOUT,
            cmdline: "/kernel console=ttyS0",
            strict_reach: true,
            nx: false,
        }
    }
    /// Sets the p2m.
    pub fn p2m(mut self, p2m: P2m) -> Self {
        self.p2m = p2m;
        self
    }
    /// Sets the bootstrap table style.
    pub fn bootstrap(mut self, style: BootstrapStyle) -> Self {
        self.bootstrap = style;
        self
    }
    /// Adds a reserved hole `[start, start + len)` in high memory.
    pub fn hole(mut self, start: u64, len: u64) -> Self {
        self.holes.push((start, len));
        self
    }
    /// Sets the command line.
    pub fn cmdline(mut self, cmdline: &'static str) -> Self {
        self.cmdline = cmdline;
        self
    }
    /// Sets the reported layout.
    pub fn layout(mut self, layout: MemoryLayout) -> Self {
        self.layout = layout;
        self
    }
    /// Builds the machine.
    pub fn build(self) -> SimMachine {
        SimMachine::new(self)
    }
}

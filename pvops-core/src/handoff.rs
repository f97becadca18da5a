//! What a backend's entry hands the boot path and the kernel (a leaf module: the boot path,
//! the registry and the backends all depend on it, it depends on none of them).

use crate::addr::{FrameRange, PhysAddr, PhysFrame};
use crate::mem::{MemoryMap, Reservations};
use core::fmt;

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

/// Which range of a [`BootInfo`] a [`BootInfoError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootRange {
    /// `kernel_image`.
    KernelImage,
    /// `bootstrap_tables`.
    BootstrapTables,
    /// `table_pool`.
    TablePool,
}

impl BootRange {
    /// The field's name.
    pub const fn name(self) -> &'static str {
        match self {
            BootRange::KernelImage => "kernel_image",
            BootRange::BootstrapTables => "bootstrap_tables",
            BootRange::TablePool => "table_pool",
        }
    }
}

/// Why [`BootInfo::validate`] refused a `BootInfo`: its ranges would make the frame allocator
/// hand out (or the boot path free) frames something else still uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// A range is not wholly RAM of the memory map.
    NotRam {
        /// Which range.
        which: BootRange,
        /// Its frames.
        range: FrameRange,
    },
    /// A range reaches `first_free` or beyond, where the allocator hands frames out: the
    /// image would be handed out, the bootstrap table handed out while live.
    AtOrAboveFirstFree {
        /// Which range.
        which: BootRange,
        /// Its frames.
        range: FrameRange,
        /// `first_free`.
        first_free: PhysFrame,
    },
    /// The early page-table pool is not inside the kernel image (frames of the image are
    /// the only ones nothing else may claim before `first_free`).
    PoolOutsideImage {
        /// `table_pool`.
        pool: FrameRange,
        /// `kernel_image`.
        image: FrameRange,
    },
    /// The pool and the bootstrap table share frames: a live table would be handed out
    /// as a new one.
    PoolOverlapsBootstrap {
        /// `table_pool`.
        pool: FrameRange,
        /// `bootstrap_tables`.
        bootstrap: FrameRange,
    },
    /// A range overlaps memory the loader filled (a reservation), which must stay intact.
    OverlapsReserved {
        /// Which range.
        which: BootRange,
        /// Its frames.
        range: FrameRange,
        /// The reservation's name.
        what: &'static str,
    },
    /// The live table at entry (`read_cr3`) is not one of `bootstrap_tables`, so those
    /// frames are not the bootstrap table that `pagetable_setup_done` retires.
    RootOutsideBootstrap {
        /// The live root.
        root: PhysFrame,
        /// `bootstrap_tables`.
        bootstrap: FrameRange,
    },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |r: &FrameRange| (r.start, r.end);
        match self {
            Self::NotRam { which, range } => {
                let (a, b) = r(range);
                write!(f, "boot info: {} pfn {a}..{b} is not RAM", which.name())
            }
            Self::AtOrAboveFirstFree {
                which,
                range,
                first_free,
            } => {
                let (a, b) = r(range);
                write!(
                    f,
                    "boot info: {} pfn {a}..{b} reaches first_free pfn {first_free}",
                    which.name()
                )
            }
            Self::PoolOutsideImage { pool, image } => write!(
                f,
                "boot info: table_pool pfn {}..{} is not inside kernel_image pfn {}..{}",
                pool.start, pool.end, image.start, image.end
            ),
            Self::PoolOverlapsBootstrap { pool, bootstrap } => write!(
                f,
                "boot info: table_pool pfn {}..{} overlaps bootstrap_tables pfn {}..{}",
                pool.start, pool.end, bootstrap.start, bootstrap.end
            ),
            Self::OverlapsReserved { which, range, what } => {
                let (a, b) = r(range);
                write!(
                    f,
                    "boot info: {} pfn {a}..{b} overlaps reserved {what}",
                    which.name()
                )
            }
            Self::RootOutsideBootstrap { root, bootstrap } => write!(
                f,
                "boot info: live root pfn {root} is not in bootstrap_tables pfn {}..{}",
                bootstrap.start, bootstrap.end
            ),
        }
    }
}

impl BootInfo<'_> {
    /// Checks the ranges the boot path trusts with memory: the kernel image, the bootstrap
    /// table (freed after the switch) and the early table pool (handed out as page tables)
    /// must be RAM and below `first_free` (the allocator hands out only frames at or above
    /// it); the pool must lie inside the image and off the bootstrap table; neither the pool
    /// nor the bootstrap table may overlap loader data. [`crate::boot::boot`] runs this
    /// first (and also checks that the live root at entry is a bootstrap frame).
    pub fn validate(&self) -> Result<(), BootInfoError> {
        let ranges = [
            (BootRange::KernelImage, self.kernel_image),
            (BootRange::BootstrapTables, self.bootstrap_tables),
            (BootRange::TablePool, self.table_pool),
        ];
        for (which, range) in ranges {
            if range.is_empty() {
                continue;
            }
            if !self
                .memory
                .ram_frames_below(u64::MAX)
                .any(|ram| ram.covers(&range))
            {
                return Err(BootInfoError::NotRam { which, range });
            }
            if range.end > self.first_free {
                return Err(BootInfoError::AtOrAboveFirstFree {
                    which,
                    range,
                    first_free: self.first_free,
                });
            }
        }
        let (pool, image, bootstrap) = (self.table_pool, self.kernel_image, self.bootstrap_tables);
        if !image.covers(&pool) {
            return Err(BootInfoError::PoolOutsideImage { pool, image });
        }
        if pool.overlaps(&bootstrap) {
            return Err(BootInfoError::PoolOverlapsBootstrap { pool, bootstrap });
        }
        for (which, range) in [ranges[1], ranges[2]] {
            let (lo, hi) = (range.start.start().as_u64(), range.end.start().as_u64());
            if let Some(res) = self
                .reserved
                .iter()
                .find(|res| res.start.as_u64() < hi && lo < res.end && !range.is_empty())
            {
                return Err(BootInfoError::OverlapsReserved {
                    which,
                    range,
                    what: res.what,
                });
            }
        }
        Ok(())
    }
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

//! What the boot path returns (its report or its error) and the state it keeps between stages.

use super::{Stage, StageFigures, BOOT_STAGES};
use crate::addr::{FrameRange, PhysAddr, PhysFrame};
use crate::handoff::BootInfoError;
use crate::ioremap::IoremapError;
use crate::mapper::MapError;
use crate::mem::{AllocError, FrameAllocator, MemoryMapError};
use crate::ops::PageFault;
use core::fmt;
use core::sync::atomic::Ordering;

/// Why the boot failed: the stage and the reason.
#[derive(Debug)]
pub struct BootError<E> {
    /// Where.
    pub stage: Stage,
    /// Why.
    pub kind: BootErrorKind<E>,
}

/// The reason of a [`BootError`].
#[derive(Debug)]
pub enum BootErrorKind<E> {
    /// early_ioremap refused or failed.
    Ioremap(IoremapError<E>),
    /// A page-table walk or change failed.
    Map(MapError<E>),
    /// The frame allocator failed.
    Alloc(AllocError),
    /// The backend failed (e.g. a hypercall).
    Backend(E),
    /// A (simulated) page fault.
    Fault(PageFault),
    /// Bytes read through one mapping differ from the same bytes through another.
    Mismatch {
        /// What was compared.
        what: &'static str,
        /// Byte offset of the first difference.
        offset: usize,
        /// Expected byte.
        expected: u8,
        /// Byte found.
        found: u8,
    },
    /// The allocator did not give back the frame expected.
    WrongFrame {
        /// Expected frame.
        expected: PhysFrame,
        /// Frame returned.
        got: PhysFrame,
    },
    /// `read_cr3` does not return the table just installed.
    Cr3Mismatch {
        /// Installed root.
        expected: PhysFrame,
        /// What read_cr3 returned.
        got: PhysFrame,
    },
    /// No usable RAM below the lowmem limit.
    NoLowmem,
    /// The memory map minus the reserved ranges does not fit a map.
    Memory(MemoryMapError),
    /// The backend's `BootInfo` is inconsistent (see [`crate::boot::BootInfo::validate`]).
    BootInfo(BootInfoError),
    /// The early_ioremap probe lies beyond what a frame number can name.
    ProbeOutOfRange {
        /// The probe's address.
        addr: PhysAddr,
    },
}

impl<E: fmt::Display> fmt::Display for BootErrorKind<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ioremap(e) => write!(f, "{e}"),
            Self::Map(e) => write!(f, "{e}"),
            Self::Alloc(e) => write!(f, "{e}"),
            Self::Backend(e) => write!(f, "{e}"),
            Self::Fault(pf) => write!(f, "{pf}"),
            Self::Mismatch { what, offset, expected, found } => write!(
                f,
                "content mismatch in {what} at byte {offset}: expected {expected:#04x}, found {found:#04x}"
            ),
            Self::WrongFrame { expected, got } => {
                write!(f, "allocator returned pfn {got}, expected released pfn {expected}")
            }
            Self::Cr3Mismatch { expected, got } => {
                write!(f, "read_cr3 returns pfn {got} after write_cr3 of pfn {expected}")
            }
            Self::NoLowmem => write!(f, "no usable RAM below the lowmem limit"),
            Self::Memory(e) => write!(f, "{e}"),
            Self::BootInfo(e) => write!(f, "{e}"),
            Self::ProbeOutOfRange { addr } => {
                write!(f, "early_ioremap probe pa={addr} has no frame number")
            }
        }
    }
}

impl<E: fmt::Display> fmt::Display for BootError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage={}: {}", self.stage.name(), self.kind)
    }
}

/// Figures of a successful boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootReport<C> {
    /// The kernel's root table (live at the end).
    pub root: PhysFrame,
    /// The root that was live at entry (the bootstrap table).
    pub bootstrap_root: PhysFrame,
    /// Bytes of usable RAM in the direct map.
    pub lowmem_mapped: u64,
    /// Bytes of usable RAM above the lowmem limit (not mapped).
    pub lowmem_not_mapped: u64,
    /// L1 entries written by build_direct_map.
    pub direct_map_ptes: u32,
    /// L1 tables of the direct map (window included).
    pub direct_map_tables: u32,
    /// The bootstrap frames `pagetable_setup_done` released to the allocator.
    pub reused: FrameRange,
    /// Cycles and counters of each stage, in [`BOOT_STAGES`] order.
    pub stages: [StageFigures<C>; BOOT_STAGES.len()],
}

impl<C: crate::ops::Counters> BootReport<C> {
    /// Cycles of all stages.
    pub fn total_cycles(&self) -> u64 {
        self.stages.iter().map(|s| s.cycles).sum()
    }
    /// Hypercalls of all stages.
    pub fn total_hypercalls(&self) -> u64 {
        self.stages.iter().map(|s| s.counters.hypercalls()).sum()
    }
    /// The figures of boot-path stage `stage` (`None` for a stage that is not the boot
    /// path's).
    pub fn stage(&self, stage: Stage) -> Option<StageFigures<C>> {
        Some(self.stages[stage.position()?])
    }
}

/// State the boot path keeps between stages; the kernel owns it (it is large: keep it in a
/// static, not on a small stack).
pub struct BootState {
    /// The frame allocator.
    pub alloc: FrameAllocator,
}

impl BootState {
    /// Empty state; the banner stage fills it.
    pub const fn new() -> BootState {
        BootState {
            alloc: FrameAllocator::empty(),
        }
    }
}

/// The boot state every kernel needs, kept here so kernels do not each write a static.
struct StateCell(
    core::cell::UnsafeCell<BootState>,
    core::sync::atomic::AtomicBool,
);
// SAFETY: `take_boot_state` hands out the only reference, once.
unsafe impl Sync for StateCell {}
static BOOT_STATE: StateCell = StateCell(
    core::cell::UnsafeCell::new(BootState::new()),
    core::sync::atomic::AtomicBool::new(false),
);

/// The image's one [`BootState`] (about 33 KiB, in .bss), handed out once; `None` after.
pub fn take_boot_state() -> Option<&'static mut BootState> {
    if BOOT_STATE.1.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the flag guarantees this is the only reference ever made to the state.
    Some(unsafe { &mut *BOOT_STATE.0.get() })
}

impl Default for BootState {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> From<MapError<E>> for BootErrorKind<E> {
    fn from(e: MapError<E>) -> Self {
        BootErrorKind::Map(e)
    }
}
impl<E> From<IoremapError<E>> for BootErrorKind<E> {
    fn from(e: IoremapError<E>) -> Self {
        BootErrorKind::Ioremap(e)
    }
}
impl<E> From<BootInfoError> for BootErrorKind<E> {
    fn from(e: BootInfoError) -> Self {
        BootErrorKind::BootInfo(e)
    }
}

impl<E> From<AllocError> for BootErrorKind<E> {
    fn from(e: AllocError) -> Self {
        BootErrorKind::Alloc(e)
    }
}

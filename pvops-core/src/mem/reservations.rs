//! Ranges of RAM the loader filled (boot information, memory map, command line, modules)
//! that the frame allocator must never hand out.

use crate::addr::PhysAddr;
use core::fmt;

/// Most ranges a [`Reservations`] list holds.
pub const MAX_RESERVATIONS: usize = 24;

/// A range of RAM the loader (or the hypervisor's domain builder) filled and the kernel must
/// not hand out: the boot information, the memory map, the command line, modules...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: u64,
    /// What it holds, for the `mem: reserved <what>` line.
    pub what: &'static str,
}

/// Why a range could not be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// More than [`MAX_RESERVATIONS`] ranges.
    Full {
        /// What did not fit.
        what: &'static str,
    },
    /// `start + len` wraps past 2^64.
    Wraps {
        /// What it is.
        what: &'static str,
        /// Its start.
        start: PhysAddr,
    },
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { what } => write!(
                f,
                "cannot reserve {what}: more than {MAX_RESERVATIONS} reserved ranges"
            ),
            Self::Wraps { what, start } => write!(f, "reserved range {what} at {start} wraps"),
        }
    }
}

/// Loader memory the frame allocator must not hand out, kept sorted by start: the one record
/// of it, for every entry (multiboot, Xen PV, PVH fill `BootInfo::reserved` with it). The boot
/// path prints each range as `mem: reserved <what> pa=..`, checks the kernel's own ranges
/// against it (`BootInfo::validate`) and gives the allocator the map
/// [`MemoryMap::without`](super::MemoryMap::without) these ranges. The memory map itself keeps
/// them as RAM, so the direct map covers them (the kernel reads its modules through it).
#[derive(Clone, Copy, Debug)]
pub struct Reservations {
    list: [Reservation; MAX_RESERVATIONS],
    len: usize,
}

impl Default for Reservations {
    fn default() -> Self {
        Self::new()
    }
}

impl Reservations {
    /// No reservations.
    pub const fn new() -> Reservations {
        Reservations {
            list: [Reservation {
                start: PhysAddr::new(0),
                end: 0,
                what: "",
            }; MAX_RESERVATIONS],
            len: 0,
        }
    }

    /// Reserves `len` bytes at `start` (nothing when `len` is 0).
    pub fn add(
        &mut self,
        what: &'static str,
        start: PhysAddr,
        len: u64,
    ) -> Result<(), ReserveError> {
        if len == 0 {
            return Ok(());
        }
        let end = start
            .as_u64()
            .checked_add(len)
            .ok_or(ReserveError::Wraps { what, start })?;
        if self.len == MAX_RESERVATIONS {
            return Err(ReserveError::Full { what });
        }
        let at = self.list[..self.len]
            .iter()
            .position(|r| r.start.as_u64() > start.as_u64())
            .unwrap_or(self.len);
        self.list.copy_within(at..self.len, at + 1);
        self.list[at] = Reservation { start, end, what };
        self.len += 1;
        Ok(())
    }

    /// The ranges, sorted by start.
    pub fn iter(&self) -> impl Iterator<Item = &Reservation> {
        self.list[..self.len].iter()
    }

    /// How many ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

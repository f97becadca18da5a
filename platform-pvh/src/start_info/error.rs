//! Why [`super::parse`] refuses an `hvm_start_info`: one variant per check, each naming the
//! address or count it refused.

use super::{CMDLINE_MAX, MAGIC, MAX_MEMMAP_ENTRIES, MAX_MODULES, VERSION};
use core::fmt;
use pvops_core::mem::{MemoryMapError, ReserveError};

/// Why an `hvm_start_info` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// A structure the loader pointed at is not readable (outside what the entry maps, or
    /// its address range wraps).
    Unreadable {
        /// What it is.
        what: &'static str,
        /// Its physical address.
        addr: u64,
        /// Bytes needed there.
        len: u64,
    },
    /// Offset 0 does not hold [`MAGIC`].
    BadMagic(u32),
    /// Version 0: no memory map (the loader is older than Xen 4.11's PVH ABI).
    Version0,
    /// A version this parser does not know.
    UnknownVersion(u32),
    /// `memmap_paddr` is 0 or `memmap_entries` is 0 or above [`MAX_MEMMAP_ENTRIES`].
    MemmapCount {
        /// `memmap_paddr`.
        addr: u64,
        /// `memmap_entries`.
        entries: u32,
    },
    /// The memory-map table runs past the end of the physical address space.
    MemmapRange {
        /// `memmap_paddr`.
        addr: u64,
        /// `memmap_entries`.
        entries: u32,
    },
    /// A memory-map entry is inconsistent (overlaps another, wraps) or there are too many.
    MemmapEntry {
        /// Its index in the table.
        index: u32,
        /// What is wrong.
        error: MemoryMapError,
    },
    /// The memory map names no RAM at all.
    NoRam,
    /// A command line is not NUL-terminated within [`CMDLINE_MAX`] bytes, or not UTF-8.
    BadCmdline {
        /// Its physical address.
        addr: u64,
    },
    /// More than [`MAX_MODULES`] modules, or a module count without a module list.
    Modules {
        /// `nr_modules`.
        nr: u32,
        /// `modlist_paddr`.
        addr: u64,
    },
    /// A module's range wraps past the end of the physical address space.
    ModuleRange {
        /// Its index in the module list.
        index: u32,
        /// Its physical address.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// A boot structure could not be listed as reserved (its range wraps, or the list is full).
    Reserve {
        /// The structure.
        what: &'static str,
        /// Why the list refused it.
        error: ReserveError,
    },
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { what, addr, len } => {
                write!(f, "hvm_start_info: {what} at {addr:#x} (+{len:#x}) is not readable")
            }
            Self::BadMagic(m) => {
                write!(f, "hvm_start_info: magic {m:#x}, expected {MAGIC:#x}")
            }
            Self::Version0 => write!(f, "hvm_start_info: version 0 has no memory map"),
            Self::UnknownVersion(v) => {
                write!(f, "hvm_start_info: unknown version {v} (this kernel reads version {VERSION})")
            }
            Self::MemmapCount { addr, entries } => write!(
                f,
                "hvm_start_info: memory map at {addr:#x} with {entries} entries (needs 1..={MAX_MEMMAP_ENTRIES})"
            ),
            Self::MemmapRange { addr, entries } => write!(
                f,
                "hvm_start_info: memory map at {addr:#x} with {entries} entries runs past the address space"
            ),
            Self::MemmapEntry { index, error } => {
                write!(f, "hvm_start_info: memory map entry {index}: {error}")
            }
            Self::NoRam => write!(f, "hvm_start_info: the memory map has no RAM entry"),
            Self::BadCmdline { addr } => write!(
                f,
                "hvm_start_info: command line at {addr:#x} is not NUL-terminated UTF-8 within {CMDLINE_MAX} bytes"
            ),
            Self::Modules { nr, addr } => write!(
                f,
                "hvm_start_info: {nr} modules at {addr:#x} (at most {MAX_MODULES}, with a module list)"
            ),
            Self::ModuleRange { index, addr, size } => write!(
                f,
                "hvm_start_info: module {index} at {addr:#x} (+{size:#x}) runs past the address space"
            ),
            Self::Reserve { what, error } => {
                write!(f, "hvm_start_info: reserving the {what}: {error}")
            }
        }
    }
}

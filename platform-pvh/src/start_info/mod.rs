//! `struct hvm_start_info` (Xen `arch-x86/hvm/start_info.h`): validation and what pvops takes
//! from it: the memory map, the command line, the modules, and the boot structures to keep
//! away from the frame allocator (the boot path's one list of them, [`Reservations`]: the map
//! keeps them as RAM, in the direct map).
//!
//! [`parse`] is a plain function over a reader of physical memory (`read(addr, len)` returns
//! exactly `len` bytes or `None`), so host tests and fuzzers run it on byte buffers. It never
//! panics and never trusts an address or a count before checking it.

mod error;
#[cfg(test)]
mod tests;

pub use error::PvhError;

use pvops_core::addr::PhysAddr;
use pvops_core::boot_input::{u32_at, u64_at};
use pvops_core::mem::{MemoryMap, RegionKind, Reservations};

/// `XEN_HVM_START_MAGIC_VALUE`, at offset 0.
pub const MAGIC: u32 = 0x336e_c578;
/// The version this parser reads (1 added the memory map).
pub const VERSION: u32 = 1;
/// Bytes of `struct hvm_start_info` in version 1.
pub const INFO_LEN: usize = 56;
/// Bytes of the version-0 part (up to `rsdp_paddr`).
pub const INFO_LEN_V0: usize = 40;
/// Bytes of `struct hvm_memmap_table_entry` (addr, size, type, reserved).
pub const MEMMAP_ENTRY_LEN: usize = 24;
/// Bytes of `struct hvm_modlist_entry` (paddr, size, cmdline_paddr, reserved).
pub const MODLIST_ENTRY_LEN: usize = 32;
/// Most memory-map entries accepted (Xen's toolstack writes fewer than 10).
pub const MAX_MEMMAP_ENTRIES: u32 = 128;
/// Most modules accepted.
pub const MAX_MODULES: usize = 8;
/// Longest command line read (bytes including the NUL), as Xen's `MAX_GUEST_CMDLINE`.
pub const CMDLINE_MAX: usize = 1024;
/// `XEN_HVM_MEMMAP_TYPE_RAM`; every other type is kept away from the allocator.
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// Most reservations listed: start_info, memmap, cmdline, modlist, each module and its
/// command line.
pub const MAX_RESERVATIONS: usize = 4 + 2 * MAX_MODULES;
// Every one of them fits the boot path's list.
const _: () = assert!(MAX_RESERVATIONS <= pvops_core::mem::MAX_RESERVATIONS);

/// A boot module named by the module list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module<'a> {
    /// Physical address of its data.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its command line ("" when absent).
    pub cmdline: &'a str,
}

/// A validated `hvm_start_info`.
#[derive(Clone, Debug)]
pub struct PvhStartInfo<'a> {
    /// Its physical address.
    pub addr: u64,
    /// `version`.
    pub version: u32,
    /// `flags` (SIF_*).
    pub flags: u32,
    /// `rsdp_paddr` (0 when absent).
    pub rsdp: u64,
    /// `memmap_entries`: entries in the loader's memory-map table.
    pub memmap_entries: u32,
    memmap_table: &'a [u8],
    /// The memory map as Xen wrote it (its RAM in the direct map, loader data included).
    pub memory: MemoryMap,
    /// The command line ("" when absent).
    pub cmdline: &'a str,
    modules: [Module<'a>; MAX_MODULES],
    nr_modules: usize,
    reservations: Reservations,
}

impl<'a> PvhStartInfo<'a> {
    /// The loader's memory-map entries as it wrote them: `(addr, size, type)`.
    pub fn memmap(&self) -> impl Iterator<Item = (u64, u64, u32)> + 'a {
        self.memmap_table
            .chunks_exact(MEMMAP_ENTRY_LEN)
            .map(|e| (u64_at(e, 0), u64_at(e, 8), u32_at(e, 16)))
    }

    /// The boot modules.
    pub fn modules(&self) -> &[Module<'a>] {
        &self.modules[..self.nr_modules]
    }
    /// The loader structures and modules, sorted by address: what the frame allocator must not
    /// hand out (the PVH entry's `BootInfo::reserved`).
    pub fn reservations(&self) -> &Reservations {
        &self.reservations
    }

    fn reserve(&mut self, what: &'static str, start: u64, len: u64) -> Result<(), PvhError> {
        // The list has room for every structure parse() reserves (MAX_RESERVATIONS).
        self.reservations
            .add(what, PhysAddr::new(start), len)
            .map_err(|error| PvhError::Reserve { what, error })
    }
}

/// Reads `len` bytes at `addr`, refusing a range that wraps.
fn read_exact<'a>(
    read: &dyn Fn(u64, usize) -> Option<&'a [u8]>,
    what: &'static str,
    addr: u64,
    len: usize,
) -> Result<&'a [u8], PvhError> {
    let unreadable = PvhError::Unreadable {
        what,
        addr,
        len: len as u64,
    };
    addr.checked_add(len as u64).ok_or(unreadable)?;
    read(addr, len).filter(|b| b.len() == len).ok_or(unreadable)
}

/// A NUL-terminated UTF-8 string at `addr`: at most [`CMDLINE_MAX`] bytes, or up to the end of
/// its page when the reader cannot give that many (a reader maps whole pages).
fn read_cstr<'a>(
    read: &dyn Fn(u64, usize) -> Option<&'a [u8]>,
    what: &'static str,
    addr: u64,
) -> Result<&'a str, PvhError> {
    let to_page_end = (4096 - (addr % 4096)) as usize;
    let raw = read_exact(read, what, addr, CMDLINE_MAX)
        .or_else(|_| read_exact(read, what, addr, to_page_end.min(CMDLINE_MAX)))?;
    let end = raw
        .iter()
        .position(|b| *b == 0)
        .ok_or(PvhError::BadCmdline { addr })?;
    core::str::from_utf8(&raw[..end]).map_err(|_| PvhError::BadCmdline { addr })
}

/// Validates the `hvm_start_info` at physical `addr` and everything it points to. `read(addr,
/// len)` returns the `len` bytes at a physical address, or `None` when they are not reachable.
pub fn parse<'a>(
    addr: u64,
    read: &dyn Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<PvhStartInfo<'a>, PvhError> {
    let head = read_exact(read, "hvm_start_info", addr, INFO_LEN_V0)?;
    let magic = u32_at(head, 0);
    if magic != MAGIC {
        return Err(PvhError::BadMagic(magic));
    }
    let version = u32_at(head, 4);
    match version {
        0 => return Err(PvhError::Version0),
        VERSION => {}
        v => return Err(PvhError::UnknownVersion(v)),
    }
    let info = read_exact(read, "hvm_start_info", addr, INFO_LEN)?;
    let (flags, nr_modules, modlist, cmdline_pa, rsdp) = (
        u32_at(info, 8),
        u32_at(info, 12),
        u64_at(info, 16),
        u64_at(info, 24),
        u64_at(info, 32),
    );
    let (memmap, entries) = (u64_at(info, 40), u32_at(info, 48));

    // The memory map.
    if memmap == 0 || entries == 0 || entries > MAX_MEMMAP_ENTRIES {
        return Err(PvhError::MemmapCount {
            addr: memmap,
            entries,
        });
    }
    let table_len = entries as usize * MEMMAP_ENTRY_LEN;
    if memmap.checked_add(table_len as u64).is_none() {
        return Err(PvhError::MemmapRange {
            addr: memmap,
            entries,
        });
    }
    let table = read_exact(read, "memmap", memmap, table_len)?;
    let mut memory = MemoryMap::new();
    for (i, e) in table.chunks_exact(MEMMAP_ENTRY_LEN).enumerate() {
        let (start, size, kind) = (u64_at(e, 0), u64_at(e, 8), u32_at(e, 16));
        if size == 0 {
            continue;
        }
        let kind = if kind == MEMMAP_TYPE_RAM {
            RegionKind::Usable
        } else {
            RegionKind::Reserved
        };
        memory
            .add(PhysAddr::new(start), size, kind)
            .map_err(|error| PvhError::MemmapEntry {
                index: i as u32,
                error,
            })?;
    }

    if memory.usable_bytes() == 0 {
        return Err(PvhError::NoRam);
    }
    let cmdline = if cmdline_pa == 0 {
        ""
    } else {
        read_cstr(read, "cmdline", cmdline_pa)?
    };

    let mut out = PvhStartInfo {
        addr,
        version,
        flags,
        rsdp,
        memmap_entries: entries,
        memmap_table: table,
        memory,
        cmdline,
        modules: [Module::default(); MAX_MODULES],
        nr_modules: 0,
        reservations: Reservations::new(),
    };
    out.reserve("hvm_start_info", addr, INFO_LEN as u64)?;
    out.reserve("memmap", memmap, table_len as u64)?;
    if cmdline_pa != 0 {
        out.reserve("cmdline", cmdline_pa, cmdline.len() as u64 + 1)?;
    }

    // The modules.
    if nr_modules as usize > MAX_MODULES || (nr_modules != 0 && modlist == 0) {
        return Err(PvhError::Modules {
            nr: nr_modules,
            addr: modlist,
        });
    }
    if nr_modules != 0 {
        let list_len = nr_modules as usize * MODLIST_ENTRY_LEN;
        let list = read_exact(read, "modlist", modlist, list_len)?;
        for (i, e) in list.chunks_exact(MODLIST_ENTRY_LEN).enumerate() {
            let (m_addr, size, m_cmdline) = (u64_at(e, 0), u64_at(e, 8), u64_at(e, 16));
            if m_addr.checked_add(size).is_none() {
                return Err(PvhError::ModuleRange {
                    index: i as u32,
                    addr: m_addr,
                    size,
                });
            }
            let cmdline = if m_cmdline == 0 {
                ""
            } else {
                read_cstr(read, "module cmdline", m_cmdline)?
            };
            out.modules[i] = Module {
                addr: m_addr,
                size,
                cmdline,
            };
            out.nr_modules = i + 1;
        }
        out.reserve("modlist", modlist, list_len as u64)?;
        for i in 0..out.nr_modules {
            let m = out.modules[i];
            out.reserve("module", m.addr, m.size)?;
            if m_cmdline_addr(list, i) != 0 {
                out.reserve(
                    "module cmdline",
                    m_cmdline_addr(list, i),
                    m.cmdline.len() as u64 + 1,
                )?;
            }
        }
    }
    Ok(out)
}

fn m_cmdline_addr(list: &[u8], i: usize) -> u64 {
    u64_at(list, i * MODLIST_ENTRY_LEN + 16)
}

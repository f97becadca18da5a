//! `struct hvm_start_info` (Xen `arch-x86/hvm/start_info.h`): validation and what pvops takes
//! from it: the memory map, the command line, the modules, and the boot structures to keep
//! away from the frame allocator (marked [`RegionKind::BootData`]: still in the direct map).
//!
//! [`parse`] is a plain function over a reader of physical memory (`read(addr, len)` returns
//! exactly `len` bytes or `None`), so host tests and fuzzers run it on byte buffers. It never
//! panics and never trusts an address or a count before checking it.

use core::fmt;
use pvops_core::addr::PhysAddr;
use pvops_core::mem::{MemoryMap, MemoryMapError, RegionKind};

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
    /// Reserving a boot structure split the memory map into too many regions.
    Reserve {
        /// The structure.
        what: &'static str,
        /// The memory map's error.
        error: MemoryMapError,
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

/// A range of physical memory the loader's structures occupy, reserved in the memory map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// What it holds (`hvm_start_info`, `memmap`, `cmdline`, `modlist`, `module`, ...).
    pub what: &'static str,
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub len: u64,
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
    /// The memory map, with every loader structure and module reserved.
    pub memory: MemoryMap,
    /// The command line ("" when absent).
    pub cmdline: &'a str,
    modules: [Module<'a>; MAX_MODULES],
    nr_modules: usize,
    reservations: [Reservation; MAX_RESERVATIONS],
    nr_reservations: usize,
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
    /// The loader structures and modules reserved in [`PvhStartInfo::memory`], in the order
    /// they were found.
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations[..self.nr_reservations]
    }

    fn reserve(&mut self, what: &'static str, start: u64, len: u64) -> Result<(), PvhError> {
        if len == 0 {
            return Ok(());
        }
        self.memory
            .reserve(PhysAddr::new(start), len)
            .map_err(|error| PvhError::Reserve { what, error })?;
        // The list has room for every structure parse() reserves (MAX_RESERVATIONS).
        if let Some(slot) = self.reservations.get_mut(self.nr_reservations) {
            *slot = Reservation { what, start, len };
            self.nr_reservations += 1;
        }
        Ok(())
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u32_at(b, off) as u64 | (u32_at(b, off + 4) as u64) << 32
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
        reservations: [Reservation::default(); MAX_RESERVATIONS],
        nr_reservations: 0,
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

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use pvops_core::addr::{FrameRange, PhysFrame};
    use pvops_core::mem::FrameAllocator;
    use std::vec::Vec;

    const SI: u64 = 0x1000;
    const MEMMAP: u64 = 0x2000;
    const CMDLINE: u64 = 0x3000;
    const MODLIST: u64 = 0x4000;

    /// A 64 KiB "physical memory" holding an hvm_start_info, its memory map, command line and
    /// module list.
    struct Image {
        mem: Vec<u8>,
    }

    impl Image {
        fn new(memmap: &[(u64, u64, u32)], cmdline: &[u8]) -> Image {
            let mut img = Image {
                mem: std::vec![0u8; 0x10000],
            };
            img.put32(SI, MAGIC);
            img.put32(SI + 4, 1);
            img.put64(SI + 24, CMDLINE);
            img.put64(SI + 40, MEMMAP);
            img.put32(SI + 48, memmap.len() as u32);
            for (i, (a, s, t)) in memmap.iter().enumerate() {
                let o = MEMMAP + (i * MEMMAP_ENTRY_LEN) as u64;
                img.put64(o, *a);
                img.put64(o + 8, *s);
                img.put32(o + 16, *t);
            }
            let c = CMDLINE as usize;
            img.mem[c..c + cmdline.len()].copy_from_slice(cmdline);
            img
        }
        fn put32(&mut self, at: u64, v: u32) {
            let a = at as usize;
            self.mem[a..a + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn put64(&mut self, at: u64, v: u64) {
            let a = at as usize;
            self.mem[a..a + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn parse(&self) -> Result<PvhStartInfo<'_>, PvhError> {
            let read = |a: u64, l: usize| {
                let a = usize::try_from(a).ok()?;
                self.mem.get(a..a.checked_add(l)?)
            };
            parse(SI, &read)
        }
    }

    /// The table Xen 4.17.5 wrote for a 64 MiB PVH domU here, in its order (`cargo xtask demo
    /// xen-pvh` prints it): RAM from 0 (no legacy hole), the special pages (console ring,
    /// xenstore, ...) reserved, the ACPI tables and the RSDP as type 3; not sorted.
    const XEN_64M: [(u64, u64, u32); 5] = [
        (0, 0x400_0000, 1),
        (0xfeff_8000, 0x8000, 2),
        (0xfc00_8000, 0x40, 3),
        (0xfc00_0000, 0x1000, 3),
        (0xfc00_1000, 0x7000, 3),
    ];

    #[test]
    fn a_well_formed_start_info() {
        let mut img = Image::new(&XEN_64M, b"pvops.batch=4\0");
        img.put32(SI + 12, 1);
        img.put64(SI + 16, MODLIST);
        img.put64(MODLIST, 0x8000);
        img.put64(MODLIST + 8, 0x1800);
        img.put64(MODLIST + 16, 0x5000);
        img.mem[0x5000..0x5004].copy_from_slice(b"rd\0\0");
        let si = img.parse().unwrap();
        assert_eq!(si.version, 1);
        assert_eq!(si.cmdline, "pvops.batch=4");
        assert_eq!(si.modules().len(), 1);
        assert_eq!(si.modules()[0].cmdline, "rd");
        let whats: Vec<_> = si
            .reservations()
            .iter()
            .map(|r| (r.what, r.start, r.len))
            .collect();
        assert_eq!(
            whats,
            [
                ("hvm_start_info", SI, 56),
                ("memmap", MEMMAP, 120),
                ("cmdline", CMDLINE, 14),
                ("modlist", MODLIST, 32),
                ("module", 0x8000, 0x1800),
                ("module cmdline", 0x5000, 3),
            ]
        );
        assert_eq!(
            si.memory.usable_bytes(),
            0x400_0000 - (56 + 120 + 14 + 32 + 0x1800 + 3)
        );
        // The allocator never hands out a frame that holds a loader structure or module.
        let mut a = FrameAllocator::new(
            &si.memory,
            PhysFrame::new(0),
            PhysFrame::new(0x20),
            FrameRange::EMPTY,
        );
        let mut got = Vec::new();
        while let Ok(f) = a.alloc() {
            got.push(f.number());
        }
        for f in [1, 2, 3, 4, 5, 8, 9] {
            assert!(!got.contains(&f), "frame {f:#x} handed out: {got:x?}");
        }
        assert!(got.contains(&6) && got.contains(&7) && got.contains(&0xa));
    }

    #[test]
    fn bad_magic() {
        let mut img = Image::new(&XEN_64M, b"\0");
        img.put32(SI, 0x1bad_b002);
        assert_eq!(img.parse().unwrap_err(), PvhError::BadMagic(0x1bad_b002));
    }

    #[test]
    fn version_0_and_unknown_versions() {
        let mut img = Image::new(&XEN_64M, b"\0");
        img.put32(SI + 4, 0);
        assert_eq!(img.parse().unwrap_err(), PvhError::Version0);
        img.put32(SI + 4, 2);
        assert_eq!(img.parse().unwrap_err(), PvhError::UnknownVersion(2));
        img.put32(SI + 4, u32::MAX);
        assert_eq!(img.parse().unwrap_err(), PvhError::UnknownVersion(u32::MAX));
    }

    #[test]
    fn memmap_pointer_out_of_range() {
        let mut img = Image::new(&XEN_64M, b"\0");
        img.put64(SI + 40, 0x20_0000);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::Unreadable {
                what: "memmap",
                addr: 0x20_0000,
                len: 120
            }
        );
        img.put64(SI + 40, u64::MAX - 16);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::MemmapRange {
                addr: u64::MAX - 16,
                entries: 5
            }
        );
        img.put64(SI + 40, 0);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::MemmapCount {
                addr: 0,
                entries: 5
            }
        );
        // Straddling the end of what the reader maps.
        img.put64(SI + 40, 0x10000 - 24);
        assert!(matches!(
            img.parse().unwrap_err(),
            PvhError::Unreadable { what: "memmap", .. }
        ));
    }

    #[test]
    fn memmap_count_out_of_range() {
        let mut img = Image::new(&XEN_64M, b"\0");
        img.put32(SI + 48, 0);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::MemmapCount {
                addr: MEMMAP,
                entries: 0
            }
        );
        img.put32(SI + 48, MAX_MEMMAP_ENTRIES + 1);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::MemmapCount {
                addr: MEMMAP,
                entries: MAX_MEMMAP_ENTRIES + 1
            }
        );
        // In range for the parser, but the table runs past the reader's memory.
        img.put32(SI + 48, MAX_MEMMAP_ENTRIES);
        img.put64(SI + 40, 0xfe00);
        assert!(matches!(
            img.parse().unwrap_err(),
            PvhError::Unreadable { what: "memmap", .. }
        ));
        // Readable, but all zero (no entry of any size): no RAM.
        img.put64(SI + 40, 0xf000);
        assert_eq!(img.parse().unwrap_err(), PvhError::NoRam);
    }

    #[test]
    fn overlapping_and_wrapping_entries() {
        let img = Image::new(&[(0, 0x400_0000, 1), (0x3ff_f000, 0x2000, 2)], b"\0");
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::MemmapEntry {
                index: 1,
                error: MemoryMapError::Overlap {
                    first: PhysAddr::new(0),
                    second: PhysAddr::new(0x3ff_f000)
                }
            }
        );
        let img = Image::new(&[(0, 0x400_0000, 1), (u64::MAX - 0xfff, 0x2000, 2)], b"\0");
        assert!(matches!(
            img.parse().unwrap_err(),
            PvhError::MemmapEntry {
                index: 1,
                error: MemoryMapError::Wraps { .. }
            }
        ));
    }

    #[test]
    fn bad_command_lines_and_modules() {
        let mut img = Image::new(&XEN_64M, &[b'x'; 1500]);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::BadCmdline { addr: CMDLINE }
        );
        img.mem[CMDLINE as usize..CMDLINE as usize + 3].copy_from_slice(&[0xff, 0xfe, 0]);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::BadCmdline { addr: CMDLINE }
        );
        img.mem[CMDLINE as usize] = 0;
        img.put32(SI + 12, MAX_MODULES as u32 + 1);
        img.put64(SI + 16, MODLIST);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::Modules {
                nr: MAX_MODULES as u32 + 1,
                addr: MODLIST
            }
        );
        img.put32(SI + 12, 1);
        img.put64(MODLIST, u64::MAX - 1);
        img.put64(MODLIST + 8, 2);
        assert_eq!(
            img.parse().unwrap_err(),
            PvhError::ModuleRange {
                index: 0,
                addr: u64::MAX - 1,
                size: 2
            }
        );
    }

    #[test]
    fn start_info_itself_unreadable() {
        let img = Image::new(&XEN_64M, b"\0");
        let read = |a: u64, l: usize| {
            let a = usize::try_from(a).ok()?;
            img.mem.get(a..a.checked_add(l)?)
        };
        assert_eq!(
            parse(0xfff0, &read).unwrap_err(),
            PvhError::Unreadable {
                what: "hvm_start_info",
                addr: 0xfff0,
                len: 40
            }
        );
        assert!(matches!(
            parse(u64::MAX - 8, &read).unwrap_err(),
            PvhError::Unreadable { .. }
        ));
    }

    /// Random corruption of a valid structure: an error or a result, never a panic.
    #[test]
    fn random_corruption_never_panics() {
        let base = Image::new(&XEN_64M, b"a b c\0");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Miri interprets every access: a few rounds there, many natively.
        let rounds = if cfg!(miri) { 40 } else { 20_000 };
        for _ in 0..rounds {
            let mut img = Image {
                mem: base.mem.clone(),
            };
            for _ in 0..(next() % 6 + 1) {
                let at = SI as usize + (next() % 0x3100) as usize;
                img.mem[at] = next() as u8;
            }
            let _ = img.parse();
        }
    }
}

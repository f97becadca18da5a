//! Multiboot1 information: magic check, memory map (sanitised), modules, the command line
//! (copied into kernel memory) and the loader ranges to reserve, with typed errors.
//!
//! Hand-written rather than the `multiboot` crate (gz/rust-multiboot 0.8), which cannot be
//! used on loader data the kernel does not trust: its `Multiboot::from_ptr` turns a read-only
//! byte slice into `&mut MultibootInfo` and always reads the full 116-byte structure whatever
//! `flags` says; `command_line()` and module names go through `str::from_utf8_unchecked`
//! (undefined behaviour on a bad byte, where pvops must name the byte) and scan for the NUL
//! without a bound; the memory-map iterator adds the loader's `size` field to a `u32` with
//! no overflow check and reads a whole entry past `mmap_length`; and every access needs a
//! `&'static [u8]` translation. [`parse`] is a plain function over the bytes a `read`
//! callback returns, so the host tests and a fuzzer run it on arbitrary input.

use core::fmt;
use pvops_core::addr::PhysAddr;
use pvops_core::boot::BootModule;
use pvops_core::boot_input::{u32_at, u64_at};
use pvops_core::cmdline::{copy_cmdline, CmdlineCopy, CmdlineError};
use pvops_core::mem::{
    MemoryMap, MemoryMapError, RawRegion, RegionKind, Reservations, ReserveError, MAX_RAW_ENTRIES,
};

/// The value a multiboot1 loader leaves in eax.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// `flags` bit: mem_lower/mem_upper valid.
pub const FLAG_MEM: u32 = 1 << 0;
/// `flags` bit: cmdline valid.
pub const FLAG_CMDLINE: u32 = 1 << 2;
/// `flags` bit: mods_count/mods_addr valid.
pub const FLAG_MODS: u32 = 1 << 3;
/// `flags` bit: mmap_length/mmap_addr valid.
pub const FLAG_MMAP: u32 = 1 << 6;
/// Bytes of the info structure pvops reads (up to and including mmap_addr).
pub const INFO_LEN: usize = 52;
/// Bytes of the info structure reserved: the whole multiboot 0.6.96 structure (through the
/// framebuffer fields), whatever `flags` says the loader filled.
pub const INFO_RESERVED: u64 = 116;
/// Bytes of one module entry (mod_start, mod_end, string, reserved).
pub const MODULE_ENTRY_LEN: usize = 16;
/// Most modules pvops takes.
pub const MAX_MODULES: usize = 8;
/// Most bytes scanned for the command line's NUL.
pub const CMDLINE_SCAN: usize = 64 * 1024;

/// Why the multiboot information was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    /// eax did not hold [`BOOTLOADER_MAGIC`].
    BadMagic(u32),
    /// A structure the loader pointed at is not readable.
    Unreadable {
        /// Its physical address.
        addr: u32,
    },
    /// Neither a memory map nor mem_lower/mem_upper.
    NoMemoryInfo,
    /// An mmap entry whose size field is too small or runs past mmap_length.
    BadMmapEntry {
        /// Byte offset of the entry in the map.
        offset: u32,
    },
    /// More mmap entries than [`MAX_RAW_ENTRIES`].
    TooManyMmapEntries,
    /// The memory map is inconsistent (an entry that wraps, too many regions).
    Map(MemoryMapError),
    /// More modules than [`MAX_MODULES`].
    TooManyModules(u32),
    /// A module that ends before it starts.
    BadModule {
        /// Its index.
        index: usize,
        /// mod_start.
        start: u32,
        /// mod_end.
        end: u32,
    },
    /// A module's string (its name and arguments) is unreadable or has no NUL within
    /// [`CMDLINE_SCAN`] bytes.
    BadModuleString {
        /// The module's index.
        index: usize,
        /// Where the string starts.
        addr: u32,
    },
    /// The command line is refused (no NUL, or a byte that is not UTF-8).
    Cmdline(CmdlineError),
    /// A loader range could not be reserved.
    Reserve(ReserveError),
}

impl fmt::Display for MultibootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => {
                write!(f, "multiboot magic {m:#x}, expected {BOOTLOADER_MAGIC:#x}")
            }
            Self::Unreadable { addr } => {
                write!(f, "multiboot structure at {addr:#x} is not readable")
            }
            Self::NoMemoryInfo => write!(f, "multiboot info has no memory map"),
            Self::BadMmapEntry { offset } => {
                write!(f, "multiboot mmap entry at offset {offset} is malformed")
            }
            Self::TooManyMmapEntries => write!(
                f,
                "multiboot memory map has more than {MAX_RAW_ENTRIES} entries"
            ),
            Self::Map(e) => write!(f, "multiboot memory map: {e}"),
            Self::TooManyModules(n) => write!(
                f,
                "multiboot passes {n} modules, at most {MAX_MODULES} are supported"
            ),
            Self::BadModule { index, start, end } => write!(
                f,
                "multiboot module {index} ends at {end:#x} before its start {start:#x}"
            ),
            Self::BadModuleString { index, addr } => write!(
                f,
                "multiboot module {index}: its string at {addr:#x} has no NUL within {CMDLINE_SCAN} readable bytes"
            ),
            Self::Cmdline(e) => write!(f, "multiboot {e}"),
            Self::Reserve(e) => write!(f, "multiboot: {e}"),
        }
    }
}

/// What pvops takes from the multiboot information.
#[derive(Clone, Debug)]
pub struct MultibootInfo {
    /// The info structure's physical address.
    pub addr: PhysAddr,
    /// The flags word.
    pub flags: u32,
    /// The memory map (from mmap, sanitised, or from mem_lower/mem_upper).
    pub memory: MemoryMap,
    /// The modules, in the loader's order (the first [`MultibootInfo::module_count`]).
    pub modules: [BootModule; MAX_MODULES],
    /// How many modules.
    pub module_count: usize,
    /// Every range the loader filled: the info structure, the memory map, the command line,
    /// the module list and each module.
    pub reserved: Reservations,
}

impl MultibootInfo {
    /// The modules the loader passed.
    pub fn modules(&self) -> &[BootModule] {
        &self.modules[..self.module_count]
    }
}

/// `read` for exactly `len` bytes.
fn read_exact<'a>(
    read: &dyn Fn(u32, usize) -> Option<&'a [u8]>,
    addr: u32,
    len: usize,
) -> Result<&'a [u8], MultibootError> {
    if len == 0 {
        return Ok(&[]);
    }
    read(addr, len)
        .filter(|b| b.len() >= len)
        .map(|b| &b[..len])
        .ok_or(MultibootError::Unreadable { addr })
}

/// Parses the multiboot information at physical `mbi` and copies the command line into
/// `cmdline`. `read(addr, len)` returns the bytes at a physical address, fewer than `len`
/// where readable memory ends, or `None` when `addr` is not readable.
pub fn parse<'a>(
    magic: u32,
    mbi: u32,
    read: &dyn Fn(u32, usize) -> Option<&'a [u8]>,
    cmdline: &mut CmdlineCopy,
) -> Result<MultibootInfo, MultibootError> {
    if magic != BOOTLOADER_MAGIC {
        return Err(MultibootError::BadMagic(magic));
    }
    let info = read_exact(read, mbi, INFO_LEN)?;
    let flags = u32_at(info, 0);
    let mut reserved = Reservations::new();
    let mut reserve = |what, start: u32, len: u64| {
        reserved
            .add(what, PhysAddr::new(start as u64), len)
            .map_err(MultibootError::Reserve)
    };
    reserve("multiboot info", mbi, INFO_RESERVED)?;
    let memory = if flags & FLAG_MMAP != 0 {
        let (len, addr) = (u32_at(info, 44), u32_at(info, 48));
        let map = read_exact(read, addr, len as usize)?;
        reserve("multiboot mmap", addr, len as u64)?;
        let mut raw = [RawRegion {
            start: 0,
            len: 0,
            kind: RegionKind::Reserved,
        }; MAX_RAW_ENTRIES];
        let (mut n, mut off) = (0usize, 0usize);
        while off + 4 <= map.len() {
            let size = u32_at(map, off) as usize;
            if size < 20 || size > map.len() - off - 4 {
                return Err(MultibootError::BadMmapEntry { offset: off as u32 });
            }
            if n == MAX_RAW_ENTRIES {
                return Err(MultibootError::TooManyMmapEntries);
            }
            raw[n] = RawRegion {
                start: u64_at(map, off + 4),
                len: u64_at(map, off + 12),
                kind: if u32_at(map, off + 20) == 1 {
                    RegionKind::Usable
                } else {
                    RegionKind::Reserved
                },
            };
            n += 1;
            off += 4 + size;
        }
        MemoryMap::sanitized(&raw[..n]).map_err(MultibootError::Map)?
    } else if flags & FLAG_MEM != 0 {
        let (lower, upper) = (u32_at(info, 4) as u64, u32_at(info, 8) as u64);
        MemoryMap::sanitized(&[
            RawRegion {
                start: 0,
                len: lower * 1024,
                kind: RegionKind::Usable,
            },
            RawRegion {
                start: 0x10_0000,
                len: upper * 1024,
                kind: RegionKind::Usable,
            },
        ])
        .map_err(MultibootError::Map)?
    } else {
        return Err(MultibootError::NoMemoryInfo);
    };
    let mut modules = [BootModule {
        start: PhysAddr::new(0),
        len: 0,
    }; MAX_MODULES];
    let mut module_count = 0;
    if flags & FLAG_MODS != 0 {
        let (count, addr) = (u32_at(info, 20), u32_at(info, 24));
        if count as usize > MAX_MODULES {
            return Err(MultibootError::TooManyModules(count));
        }
        let len = count as usize * MODULE_ENTRY_LEN;
        let list = read_exact(read, addr, len)?;
        reserve("multiboot module list", addr, len as u64)?;
        for (index, e) in list.chunks_exact(MODULE_ENTRY_LEN).enumerate() {
            let (start, end) = (u32_at(e, 0), u32_at(e, 4));
            if end < start {
                return Err(MultibootError::BadModule { index, start, end });
            }
            reserve("multiboot module", start, (end - start) as u64)?;
            // The module's string (0: none) lives in the loader's memory too.
            let string = u32_at(e, 8);
            if string != 0 {
                let bad = MultibootError::BadModuleString {
                    index,
                    addr: string,
                };
                let raw = read(string, CMDLINE_SCAN).ok_or(bad)?;
                let len = raw[..raw.len().min(CMDLINE_SCAN)]
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or(bad)?;
                reserve("multiboot module string", string, len as u64 + 1)?;
            }
            modules[index] = BootModule {
                start: PhysAddr::new(start as u64),
                len: (end - start) as u64,
            };
            module_count += 1;
        }
    }
    *cmdline = CmdlineCopy::empty();
    if flags & FLAG_CMDLINE != 0 {
        let addr = u32_at(info, 16);
        let raw = read(addr, CMDLINE_SCAN).ok_or(MultibootError::Unreadable { addr })?;
        copy_cmdline(&raw[..raw.len().min(CMDLINE_SCAN)], cmdline)
            .map_err(MultibootError::Cmdline)?;
        let len = cmdline.truncated_from().unwrap_or(cmdline.as_str().len());
        reserve("multiboot cmdline", addr, len as u64 + 1)?;
    }
    Ok(MultibootInfo {
        addr: PhysAddr::new(mbi as u64),
        flags,
        memory,
        modules,
        module_count,
        reserved,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const CMDLINE_AT: usize = 0x2000;
    const MODS_AT: usize = 0x1800;

    /// A loader's memory: the info structure at 0, the mmap at 0x1000, the module list at
    /// 0x1800, the command line at 0x2000 (room for 0x6000 bytes).
    fn image(entries: &[(u64, u64, u32)], cmdline: &[u8], mods: &[(u32, u32)]) -> Vec<u8> {
        let mut mem = std::vec![0u8; 0x8000];
        let mut flags = FLAG_MMAP | FLAG_CMDLINE;
        if !mods.is_empty() {
            flags |= FLAG_MODS;
        }
        mem[0..4].copy_from_slice(&flags.to_le_bytes());
        mem[16..20].copy_from_slice(&(CMDLINE_AT as u32).to_le_bytes());
        mem[20..24].copy_from_slice(&(mods.len() as u32).to_le_bytes());
        mem[24..28].copy_from_slice(&(MODS_AT as u32).to_le_bytes());
        mem[44..48].copy_from_slice(&((entries.len() * 24) as u32).to_le_bytes());
        mem[48..52].copy_from_slice(&0x1000u32.to_le_bytes());
        for (i, (b, l, t)) in entries.iter().enumerate() {
            let o = 0x1000 + i * 24;
            mem[o..o + 4].copy_from_slice(&20u32.to_le_bytes());
            mem[o + 4..o + 12].copy_from_slice(&b.to_le_bytes());
            mem[o + 12..o + 20].copy_from_slice(&l.to_le_bytes());
            mem[o + 20..o + 24].copy_from_slice(&t.to_le_bytes());
        }
        for (i, (start, end)) in mods.iter().enumerate() {
            let o = MODS_AT + i * MODULE_ENTRY_LEN;
            mem[o..o + 4].copy_from_slice(&start.to_le_bytes());
            mem[o + 4..o + 8].copy_from_slice(&end.to_le_bytes());
        }
        mem[CMDLINE_AT..CMDLINE_AT + cmdline.len()].copy_from_slice(cmdline);
        mem
    }

    fn parse_image(mem: &[u8]) -> Result<(MultibootInfo, CmdlineCopy), MultibootError> {
        let read = |a: u32, l: usize| {
            mem.get(a as usize..(a as usize + l).min(mem.len()))
                .filter(|b| !b.is_empty())
        };
        let mut c = CmdlineCopy::empty();
        parse(BOOTLOADER_MAGIC, 0, &read, &mut c).map(|m| (m, c))
    }

    const QEMU_MAP: [(u64, u64, u32); 3] = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0x10_0000, 0x7ee_0000, 1),
    ];

    #[test]
    fn qemu_like_map() {
        let mem = image(&QEMU_MAP, b"k pvops.skip_unpin\0", &[]);
        let (mb, c) = parse_image(&mem).unwrap();
        assert_eq!(c.as_str(), "k pvops.skip_unpin");
        assert_eq!(mb.memory.regions().len(), 3);
        assert_eq!(mb.memory.usable_bytes(), 0x9fc00 + 0x7ee_0000);
        assert!(mb.modules().is_empty());
        let r: Vec<(&str, u64, u64)> = mb
            .reserved
            .iter()
            .map(|r| (r.what, r.start.as_u64(), r.end))
            .collect();
        assert_eq!(
            r,
            [
                ("multiboot info", 0, INFO_RESERVED),
                ("multiboot mmap", 0x1000, 0x1000 + 72),
                ("multiboot cmdline", 0x2000, 0x2000 + 19),
            ]
        );
    }

    #[test]
    fn modules_are_parsed_and_reserved() {
        let mem = image(
            &QEMU_MAP,
            b"k\0",
            &[(0x38_0000, 0x38_1388), (0x38_2000, 0x38_2000)],
        );
        let (mb, _) = parse_image(&mem).unwrap();
        assert_eq!(
            mb.modules(),
            [
                BootModule {
                    start: PhysAddr::new(0x38_0000),
                    len: 5000
                },
                BootModule {
                    start: PhysAddr::new(0x38_2000),
                    len: 0
                }
            ]
        );
        assert!(mb.reserved.iter().any(|r| r.what == "multiboot module"
            && r.start.as_u64() == 0x38_0000
            && r.end == 0x38_1388));
        assert!(mb
            .reserved
            .iter()
            .any(|r| r.what == "multiboot module list" && r.end == MODS_AT as u64 + 32));
        // QEMU without -initrd: FLAG_MODS, mods_count 0, mods_addr past readable memory.
        let mut mem = image(&QEMU_MAP, b"k\0", &[(0, 0)]);
        mem[20..24].copy_from_slice(&0u32.to_le_bytes());
        mem[24..28].copy_from_slice(&0x0fff_f000u32.to_le_bytes());
        let (mb, _) = parse_image(&mem).unwrap();
        assert!(mb.modules().is_empty());
        assert!(!mb.reserved.iter().any(|r| r.what.contains("module")));
        let mem = image(&QEMU_MAP, b"k\0", &[(0x2000, 0x1000)]);
        assert_eq!(
            parse_image(&mem).unwrap_err(),
            MultibootError::BadModule {
                index: 0,
                start: 0x2000,
                end: 0x1000
            }
        );
        let mem = image(&QEMU_MAP, b"k\0", &[(0, 0); MAX_MODULES + 1]);
        assert_eq!(
            parse_image(&mem).unwrap_err(),
            MultibootError::TooManyModules(MAX_MODULES as u32 + 1)
        );
    }

    /// GRUB and QEMU pass a NUL-terminated string per module (`string` at offset 8 of its
    /// entry) in memory of their own: the allocator must not hand it out either.
    #[test]
    fn module_strings_are_reserved() {
        const STRING_AT: usize = 0x4000;
        let mut mem = image(
            &QEMU_MAP,
            b"k\0",
            &[(0x38_0000, 0x38_1388), (0x38_2000, 0x38_3000)],
        );
        mem[MODS_AT + 8..MODS_AT + 12].copy_from_slice(&(STRING_AT as u32).to_le_bytes());
        mem[STRING_AT..STRING_AT + 13].copy_from_slice(b"/boot/m.bin\0\0");
        // The second module has no string (0).
        let (mb, _) = parse_image(&mem).unwrap();
        let strings: Vec<_> = mb
            .reserved
            .iter()
            .filter(|r| r.what == "multiboot module string")
            .map(|r| (r.start.as_u64(), r.end))
            .collect();
        assert_eq!(strings, [(STRING_AT as u64, STRING_AT as u64 + 12)]);
        // A string that never ends is refused, not reserved up to wherever.
        mem[STRING_AT..].fill(b'x');
        assert_eq!(
            parse_image(&mem).unwrap_err(),
            MultibootError::BadModuleString {
                index: 0,
                addr: STRING_AT as u32
            }
        );
    }

    #[test]
    fn long_command_lines() {
        // ~1 KiB of plain ASCII (refused before: the scan stopped at 1 KiB).
        let mut line: Vec<u8> = b"/boot/kernel.elf ".to_vec();
        line.extend(std::iter::repeat_n(b'x', 1100));
        line.push(0);
        let (_, c) = parse_image(&image(&QEMU_MAP, &line, &[])).unwrap();
        assert_eq!(c.as_str().len(), line.len() - 1);
        assert_eq!(c.truncated_from(), None);
        // Longer than 2048: kept truncated, the full length reported and reserved.
        let mut line = std::vec![b'y'; 3000];
        line.push(0);
        let (mb, c) = parse_image(&image(&QEMU_MAP, &line, &[])).unwrap();
        assert_eq!(c.as_str().len(), pvops_core::cmdline::CMDLINE_MAX);
        assert_eq!(c.truncated_from(), Some(3000));
        assert!(mb
            .reserved
            .iter()
            .any(|r| r.what == "multiboot cmdline" && r.end - r.start.as_u64() == 3001));
        // A real encoding error names the byte.
        assert_eq!(
            parse_image(&image(&QEMU_MAP, b"abc\xfe\0", &[])).unwrap_err(),
            MultibootError::Cmdline(CmdlineError::NotUtf8 {
                offset: 3,
                byte: 0xfe
            })
        );
    }

    #[test]
    fn overlapping_and_unsorted_maps_are_sanitised() {
        // Overlapping (refused before), unsorted, with a reserved piece inside usable RAM.
        let mem = image(
            &[
                (0x10_0000, 0x7ee_0000, 1),
                (0, 0x20_0000, 1),
                (0x9fc00, 0x400, 2),
            ],
            b"\0",
            &[],
        );
        let (mb, _) = parse_image(&mem).unwrap();
        let got: Vec<(u64, u64, RegionKind)> = mb
            .memory
            .regions()
            .iter()
            .map(|r| (r.start.as_u64(), r.end(), r.kind))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0x9fc00, RegionKind::Usable),
                (0x9fc00, 0xa0000, RegionKind::Reserved),
                (0xa0000, 0x7fe_0000, RegionKind::Usable),
            ]
        );
        // 40 entries (more than the old limit of 32) are all taken.
        let many: Vec<(u64, u64, u32)> = (0..40u64).map(|i| (i << 20, 0x1000, 1)).collect();
        let (mb, _) = parse_image(&image(&many, b"\0", &[])).unwrap();
        assert_eq!(mb.memory.regions().len(), 40);
        // More entries than a map can take: a typed error, not a silent cut.
        let too_many: Vec<(u64, u64, u32)> = (0..MAX_RAW_ENTRIES as u64 + 1)
            .map(|i| (i << 20, 0x1000, 1))
            .collect();
        let mut mem = image(&[], b"\0", &[]);
        mem.resize(0x1000 + too_many.len() * 24 + 0x100, 0);
        let len = (too_many.len() * 24) as u32;
        mem[44..48].copy_from_slice(&len.to_le_bytes());
        for (i, (b, l, t)) in too_many.iter().enumerate() {
            let o = 0x1000 + i * 24;
            mem[o..o + 4].copy_from_slice(&20u32.to_le_bytes());
            mem[o + 4..o + 12].copy_from_slice(&b.to_le_bytes());
            mem[o + 12..o + 20].copy_from_slice(&l.to_le_bytes());
            mem[o + 20..o + 24].copy_from_slice(&t.to_le_bytes());
        }
        let nul_at = (mem.len() - 1) as u32;
        mem[16..20].copy_from_slice(&nul_at.to_le_bytes());
        assert_eq!(
            parse_image(&mem).unwrap_err(),
            MultibootError::TooManyMmapEntries
        );
    }

    #[test]
    fn bad_inputs() {
        let read = |_: u32, _: usize| -> Option<&[u8]> { None };
        let mut c = CmdlineCopy::empty();
        assert_eq!(
            parse(0x1234, 0, &read, &mut c).unwrap_err(),
            MultibootError::BadMagic(0x1234)
        );
        assert_eq!(
            parse(BOOTLOADER_MAGIC, 8, &read, &mut c).unwrap_err(),
            MultibootError::Unreadable { addr: 8 }
        );
        let mem = image(&[(u64::MAX - 10, 0x100, 1)], b"\0", &[]);
        assert!(matches!(
            parse_image(&mem),
            Err(MultibootError::Map(MemoryMapError::Wraps { .. }))
        ));
        // An entry whose size runs past mmap_length.
        let mut mem = image(&QEMU_MAP, b"\0", &[]);
        mem[0x1000 + 48..0x1000 + 52].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(
            parse_image(&mem).unwrap_err(),
            MultibootError::BadMmapEntry { offset: 48 }
        );
    }
}

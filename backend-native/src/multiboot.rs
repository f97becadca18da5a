//! Multiboot1 information: magic check, memory map and command line, with typed errors.

use core::fmt;
use pvops_core::addr::PhysAddr;
use pvops_core::mem::{MemoryMap, MemoryMapError, RegionKind};

/// The value a multiboot1 loader leaves in eax.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// `flags` bit: mem_lower/mem_upper valid.
pub const FLAG_MEM: u32 = 1 << 0;
/// `flags` bit: cmdline valid.
pub const FLAG_CMDLINE: u32 = 1 << 2;
/// `flags` bit: mmap_length/mmap_addr valid.
pub const FLAG_MMAP: u32 = 1 << 6;
/// Bytes of the info structure pvops reads (up to and including mmap_addr).
pub const INFO_LEN: usize = 52;

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
    /// The memory map is inconsistent (overlap, wrap, too many regions).
    Map(MemoryMapError),
    /// The command line is not UTF-8 or not NUL-terminated within 1 KiB.
    BadCmdline,
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
            Self::Map(e) => write!(f, "multiboot memory map: {e}"),
            Self::BadCmdline => write!(f, "multiboot command line is not NUL-terminated UTF-8"),
        }
    }
}

/// What pvops takes from the multiboot information.
#[derive(Clone, Debug)]
pub struct MultibootInfo<'a> {
    /// The info structure's physical address.
    pub addr: PhysAddr,
    /// The flags word.
    pub flags: u32,
    /// The memory map (from mmap, or from mem_lower/mem_upper).
    pub memory: MemoryMap,
    /// The command line ("" when absent).
    pub cmdline: &'a str,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u32_at(b, off) as u64 | (u32_at(b, off + 4) as u64) << 32
}

/// Parses the multiboot information at physical `mbi`. `read(addr, len)` returns the bytes
/// at a physical address, or `None` when they are not reachable.
pub fn parse<'a>(
    magic: u32,
    mbi: u32,
    read: &dyn Fn(u32, usize) -> Option<&'a [u8]>,
) -> Result<MultibootInfo<'a>, MultibootError> {
    if magic != BOOTLOADER_MAGIC {
        return Err(MultibootError::BadMagic(magic));
    }
    let info = read(mbi, INFO_LEN)
        .filter(|b| b.len() >= INFO_LEN)
        .ok_or(MultibootError::Unreadable { addr: mbi })?;
    let flags = u32_at(info, 0);
    let mut memory = MemoryMap::new();
    if flags & FLAG_MMAP != 0 {
        let (len, addr) = (u32_at(info, 44), u32_at(info, 48));
        let map = read(addr, len as usize).ok_or(MultibootError::Unreadable { addr })?;
        let mut off = 0usize;
        while off + 4 <= map.len() {
            let size = u32_at(map, off) as usize;
            if size < 20 || off + 4 + size > map.len() {
                return Err(MultibootError::BadMmapEntry { offset: off as u32 });
            }
            let (base, length, kind) = (
                u64_at(map, off + 4),
                u64_at(map, off + 12),
                u32_at(map, off + 20),
            );
            let kind = if kind == 1 {
                RegionKind::Usable
            } else {
                RegionKind::Reserved
            };
            if length != 0 {
                memory
                    .add(PhysAddr(base), length, kind)
                    .map_err(MultibootError::Map)?;
            }
            off += 4 + size;
        }
    } else if flags & FLAG_MEM != 0 {
        let (lower, upper) = (u32_at(info, 4) as u64, u32_at(info, 8) as u64);
        memory
            .add(PhysAddr(0), lower * 1024, RegionKind::Usable)
            .map_err(MultibootError::Map)?;
        memory
            .add(PhysAddr(0x10_0000), upper * 1024, RegionKind::Usable)
            .map_err(MultibootError::Map)?;
    } else {
        return Err(MultibootError::NoMemoryInfo);
    }
    let cmdline = if flags & FLAG_CMDLINE != 0 {
        let addr = u32_at(info, 16);
        let raw = read(addr, 1024)
            .or_else(|| read(addr, 256))
            .ok_or(MultibootError::Unreadable { addr })?;
        let end = raw
            .iter()
            .position(|b| *b == 0)
            .ok_or(MultibootError::BadCmdline)?;
        core::str::from_utf8(&raw[..end]).map_err(|_| MultibootError::BadCmdline)?
    } else {
        ""
    };
    Ok(MultibootInfo {
        addr: PhysAddr(mbi as u64),
        flags,
        memory,
        cmdline,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn image(entries: &[(u64, u64, u32)], cmdline: &[u8]) -> Vec<u8> {
        let mut mem = std::vec![0u8; 0x3000];
        let mut info = [0u8; INFO_LEN];
        info[0..4].copy_from_slice(&(FLAG_MMAP | FLAG_CMDLINE).to_le_bytes());
        info[16..20].copy_from_slice(&0x2000u32.to_le_bytes());
        info[44..48].copy_from_slice(&((entries.len() * 24) as u32).to_le_bytes());
        info[48..52].copy_from_slice(&0x1000u32.to_le_bytes());
        mem[..INFO_LEN].copy_from_slice(&info);
        for (i, (b, l, t)) in entries.iter().enumerate() {
            let o = 0x1000 + i * 24;
            mem[o..o + 4].copy_from_slice(&20u32.to_le_bytes());
            mem[o + 4..o + 12].copy_from_slice(&b.to_le_bytes());
            mem[o + 12..o + 20].copy_from_slice(&l.to_le_bytes());
            mem[o + 20..o + 24].copy_from_slice(&t.to_le_bytes());
        }
        mem[0x2000..0x2000 + cmdline.len()].copy_from_slice(cmdline);
        mem
    }

    #[test]
    fn qemu_like_map() {
        let mem = image(
            &[
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
                (0x10_0000, 0x7ee_0000, 1),
            ],
            b"k pvops.skip_unpin\0",
        );
        let read = |a: u32, l: usize| {
            mem.get(a as usize..a as usize + l)
                .or_else(|| mem.get(a as usize..))
        };
        let mb = parse(BOOTLOADER_MAGIC, 0, &read).unwrap();
        assert_eq!(mb.cmdline, "k pvops.skip_unpin");
        assert_eq!(mb.memory.regions().len(), 3);
        assert_eq!(mb.memory.usable_bytes(), 0x9fc00 + 0x7ee_0000);
    }

    #[test]
    fn bad_inputs() {
        let read = |_: u32, _: usize| -> Option<&[u8]> { None };
        assert_eq!(
            parse(0x1234, 0, &read).unwrap_err(),
            MultibootError::BadMagic(0x1234)
        );
        assert_eq!(
            parse(BOOTLOADER_MAGIC, 8, &read).unwrap_err(),
            MultibootError::Unreadable { addr: 8 }
        );
        let mem = image(&[(0, 0x20_0000, 1), (0x10_0000, 0x1000, 1)], b"\0");
        let read = |a: u32, l: usize| {
            mem.get(a as usize..a as usize + l)
                .or_else(|| mem.get(a as usize..))
        };
        assert!(matches!(
            parse(BOOTLOADER_MAGIC, 0, &read),
            Err(MultibootError::Map(MemoryMapError::Overlap { .. }))
        ));
        let mem = image(&[(u64::MAX - 10, 0x100, 1)], b"\0");
        let read = |a: u32, l: usize| {
            mem.get(a as usize..a as usize + l)
                .or_else(|| mem.get(a as usize..))
        };
        assert!(matches!(
            parse(BOOTLOADER_MAGIC, 0, &read),
            Err(MultibootError::Map(MemoryMapError::Wraps { .. }))
        ));
    }
}

//! Host tests of [`super::parse`] over byte buffers laid out as a PVH loader would.

extern crate std;
use super::*;
use pvops_core::addr::{FrameRange, PhysFrame};
use pvops_core::mem::{FrameAllocator, MemoryMapError};
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
        .map(|r| (r.what, r.start.as_u64(), r.end - r.start.as_u64()))
        .collect();
    assert_eq!(
        whats,
        [
            ("hvm_start_info", SI, 56),
            ("memmap", MEMMAP, 120),
            ("cmdline", CMDLINE, 14),
            ("modlist", MODLIST, 32),
            ("module cmdline", 0x5000, 3),
            ("module", 0x8000, 0x1800),
        ]
    );
    // The map stays as Xen wrote it (all of it RAM in the direct map); what the allocator
    // gets is the map without the reservations.
    assert_eq!(si.memory.usable_bytes(), 0x400_0000);
    let free = si.memory.without(si.reservations()).unwrap();
    assert_eq!(
        free.usable_bytes(),
        0x400_0000 - (56 + 120 + 14 + 32 + 0x1800 + 3)
    );
    // The allocator never hands out a frame that holds a loader structure or module.
    let mut a = FrameAllocator::new(
        &free,
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

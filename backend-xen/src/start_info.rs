//! Validating `start_info` (before any of its fields is used), deriving where free memory
//! starts and what the domain builder placed that the kernel must not hand out.

use crate::abi::{StartInfo, SIF_INITDOMAIN, SIF_MOD_START_PFN, START_INFO_MAGIC, VIRT_BASE};
use core::fmt;
use pvops_core::addr::{FrameRange, PhysAddr, PhysFrame, PAGE_SIZE};
use pvops_core::boot::BootModule;
use pvops_core::mem::{Reservations, ReserveError};

/// Why start_info was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// The magic is not `xen-3.0-x86_32p` (not a 32-bit PAE PV start_info).
    BadMagic,
    /// nr_pages is 0 or beyond a 32-bit PAE guest (64 GiB).
    BadNrPages(u32),
    /// A virtual address (pt_base, mfn_list, start_info) is not in the 1:1 region.
    OutsideRegion {
        /// Which field.
        field: &'static str,
        /// Its value.
        va: u32,
    },
    /// nr_pt_frames is 0, or the tables leave no page before nr_pages (for the boot stack).
    BadPtFrames(u32),
    /// A field that must be aligned is not (pt_base: a page; mfn_list: 4 bytes).
    Misaligned {
        /// Which field.
        field: &'static str,
        /// Its value.
        va: u32,
    },
    /// The p2m list (`nr_pages` entries from `mfn_list`) runs past the domain's memory.
    P2mPastEnd {
        /// mfn_list.
        mfn_list: u32,
        /// nr_pages.
        nr_pages: u32,
    },
    /// The module (`mod_start`, `mod_len`) lies outside the domain's memory.
    BadModule {
        /// mod_start.
        start: u32,
        /// mod_len.
        len: u32,
    },
    /// The command line is not NUL-terminated UTF-8.
    BadCmdline,
    /// A builder range could not be reserved.
    Reserve(ReserveError),
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "start_info magic is not xen-3.0-x86_32p"),
            Self::BadNrPages(n) => write!(f, "start_info nr_pages={n:#x} is invalid"),
            Self::OutsideRegion { field, va } => {
                write!(
                    f,
                    "start_info {field}={va:#x} is outside the domain's 1:1 region"
                )
            }
            Self::BadPtFrames(n) => write!(f, "start_info nr_pt_frames={n} is invalid"),
            Self::Misaligned { field, va } => {
                write!(f, "start_info {field}={va:#x} is misaligned")
            }
            Self::P2mPastEnd { mfn_list, nr_pages } => write!(
                f,
                "start_info p2m list at {mfn_list:#x} ({nr_pages} entries) runs past the domain's memory"
            ),
            Self::BadModule { start, len } => write!(
                f,
                "start_info module {start:#x}+{len:#x} lies outside the domain's memory"
            ),
            Self::Reserve(e) => write!(f, "start_info: {e}"),
            Self::BadCmdline => write!(f, "start_info cmd_line is not NUL-terminated UTF-8"),
        }
    }
}

/// What pvops takes from a validated start_info.
#[derive(Clone, Copy, Debug)]
pub struct XenBootFacts<'a> {
    /// Pages of the domain.
    pub nr_pages: u32,
    /// SIF_* flags.
    pub flags: u32,
    /// The bootstrap L3 (pseudo-physical frame of `pt_base`).
    pub pt_base: PhysFrame,
    /// The bootstrap table's frames.
    pub bootstrap_tables: FrameRange,
    /// start_info's own frame.
    pub start_info: PhysFrame,
    /// First frame after every builder structure and the boot stack.
    pub first_free: PhysFrame,
    /// The guest command line.
    pub cmdline: &'a str,
    /// The console ring's frame (a domU's, checked against the M2P and the p2m list).
    pub console: Option<PhysFrame>,
    /// The xenstore ring's frame (a domU's, checked the same way).
    pub store: Option<PhysFrame>,
    /// The module (initrd) the builder loaded, if any.
    pub module: Option<BootModule>,
    /// What the builder filled and the allocator must not hand out: start_info, the p2m
    /// list, the console and xenstore rings, the module.
    pub reserved: Reservations,
}

impl XenBootFacts<'_> {
    /// True for the initial domain.
    pub fn is_dom0(&self) -> bool {
        self.flags & SIF_INITDOMAIN != 0
    }
}

fn pfn_of(field: &'static str, va: u32, nr_pages: u32) -> Result<PhysFrame, StartInfoError> {
    let off = va
        .checked_sub(VIRT_BASE)
        .ok_or(StartInfoError::OutsideRegion { field, va })?;
    let pfn = off / PAGE_SIZE as u32;
    if pfn >= nr_pages {
        return Err(StartInfoError::OutsideRegion { field, va });
    }
    Ok(PhysFrame::new(pfn))
}

/// Checks `si` (found at virtual address `si_va`, entered with stack pointer `esp`) before
/// anything else reads it.
///
/// The first free frame is past everything the builder placed after the image: the p2m list,
/// start_info, the xenstore and console pages, the bootstrap tables and the live boot stack
/// (the builder's order is not assumed: the maximum end is taken). `owned_pfn(mfn)` is the
/// pfn of a machine frame the domain owns (M2P lookup cross-checked with the p2m list), or
/// `None`; it is called only after `mfn_list` was checked.
pub fn validate<'a>(
    si: &'a StartInfo,
    si_va: u32,
    esp: u32,
    image_end: PhysFrame,
    owned_pfn: &dyn Fn(u32) -> Option<PhysFrame>,
) -> Result<XenBootFacts<'a>, StartInfoError> {
    if !si.magic.starts_with(START_INFO_MAGIC) {
        return Err(StartInfoError::BadMagic);
    }
    let nr = si.nr_pages;
    if nr == 0 || nr > (1 << 24) {
        return Err(StartInfoError::BadNrPages(nr));
    }
    if si.pt_base % PAGE_SIZE as u32 != 0 {
        return Err(StartInfoError::Misaligned {
            field: "pt_base",
            va: si.pt_base,
        });
    }
    let pt_base = pfn_of("pt_base", si.pt_base, nr)?;
    // Both builders (libxenguest's and Xen's own dom0 builder) put the boot stack page right
    // after the bootstrap tables, so the tables end below nr_pages.
    let pt_end = pt_base
        .number()
        .checked_add(si.nr_pt_frames)
        .filter(|e| si.nr_pt_frames > 0 && *e < nr);
    let pt_end = pt_end.ok_or(StartInfoError::BadPtFrames(si.nr_pt_frames))?;
    let start_info = pfn_of("start_info", si_va, nr)?;
    if si.mfn_list % 4 != 0 {
        return Err(StartInfoError::Misaligned {
            field: "mfn_list",
            va: si.mfn_list,
        });
    }
    pfn_of("mfn_list", si.mfn_list, nr)?;
    // nr <= 2^24, so nr * 4 fits; the list's last byte must be inside the domain's memory.
    let p2m_bytes = nr * 4;
    let p2m_last = si
        .mfn_list
        .checked_add(p2m_bytes - 1)
        .and_then(|last| pfn_of("mfn_list", last, nr).ok())
        .ok_or(StartInfoError::P2mPastEnd {
            mfn_list: si.mfn_list,
            nr_pages: nr,
        })?;
    let stack = pfn_of("esp", esp.saturating_sub(1), nr)?;
    let dom0 = si.flags & SIF_INITDOMAIN != 0;
    // A domU's console and xenstore rings (dom0's start_info has console info there instead).
    let (console, store) = if dom0 {
        (None, None)
    } else {
        (owned_pfn(si.console_mfn), owned_pfn(si.store_mfn))
    };
    let module = match si.mod_len {
        0 => None,
        len => {
            let bad = StartInfoError::BadModule {
                start: si.mod_start,
                len,
            };
            let start_pa = if si.flags & SIF_MOD_START_PFN != 0 {
                (si.mod_start as u64) * PAGE_SIZE
            } else {
                si.mod_start.checked_sub(VIRT_BASE).ok_or(bad)? as u64
            };
            if start_pa + len as u64 > nr as u64 * PAGE_SIZE {
                return Err(bad);
            }
            Some(BootModule {
                start: PhysAddr::new(start_pa),
                len: len as u64,
            })
        }
    };
    let mut reserved = Reservations::new();
    let mut reserve = |what, start: PhysAddr, len: u64| {
        reserved
            .add(what, start, len)
            .map_err(StartInfoError::Reserve)
    };
    reserve("start_info", start_info.start(), PAGE_SIZE)?;
    reserve(
        "p2m list",
        PhysAddr::new((si.mfn_list - VIRT_BASE) as u64),
        p2m_bytes as u64,
    )?;
    if let Some(f) = console {
        reserve("console ring", f.start(), PAGE_SIZE)?;
    }
    if let Some(f) = store {
        reserve("xenstore ring", f.start(), PAGE_SIZE)?;
    }
    if let Some(m) = module {
        reserve("module", m.start, m.len)?;
    }
    let first_free = [
        image_end.number(),
        pt_end + 1,
        start_info.number() + 1,
        p2m_last.number() + 1,
        stack.number() + 1,
        console.map_or(0, |f| f.number() + 1),
        store.map_or(0, |f| f.number() + 1),
    ]
    .into_iter()
    .max()
    .unwrap_or(pt_end);
    let len = si
        .cmd_line
        .iter()
        .position(|b| *b == 0)
        .ok_or(StartInfoError::BadCmdline)?;
    let cmdline =
        core::str::from_utf8(&si.cmd_line[..len]).map_err(|_| StartInfoError::BadCmdline)?;
    Ok(XenBootFacts {
        nr_pages: nr,
        flags: si.flags,
        pt_base,
        bootstrap_tables: FrameRange {
            start: pt_base,
            end: PhysFrame::new(pt_end),
        },
        start_info,
        first_free: PhysFrame::new(first_free),
        cmdline,
        console,
        store,
        module,
        reserved,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn none(_: u32) -> Option<PhysFrame> {
        None
    }

    fn si() -> StartInfo {
        let mut s: StartInfo = unsafe { core::mem::zeroed() };
        s.magic[..15].copy_from_slice(START_INFO_MAGIC);
        s.nr_pages = 0x2000;
        s.pt_base = 0xC001_2000;
        s.nr_pt_frames = 4;
        s.mfn_list = 0xC000_9000;
        s.cmd_line[..5].copy_from_slice(b"hello");
        s
    }

    /// `from_bytes` against the offsets of `struct start_info` in xen/include/public/xen.h
    /// (x86_32): nr_pages at 32, pt_base at 60, mfn_list at 68, cmd_line at 80, nr_p2m_frames
    /// at 1108.
    #[test]
    fn start_info_from_bytes() {
        let mut b = [0u8; 1112];
        b[..15].copy_from_slice(b"xen-3.0-x86_32p");
        b[32..36].copy_from_slice(&0x2000u32.to_le_bytes());
        b[60..64].copy_from_slice(&0xC001_2000u32.to_le_bytes());
        b[64..68].copy_from_slice(&4u32.to_le_bytes());
        b[68..72].copy_from_slice(&0xC000_9000u32.to_le_bytes());
        b[80..85].copy_from_slice(b"hello");
        b[1108..1112].copy_from_slice(&7u32.to_le_bytes());
        assert!(StartInfo::from_bytes(&b[..1111]).is_none());
        let s = StartInfo::from_bytes(&b).unwrap();
        assert_eq!(
            (
                s.nr_pages,
                s.pt_base,
                s.nr_pt_frames,
                s.mfn_list,
                s.nr_p2m_frames
            ),
            (0x2000, 0xC001_2000, 4, 0xC000_9000, 7)
        );
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap();
        assert_eq!(f.cmdline, "hello");
    }

    #[test]
    fn good_start_info() {
        let s = si();
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap();
        assert_eq!(f.pt_base, PhysFrame::new(0x12));
        assert_eq!(
            f.bootstrap_tables,
            FrameRange {
                start: PhysFrame::new(0x12),
                end: PhysFrame::new(0x16)
            }
        );
        assert_eq!(f.first_free, PhysFrame::new(0x17));
        assert_eq!(f.cmdline, "hello");
    }

    /// Found by `cargo xtask fuzz` (start_info): tables ending exactly at nr_pages were
    /// accepted, and first_free (one past the tables) then lay outside the domain.
    #[test]
    fn tables_ending_at_nr_pages_are_refused() {
        let mut s = si();
        s.nr_pages = 0x16;
        s.mfn_list = 0xC000_0000;
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_1800, PhysFrame::new(8), &none).unwrap_err(),
            StartInfoError::BadPtFrames(4)
        );
        s.nr_pages = 0x17;
        let f = validate(&s, 0xC001_1000, 0xC001_1800, PhysFrame::new(8), &none).unwrap();
        assert_eq!(f.first_free, PhysFrame::new(0x17));
    }

    /// Found by `cargo xtask fuzz` (start_info; also fixed on its own by the start_info
    /// validation of issue 17): only the p2m list's first entry was checked, so a list
    /// running past the domain's last page was accepted and then read by the boot.
    #[test]
    fn p2m_list_running_past_the_domain_is_refused() {
        let mut s = si();
        // 0x2000 entries = 8 pages; at pfn 0x1ff9 the last one would be pfn 0x2000.
        s.mfn_list = 0xC1FF_9000;
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap_err(),
            StartInfoError::P2mPastEnd {
                mfn_list: 0xC1FF_9000,
                nr_pages: 0x2000
            }
        );
        s.mfn_list = 0xC1FF_8000;
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap();
        assert_eq!(f.first_free, PhysFrame::new(0x2000));
    }

    #[test]
    fn bad_start_info() {
        let mut s = si();
        s.magic[14] = b'x';
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap_err(),
            StartInfoError::BadMagic
        );
        let mut s = si();
        s.nr_pt_frames = 0;
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap_err(),
            StartInfoError::BadPtFrames(0)
        );
        let mut s = si();
        s.pt_base = 0x1000;
        assert!(matches!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none),
            Err(StartInfoError::OutsideRegion {
                field: "pt_base",
                ..
            })
        ));
        let mut s = si();
        s.cmd_line = [b'a'; 1024];
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none).unwrap_err(),
            StartInfoError::BadCmdline
        );
    }

    #[test]
    fn alignment_p2m_end_and_module() {
        fn v(s: &StartInfo) -> Result<XenBootFacts<'_>, StartInfoError> {
            validate(s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &none)
        }
        let mut s = si();
        s.pt_base = 0xC001_2004;
        assert_eq!(
            v(&s).unwrap_err(),
            StartInfoError::Misaligned {
                field: "pt_base",
                va: 0xC001_2004
            }
        );
        // The p2m list starts inside the domain but its 0x2000 entries run past the end.
        let mut s = si();
        s.mfn_list = 0xC000_0000 + 0x2000 * 4096 - 0x1000;
        assert!(matches!(
            v(&s).unwrap_err(),
            StartInfoError::P2mPastEnd { .. }
        ));
        let mut s = si();
        s.mfn_list = 0xC000_9002;
        assert!(matches!(
            v(&s).unwrap_err(),
            StartInfoError::Misaligned {
                field: "mfn_list",
                ..
            }
        ));
        // A module given as a pfn (SIF_MOD_START_PFN), and one past the domain's end.
        let mut s = si();
        s.flags = SIF_MOD_START_PFN;
        s.mod_start = 0x40;
        s.mod_len = 5000;
        let f = v(&s).unwrap();
        assert_eq!(
            f.module,
            Some(BootModule {
                start: PhysAddr::new(0x4_0000),
                len: 5000
            })
        );
        s.mod_start = 0x1fff;
        assert_eq!(
            v(&s).unwrap_err(),
            StartInfoError::BadModule {
                start: 0x1fff,
                len: 5000
            }
        );
    }

    #[test]
    fn builder_ranges_are_reserved() {
        let mut s = si();
        s.console_mfn = 0x5_0001;
        s.store_mfn = 0x5_0002;
        s.mod_start = 0xC002_0000;
        s.mod_len = 0x1800;
        let owned = |mfn: u32| match mfn {
            0x5_0001 => Some(PhysFrame::new(0x18)),
            0x5_0002 => Some(PhysFrame::new(0x19)),
            _ => None,
        };
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &owned).unwrap();
        let got: std::vec::Vec<(&str, u64, u64)> = f
            .reserved
            .iter()
            .map(|r| (r.what, r.start.as_u64(), r.end))
            .collect();
        assert_eq!(
            got,
            [
                ("p2m list", 0x9000, 0x9000 + 0x2000 * 4),
                ("start_info", 0x11000, 0x12000),
                ("console ring", 0x18000, 0x19000),
                ("xenstore ring", 0x19000, 0x1a000),
                ("module", 0x20000, 0x21800),
            ]
        );
        assert_eq!(f.first_free, PhysFrame::new(0x1a));
        // dom0's start_info has no console/xenstore rings: nothing is looked up.
        s.flags = SIF_INITDOMAIN;
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame::new(8), &owned).unwrap();
        assert_eq!((f.console, f.store), (None, None));
    }
}

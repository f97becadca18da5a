//! Validating `start_info` and deriving where free memory starts.

use crate::abi::{StartInfo, SIF_INITDOMAIN, START_INFO_MAGIC, VIRT_BASE};
use core::fmt;
use pvops_core::addr::{FrameRange, PhysFrame, PAGE_SIZE};

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
    /// The command line is not NUL-terminated UTF-8.
    BadCmdline,
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
    Ok(PhysFrame(pfn))
}

/// Checks `si` (found at virtual address `si_va`, entered with stack pointer `esp`).
///
/// The first free frame is past everything the builder placed after the image: the p2m list,
/// start_info, the xenstore and console pages, the bootstrap tables and the live boot stack
/// (the builder's order is not assumed: the maximum end is taken).
pub fn validate(
    si: &StartInfo,
    si_va: u32,
    esp: u32,
    image_end: PhysFrame,
) -> Result<XenBootFacts<'_>, StartInfoError> {
    if !si.magic.starts_with(START_INFO_MAGIC) {
        return Err(StartInfoError::BadMagic);
    }
    let nr = si.nr_pages;
    if nr == 0 || nr > (1 << 24) {
        return Err(StartInfoError::BadNrPages(nr));
    }
    let pt_base = pfn_of("pt_base", si.pt_base, nr)?;
    // Both builders (libxenguest's and Xen's own dom0 builder) put the boot stack page right
    // after the bootstrap tables, so the tables end below nr_pages.
    let pt_end = pt_base
        .0
        .checked_add(si.nr_pt_frames)
        .filter(|e| si.nr_pt_frames > 0 && *e < nr);
    let pt_end = pt_end.ok_or(StartInfoError::BadPtFrames(si.nr_pt_frames))?;
    let start_info = pfn_of("start_info", si_va, nr)?;
    // The p2m list (one 4-byte entry per page) must lie wholly inside the domain: the boot
    // reads all of it.
    pfn_of("mfn_list", si.mfn_list, nr)?;
    let p2m_end = ((si.mfn_list - VIRT_BASE) as u64 + nr as u64 * 4).div_ceil(PAGE_SIZE);
    if p2m_end > nr as u64 {
        return Err(StartInfoError::OutsideRegion {
            field: "mfn_list",
            va: si.mfn_list,
        });
    }
    let p2m_end = p2m_end as u32;
    let stack = pfn_of("esp", esp.saturating_sub(1), nr)?;
    let first_free = [
        image_end.0,
        pt_end + 1,
        start_info.0 + 1,
        p2m_end,
        stack.0 + 1,
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
            end: PhysFrame(pt_end),
        },
        start_info,
        first_free: PhysFrame(first_free),
        cmdline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap();
        assert_eq!(f.cmdline, "hello");
    }

    #[test]
    fn good_start_info() {
        let s = si();
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap();
        assert_eq!(f.pt_base, PhysFrame(0x12));
        assert_eq!(
            f.bootstrap_tables,
            FrameRange {
                start: PhysFrame(0x12),
                end: PhysFrame(0x16)
            }
        );
        assert_eq!(f.first_free, PhysFrame(0x17));
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
            validate(&s, 0xC001_1000, 0xC001_1800, PhysFrame(8)).unwrap_err(),
            StartInfoError::BadPtFrames(4)
        );
        s.nr_pages = 0x17;
        let f = validate(&s, 0xC001_1000, 0xC001_1800, PhysFrame(8)).unwrap();
        assert_eq!(f.first_free, PhysFrame(0x17));
    }

    /// Found by `cargo xtask fuzz` (start_info): only the p2m list's first entry was checked,
    /// so a list running past the domain's last page was accepted and then read by the boot.
    #[test]
    fn p2m_list_running_past_the_domain_is_refused() {
        let mut s = si();
        // 0x2000 entries = 8 pages; at pfn 0x1ff9 the last one would be pfn 0x2000.
        s.mfn_list = 0xC1FF_9000;
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap_err(),
            StartInfoError::OutsideRegion {
                field: "mfn_list",
                va: 0xC1FF_9000
            }
        );
        s.mfn_list = 0xC1FF_8000;
        let f = validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap();
        assert_eq!(f.first_free, PhysFrame(0x2000));
    }

    #[test]
    fn bad_start_info() {
        let mut s = si();
        s.magic[14] = b'x';
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap_err(),
            StartInfoError::BadMagic
        );
        let mut s = si();
        s.nr_pt_frames = 0;
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap_err(),
            StartInfoError::BadPtFrames(0)
        );
        let mut s = si();
        s.pt_base = 0x1000;
        assert!(matches!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)),
            Err(StartInfoError::OutsideRegion {
                field: "pt_base",
                ..
            })
        ));
        let mut s = si();
        s.cmd_line = [b'a'; 1024];
        assert_eq!(
            validate(&s, 0xC001_1000, 0xC001_7000, PhysFrame(8)).unwrap_err(),
            StartInfoError::BadCmdline
        );
    }
}

//! Typed addresses, frame numbers and page-table indices: virtual, pseudo-physical and machine.
//!
//! On bare metal a pseudo-physical address *is* the machine address. Under Xen PV they differ:
//! the guest sees a contiguous pseudo-physical space, page-table entries hold machine
//! addresses, and the backend translates (p2m / m2p). Keeping three distinct types makes a
//! pseudo-physical frame written into a PTE a compile error instead of a crash under Xen.
//!
//! Every type keeps its value in a private field, so its invariant holds wherever one exists:
//! addresses and frame numbers may hold any value of their width (a firmware map may name any
//! 64-bit address; a frame whose number does not fit 32 bits has no [`PhysFrame`]), and the
//! conversions that could lose bits ([`PhysAddr::frame`], [`MachineAddr::frame`]) are checked.
//! An entry index ([`EntryIndex`], [`PdptIndex`]) is checked when it is made, so a table access
//! through one never leaves its 4 KiB frame.

use core::fmt;

/// Size of a small page (and of every page-table frame) in bytes.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A 32-bit kernel virtual address (any value).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(u32);

/// A pseudo-physical address: what the kernel believes is physical memory (any 64-bit value,
/// as a firmware map may name it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

/// A machine (host-physical) address: what page-table entries and the MMU use (any 64-bit
/// value; [`MachineAddr::frame`] is checked).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct MachineAddr(u64);

/// A pseudo-physical frame number (a "pfn"); every `u32` is one (up to 16 TiB).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysFrame(u32);

/// A machine frame number (an "mfn"); every `u32` is one (up to 16 TiB, within PAE's 52 bits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct MachineFrame(u32);

/// Index of an entry in an L1 or L2 table (or in the frame that holds a PDPT): always
/// below [`crate::paging::ENTRIES`] (512), checked when it is made.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct EntryIndex(u16);

/// Index of a PDPT (L3) entry: always below [`crate::paging::PDPT_ENTRIES`] (4), checked when
/// it is made.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct PdptIndex(u8);

impl EntryIndex {
    /// The index `i`, or `None` unless `i < 512`.
    pub const fn new(i: usize) -> Option<EntryIndex> {
        if i < crate::paging::ENTRIES {
            Some(EntryIndex(i as u16))
        } else {
            None
        }
    }
    /// The index `i` in a constant; a value of 512 or more fails to compile (or panics when
    /// called at run time).
    pub const fn new_const(i: usize) -> EntryIndex {
        match EntryIndex::new(i) {
            Some(e) => e,
            None => panic!("entry index out of range"),
        }
    }
    /// Index 0..512, for every entry of a table in order.
    pub fn all() -> impl DoubleEndedIterator<Item = EntryIndex> + Clone {
        (0..crate::paging::ENTRIES as u16).map(EntryIndex)
    }
    /// The index as a `usize` (< 512).
    pub const fn get(self) -> usize {
        self.0 as usize
    }
    /// Byte offset of the entry within its table frame (< 4096).
    pub const fn byte_offset(self) -> usize {
        self.0 as usize * 8
    }
}

impl PdptIndex {
    /// The index `i`, or `None` unless `i < 4`.
    pub const fn new(i: usize) -> Option<PdptIndex> {
        if i < crate::paging::PDPT_ENTRIES {
            Some(PdptIndex(i as u8))
        } else {
            None
        }
    }
    /// The index `i` in a constant; a value of 4 or more fails to compile (or panics when
    /// called at run time).
    pub const fn new_const(i: usize) -> PdptIndex {
        match PdptIndex::new(i) {
            Some(e) => e,
            None => panic!("PDPT index out of range"),
        }
    }
    /// Indices 0..4 in order.
    pub fn all() -> impl DoubleEndedIterator<Item = PdptIndex> + Clone {
        (0..crate::paging::PDPT_ENTRIES as u8).map(PdptIndex)
    }
    /// The index as a `usize` (< 4).
    pub const fn get(self) -> usize {
        self.0 as usize
    }
    /// The same slot as an index into the PDPT's frame.
    pub const fn entry(self) -> EntryIndex {
        EntryIndex(self.0 as u16)
    }
}

impl From<PdptIndex> for EntryIndex {
    fn from(i: PdptIndex) -> EntryIndex {
        i.entry()
    }
}

impl VirtAddr {
    /// The address `raw` (every 32-bit value is a virtual address).
    pub const fn new(raw: u32) -> VirtAddr {
        VirtAddr(raw)
    }
    /// The address as a `u32`.
    pub const fn as_u32(self) -> u32 {
        self.0
    }
    /// The address as a `usize` (for pointer casts on the 32-bit target).
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
    /// The address rounded down to its page.
    pub const fn page_base(self) -> VirtAddr {
        VirtAddr(self.0 & !(PAGE_SIZE as u32 - 1))
    }
    /// Offset of the address inside its page.
    pub const fn page_offset(self) -> u32 {
        self.0 & (PAGE_SIZE as u32 - 1)
    }
    /// Adds `bytes`, or `None` on overflow past 4 GiB.
    pub const fn checked_add(self, bytes: u32) -> Option<VirtAddr> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(VirtAddr(v)),
            None => None,
        }
    }
    /// Adds `bytes` modulo 4 GiB.
    pub const fn wrapping_add(self, bytes: u32) -> VirtAddr {
        VirtAddr(self.0.wrapping_add(bytes))
    }
    /// Index into the L3 (PDPT): bits 31..30.
    pub const fn l3_index(self) -> PdptIndex {
        PdptIndex((self.0 >> 30) as u8)
    }
    /// Index into an L2 (page directory): bits 29..21.
    pub const fn l2_index(self) -> EntryIndex {
        EntryIndex(((self.0 >> 21) & 0x1ff) as u16)
    }
    /// Index into an L1 (page table): bits 20..12.
    pub const fn l1_index(self) -> EntryIndex {
        EntryIndex(((self.0 >> 12) & 0x1ff) as u16)
    }
}

impl PhysAddr {
    /// The address `raw` (every 64-bit value is one).
    pub const fn new(raw: u64) -> PhysAddr {
        PhysAddr(raw)
    }
    /// The address as a `u64`.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The frame containing this address, or `None` when its number does not fit 32 bits
    /// (16 TiB and up): never a truncated frame.
    pub const fn frame(self) -> Option<PhysFrame> {
        let f = self.0 >> PAGE_SHIFT;
        if f <= u32::MAX as u64 {
            Some(PhysFrame(f as u32))
        } else {
            None
        }
    }
    /// Offset of the address inside its frame.
    pub const fn frame_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
    /// Adds `bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<PhysAddr> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }
}

impl MachineAddr {
    /// The address `raw` (every 64-bit value is one).
    pub const fn new(raw: u64) -> MachineAddr {
        MachineAddr(raw)
    }
    /// The address as a `u64`.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The frame containing this address, or `None` when its number does not fit 32 bits:
    /// never a truncated frame.
    pub const fn frame(self) -> Option<MachineFrame> {
        let f = self.0 >> PAGE_SHIFT;
        if f <= u32::MAX as u64 {
            Some(MachineFrame(f as u32))
        } else {
            None
        }
    }
    /// Offset of the address inside its frame.
    pub const fn frame_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
    /// Adds `bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<MachineAddr> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(MachineAddr(v)),
            None => None,
        }
    }
}

impl PhysFrame {
    /// The frame numbered `pfn`.
    pub const fn new(pfn: u32) -> PhysFrame {
        PhysFrame(pfn)
    }
    /// The frame number.
    pub const fn number(self) -> u32 {
        self.0
    }
    /// First byte of the frame.
    pub const fn start(self) -> PhysAddr {
        PhysAddr((self.0 as u64) << PAGE_SHIFT)
    }
    /// The frame `n` frames further on, or `None` on overflow.
    pub const fn checked_add(self, n: u32) -> Option<PhysFrame> {
        match self.0.checked_add(n) {
            Some(v) => Some(PhysFrame(v)),
            None => None,
        }
    }
}

impl MachineFrame {
    /// The frame numbered `mfn`.
    pub const fn new(mfn: u32) -> MachineFrame {
        MachineFrame(mfn)
    }
    /// The frame number.
    pub const fn number(self) -> u32 {
        self.0
    }
    /// First byte of the frame.
    pub const fn start(self) -> MachineAddr {
        MachineAddr((self.0 as u64) << PAGE_SHIFT)
    }
}

macro_rules! hex_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:#x})"), self.0)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    )*};
}
hex_debug!(VirtAddr, PhysAddr, MachineAddr, PhysFrame, MachineFrame);

impl fmt::Display for EntryIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for PdptIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A half-open range of pseudo-physical frames `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FrameRange {
    /// First frame in the range.
    pub start: PhysFrame,
    /// One past the last frame.
    pub end: PhysFrame,
}

impl FrameRange {
    /// An empty range.
    pub const EMPTY: FrameRange = FrameRange {
        start: PhysFrame(0),
        end: PhysFrame(0),
    };
    /// Number of frames.
    pub const fn len(&self) -> u32 {
        self.end.0.saturating_sub(self.start.0)
    }
    /// True when the range holds no frame.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True when `f` lies in the range.
    pub const fn contains(&self, f: PhysFrame) -> bool {
        f.0 >= self.start.0 && f.0 < self.end.0
    }
    /// The frames in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = PhysFrame> {
        (self.start.0..self.end.0).map(PhysFrame::new)
    }
    /// True when the two ranges share a frame (an empty range shares none).
    pub const fn overlaps(&self, other: &FrameRange) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.start.0 < other.end.0
            && other.start.0 < self.end.0
    }
    /// True when every frame of `other` lies in `self` (an empty `other` always does).
    pub const fn covers(&self, other: &FrameRange) -> bool {
        other.is_empty() || (self.start.0 <= other.start.0 && other.end.0 <= self.end.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn indices() {
        let v = VirtAddr::new(0xF560_3123);
        assert_eq!(v.l3_index().get(), 3);
        assert_eq!(v.l2_index().get(), 0x1ab);
        assert_eq!(v.l1_index().get(), 3);
        assert_eq!(v.page_offset(), 0x123);
        assert_eq!(
            PhysAddr::new(0x1234_5678).frame(),
            Some(PhysFrame::new(0x12345))
        );
        assert_eq!(VirtAddr::new(u32::MAX).checked_add(1), None);
    }

    /// Issue 11: an entry index is checked when it is made (< 512; < 4 for the PDPT), so a
    /// table access through one never leaves its frame (the mapper used to wrap with `% 512`).
    #[test]
    fn entry_index_is_checked_at_construction() {
        assert_eq!(EntryIndex::new(511).map(EntryIndex::get), Some(511));
        assert_eq!(EntryIndex::new(512), None);
        assert_eq!(EntryIndex::new(usize::MAX), None);
        assert_eq!(PdptIndex::new(3).map(PdptIndex::get), Some(3));
        assert_eq!(PdptIndex::new(4), None);
        assert_eq!(EntryIndex::from(PdptIndex::new_const(2)).byte_offset(), 16);
        assert_eq!(EntryIndex::all().count(), 512);
        assert_eq!(
            EntryIndex::all().last().map(EntryIndex::byte_offset),
            Some(4088)
        );
    }

    /// Issue 11: an address whose frame number does not fit 32 bits has no frame (it was
    /// truncated to a low frame before).
    #[test]
    fn frame_of_an_address_is_never_truncated() {
        assert_eq!(PhysAddr::new(1 << 44).frame(), None);
        assert_eq!(MachineAddr::new((1 << 44) + 0x1000).frame(), None);
        assert_eq!(
            PhysAddr::new((1 << 44) - 1).frame(),
            Some(PhysFrame::new(u32::MAX))
        );
    }

    #[test]
    fn ranges_overlap_and_cover() {
        let r = |a, b| FrameRange {
            start: PhysFrame::new(a),
            end: PhysFrame::new(b),
        };
        assert!(r(1, 4).overlaps(&r(3, 5)));
        assert!(!r(1, 3).overlaps(&r(3, 5)));
        assert!(!r(1, 4).overlaps(&r(2, 2)));
        assert!(r(1, 4).covers(&r(2, 4)));
        assert!(!r(1, 4).covers(&r(0, 2)));
        assert!(r(1, 4).covers(&FrameRange::EMPTY));
    }
}

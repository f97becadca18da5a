//! Typed addresses and frame numbers: virtual, pseudo-physical and machine.
//!
//! On bare metal a pseudo-physical address *is* the machine address. Under Xen PV they differ:
//! the guest sees a contiguous pseudo-physical space, page-table entries hold machine
//! addresses, and the backend translates (p2m / m2p). Keeping three distinct types makes a
//! pseudo-physical frame written into a PTE a compile error instead of a crash under Xen.

use core::fmt;

/// Size of a small page (and of every page-table frame) in bytes.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A 32-bit kernel virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(pub u32);

/// A pseudo-physical address: what the kernel believes is physical memory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(pub u64);

/// A machine (host-physical) address: what page-table entries and the MMU use.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct MachineAddr(pub u64);

/// A pseudo-physical frame number (a "pfn").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysFrame(pub u32);

/// A machine frame number (an "mfn").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct MachineFrame(pub u32);

impl VirtAddr {
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
    /// Index into the L3 (PDPT): bits 31..30.
    pub const fn l3_index(self) -> usize {
        (self.0 >> 30) as usize
    }
    /// Index into an L2 (page directory): bits 29..21.
    pub const fn l2_index(self) -> usize {
        ((self.0 >> 21) & 0x1ff) as usize
    }
    /// Index into an L1 (page table): bits 20..12.
    pub const fn l1_index(self) -> usize {
        ((self.0 >> 12) & 0x1ff) as usize
    }
}

impl PhysAddr {
    /// The frame containing this address.
    pub const fn frame(self) -> PhysFrame {
        PhysFrame((self.0 >> PAGE_SHIFT) as u32)
    }
    /// Offset of the address inside its frame.
    pub const fn frame_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl MachineAddr {
    /// The frame containing this address.
    pub const fn frame(self) -> MachineFrame {
        MachineFrame((self.0 >> PAGE_SHIFT) as u32)
    }
    /// Offset of the address inside its frame.
    pub const fn frame_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl PhysFrame {
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
        (self.start.0..self.end.0).map(PhysFrame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn indices() {
        let v = VirtAddr(0xF560_3123);
        assert_eq!(v.l3_index(), 3);
        assert_eq!(v.l2_index(), 0x1ab);
        assert_eq!(v.l1_index(), 3);
        assert_eq!(v.page_offset(), 0x123);
        assert_eq!(PhysAddr(0x1234_5678).frame(), PhysFrame(0x12345));
        assert_eq!(VirtAddr(u32::MAX).checked_add(1), None);
    }
}

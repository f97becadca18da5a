//! PAE page-table types: 64-bit entries, 512-entry tables, the 4-entry PDPT in its own frame.

use crate::addr::{EntryIndex, MachineAddr, MachineFrame, PdptIndex, PhysFrame, PAGE_SIZE};
use static_assertions::{assert_eq_size, const_assert_eq};

bitflags::bitflags! {
    /// Flags of a PAE page-table entry (any level).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct PteFlags: u64 {
        /// The entry maps something.
        const PRESENT = 1 << 0;
        /// Writes allowed (reserved in PDPT entries on bare hardware).
        const WRITABLE = 1 << 1;
        /// Ring 3 may access.
        const USER = 1 << 2;
        /// Write-through caching.
        const WRITE_THROUGH = 1 << 3;
        /// Caching disabled.
        const NO_CACHE = 1 << 4;
        /// Set by the CPU on access.
        const ACCESSED = 1 << 5;
        /// Set by the CPU on write (L1 entries).
        const DIRTY = 1 << 6;
        /// In an L2 entry: a 2 MiB page. In an L1 entry this bit is PAT. pvops never sets it
        /// in the kernel's table: a Xen PV guest may not use large pages.
        const HUGE = 1 << 7;
        /// Global (not flushed on cr3 load).
        const GLOBAL = 1 << 8;
        /// No-execute. Only valid when CPUID reports NX *and* EFER.NXE is on; bit 63 is
        /// reserved (a fault) otherwise.
        const NO_EXECUTE = 1 << 63;
    }
}

/// Mask of the machine-address bits of a PAE entry (bits 12..51).
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Flags of an entry that links a lower-level table (L2 entry -> L1, as Linux's `_PAGE_TABLE`
/// without USER).
pub const TABLE_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::WRITABLE)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY);
/// Flags of a PDPT (L3) entry: Present only. RW/US are reserved bits in a PDPTE on bare
/// hardware and Xen rejects PCD/PWT.
pub const PDPT_FLAGS: PteFlags = PteFlags::PRESENT;
/// Flags of a kernel data mapping (read/write, A and D preset so the CPU need not set them).
pub const KERNEL_RW: PteFlags = TABLE_FLAGS;
/// Flags of a kernel read-only mapping (used for page-table frames under Xen).
pub const KERNEL_RO: PteFlags = PteFlags::PRESENT
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY);

/// One 64-bit PAE entry. Its address is always a *machine* address.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct PageTableEntry(u64);

impl PageTableEntry {
    /// The all-zero (non-present) entry. Non-present entries are kept all-zero (L1TF rules).
    pub const EMPTY: PageTableEntry = PageTableEntry(0);

    /// An entry mapping `frame` with `flags`.
    pub const fn new(frame: MachineFrame, flags: PteFlags) -> PageTableEntry {
        PageTableEntry(frame.start().as_u64() | flags.bits())
    }
    /// Builds an entry from its raw bits.
    pub const fn from_bits(bits: u64) -> PageTableEntry {
        PageTableEntry(bits)
    }
    /// Raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Low 32 bits (holds Present).
    pub const fn low(self) -> u32 {
        self.0 as u32
    }
    /// High 32 bits.
    pub const fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The flags (unknown bits dropped).
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }
    /// True when Present is set.
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }
    /// The machine address the entry points at.
    pub const fn addr(self) -> MachineAddr {
        MachineAddr::new(self.0 & ADDRESS_MASK)
    }
    /// The machine frame the entry points at, or `None` when its number does not fit a
    /// [`MachineFrame`] (address bits 44..51 set: nothing pvops builds).
    pub const fn frame(self) -> Option<MachineFrame> {
        self.addr().frame()
    }
    /// The same entry with `flags` replaced.
    pub const fn with_flags(self, flags: PteFlags) -> PageTableEntry {
        PageTableEntry((self.0 & ADDRESS_MASK) | flags.bits())
    }
}

impl core::fmt::Debug for PageTableEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PTE({:#x}, {:?})", self.addr().as_u64(), self.flags())
    }
}

/// Number of entries in an L1 or L2 table (and in the frame that holds a PDPT).
pub const ENTRIES: usize = 512;
/// Number of meaningful PDPT (L3) entries.
pub const PDPT_ENTRIES: usize = 4;
/// Bytes mapped by one L1 table (one L2 entry).
pub const L2_SPAN: u32 = 2 * 1024 * 1024;

/// A 4 KiB page-table frame: an L1, an L2, or the PDPT. The PDPT is kept in a whole frame
/// because Xen wants one and bare metal only needs 32-byte alignment, which 4 KiB satisfies.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct PageTable {
    /// The entries.
    pub entries: [PageTableEntry; ENTRIES],
}

impl PageTable {
    /// An all-empty table.
    pub const fn new() -> PageTable {
        PageTable {
            entries: [PageTableEntry::EMPTY; ENTRIES],
        }
    }
}

impl Default for PageTable {
    fn default() -> Self {
        Self::new()
    }
}

assert_eq_size!(PageTableEntry, u64);
assert_eq_size!(PageTable, [u8; PAGE_SIZE as usize]);
const_assert_eq!(core::mem::align_of::<PageTable>(), PAGE_SIZE as usize);
const_assert_eq!(core::mem::align_of::<PageTable>() % 32, 0);

/// The level of a page table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    /// A page table: entries map 4 KiB pages.
    L1,
    /// A page directory: entries link L1 tables.
    L2,
    /// The PDPT: 4 entries link L2 tables.
    L3,
}

impl Level {
    /// Short lowercase name (`l1`, `l2`, `l3`).
    pub const fn name(self) -> &'static str {
        match self {
            Level::L1 => "l1",
            Level::L2 => "l2",
            Level::L3 => "l3",
        }
    }
}

/// One entry slot: the pseudo-physical frame of a table and an index into it. Backends turn it
/// into a store (native) or into the machine address of an `mmu_update` request (Xen). The
/// index is an [`EntryIndex`], so the slot never lies outside its table's frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EntrySlot {
    table: PhysFrame,
    index: EntryIndex,
}

impl EntrySlot {
    /// Entry `index` of the L1 or L2 table (or PDPT frame) `table`.
    pub const fn new(table: PhysFrame, index: EntryIndex) -> EntrySlot {
        EntrySlot { table, index }
    }
    /// Entry `index` (< 4) of the PDPT `table`.
    pub const fn pdpt(table: PhysFrame, index: PdptIndex) -> EntrySlot {
        EntrySlot {
            table,
            index: index.entry(),
        }
    }
    /// The table holding the entry.
    pub const fn table(self) -> PhysFrame {
        self.table
    }
    /// Index of the entry (< 512).
    pub const fn index(self) -> EntryIndex {
        self.index
    }
    /// Byte offset of the entry within its table frame (< 4096).
    pub const fn byte_offset(self) -> u64 {
        self.index.byte_offset() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn entry_bits() {
        let e = PageTableEntry::new(MachineFrame::new(0x12345), KERNEL_RW);
        assert_eq!(e.bits(), 0x1234_5063);
        assert_eq!(e.frame(), Some(MachineFrame::new(0x12345)));
        assert!(e.is_present());
        assert_eq!(e.with_flags(KERNEL_RO).bits(), 0x1234_5061);
        let nx = PageTableEntry::new(
            MachineFrame::new(0xfffff),
            PteFlags::PRESENT | PteFlags::NO_EXECUTE,
        );
        assert_eq!(nx.high(), 0x8000_0000);
        assert_eq!(nx.addr(), MachineAddr::new(0xffff_f000));
        // An entry with address bits above what a MachineFrame numbers has no frame.
        assert_eq!(PageTableEntry::from_bits(1 << 50 | 1).frame(), None);
    }
}

//! What the simulated machine reports: its errors, the page-table writes and events it logs,
//! and the translations of its walker.

use super::*;

/// Errors of the simulated backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// A failure injected with [`SimMachine::fail_at`] at page-table operation `n`.
    Injected {
        /// The operation's number (1-based).
        n: u64,
        /// Which operation.
        op: &'static str,
    },
    /// The pseudo-physical frame is outside RAM.
    NoSuchFrame(PhysFrame),
    /// A write to a frame that is not a table of the level the operation needs.
    NotATable {
        /// The operation.
        op: &'static str,
        /// The frame written.
        table: PhysFrame,
        /// The level the operation needs.
        want: Level,
        /// What the frame is (`None`: ordinary memory).
        is: Option<Level>,
    },
    /// A PDPT index of 4 or more.
    BadIndex {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: EntrySlot,
    },
    /// A present entry links a frame that is not an announced table of the next level.
    BadLink {
        /// The operation.
        op: &'static str,
        /// The slot written.
        slot: EntrySlot,
        /// The entry.
        entry: PageTableEntry,
    },
    /// `write_cr3` of a PDPT with reserved bits set in a present entry (#GP on hardware).
    PdpteReserved {
        /// The PDPT index.
        index: usize,
        /// The entry's bits.
        bits: u64,
    },
    /// `alloc_pt` of a frame that is already a table.
    AlreadyTable {
        /// The frame.
        frame: PhysFrame,
        /// Its current level.
        level: Level,
    },
    /// `alloc_pt` of a frame that is not zeroed.
    NotZeroed(PhysFrame),
    /// `release_pt` of a frame that is still linked from a table.
    StillLinked {
        /// The frame released.
        frame: PhysFrame,
        /// The table that still links it.
        from: PhysFrame,
        /// The index there.
        index: usize,
    },
    /// `pagetable_setup_done` while the given root is not the live one.
    NotLive {
        /// The root passed.
        root: PhysFrame,
        /// The live root.
        live: PhysFrame,
    },
    /// `pagetable_setup_done` twice.
    AlreadyRetired,
    /// `set_pte` on an entry that is present: its split store could show the walker the old
    /// low half (Present) with the new high half (use `set_pte_atomic`).
    PresentTarget {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: EntrySlot,
        /// The present entry found there.
        old: PageTableEntry,
    },
    /// A store whose half order lets the walker see, between the two halves, a present entry
    /// that is neither the old nor the new one (e.g. a clear that zeroes the high half while
    /// Present is still set). Nothing was written.
    TornEntry {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: EntrySlot,
        /// The entry before.
        old: PageTableEntry,
        /// The entry asked for.
        new: PageTableEntry,
        /// What the walker could see between the halves.
        seen: PageTableEntry,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lvl = |l: Option<Level>| l.map_or("ordinary memory", Level::name);
        match self {
            Self::Injected { n, op } => {
                write!(f, "sim: injected failure of page-table op #{n} ({op})")
            }
            Self::NoSuchFrame(p) => write!(f, "sim: pfn {p} is outside RAM"),
            Self::NotATable {
                op,
                table,
                want,
                is,
            } => write!(
                f,
                "sim: {op} into pfn {table}, which is {} (needs {})",
                lvl(*is),
                want.name()
            ),
            Self::BadIndex { op, slot } => {
                write!(
                    f,
                    "sim: {op} at index {} of pfn {}",
                    slot.index(),
                    slot.table()
                )
            }
            Self::BadLink { op, slot, entry } => write!(
                f,
                "sim: {op} pfn {}[{}] = {entry:?} links no announced table",
                slot.table(),
                slot.index()
            ),
            Self::PdpteReserved { index, bits } => {
                write!(
                    f,
                    "sim: #GP on cr3 load: PDPTE {index} = {bits:#x} has reserved bits"
                )
            }
            Self::AlreadyTable { frame, level } => {
                write!(
                    f,
                    "sim: alloc_pt of pfn {frame}, already an {} table",
                    level.name()
                )
            }
            Self::NotZeroed(p) => write!(f, "sim: alloc_pt of pfn {p}, which is not zeroed"),
            Self::StillLinked { frame, from, index } => {
                write!(
                    f,
                    "sim: release_pt of pfn {frame}, still linked from pfn {from}[{index}]"
                )
            }
            Self::NotLive { root, live } => {
                write!(
                    f,
                    "sim: pagetable_setup_done({root}) while pfn {live} is live"
                )
            }
            Self::AlreadyRetired => write!(f, "sim: bootstrap table retired twice"),
            Self::PresentTarget { op, slot, old } => write!(
                f,
                "sim: {op} over present pfn {}[{}] = {old:?} (a split store: use set_pte_atomic)",
                slot.table(),
                slot.index()
            ),
            Self::TornEntry {
                op,
                slot,
                old,
                new,
                seen,
            } => write!(
                f,
                "sim: {op} pfn {}[{}] {old:?} -> {new:?}: between its halves the walker sees {seen:?}",
                slot.table(),
                slot.index()
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// The order in which a store writes the two 32-bit halves of a PAE entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOrder {
    /// The high half, then the low half holding Present (`set_pte`).
    HighThenLow,
    /// One 64-bit store (`cmpxchg8b`: `set_pte_atomic`, `set_pmd`, `set_pud`).
    Whole,
    /// The low half first, then the high half (the clears).
    LowThenHigh,
}

/// One store the simulated CPU made into a page-table entry, as the walker sees memory
/// change: a 32-bit half or a whole 64-bit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfStore {
    /// The low 32 bits (holding Present).
    Low(u32),
    /// The high 32 bits.
    High(u32),
    /// All 64 bits at once.
    Whole(u64),
}

/// One page-table entry written through the ops (the bootstrap stub's writes are not logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtWrite {
    /// The page-table operation's number (shared with [`SimEvent`]s).
    pub seq: u64,
    /// The operation (`set_pte`, `set_pte_atomic`, `set_pmd`, `set_pud`, `pte_clear`,
    /// `pmd_clear`, `pud_clear`).
    pub op: &'static str,
    /// The level of the table written (the clears log an empty entry).
    pub level: Level,
    /// Where.
    pub slot: EntrySlot,
    /// What.
    pub value: PageTableEntry,
    /// The stores that made it, in order (one or two).
    pub stores: [Option<HalfStore>; 2],
}

/// The page-table operations other than entry writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimEvent {
    /// `write_cr3(root)`.
    Cr3 {
        /// Operation number.
        seq: u64,
        /// The new root.
        root: PhysFrame,
    },
    /// `alloc_pt`.
    AllocPt {
        /// Operation number.
        seq: u64,
        /// The frame.
        frame: PhysFrame,
        /// Its level.
        level: Level,
    },
    /// `release_pt`.
    ReleasePt {
        /// Operation number.
        seq: u64,
        /// The frame.
        frame: PhysFrame,
        /// Its level.
        level: Level,
    },
    /// `pagetable_setup_start`.
    SetupStart {
        /// Operation number.
        seq: u64,
        /// The kernel root.
        root: PhysFrame,
    },
    /// `pagetable_setup_done`.
    SetupDone {
        /// Operation number.
        seq: u64,
        /// The kernel root.
        root: PhysFrame,
        /// The frames handed back.
        released: FrameRange,
    },
    /// `flush_tlb_single`.
    FlushSingle {
        /// Operation number.
        seq: u64,
        /// The page.
        va: VirtAddr,
    },
    /// `flush_tlb_all`.
    FlushAll {
        /// Operation number.
        seq: u64,
    },
    /// cr3 reloaded with its own value (bare metal's `pud_clear` of the live PDPT): the four
    /// PDPT entries are latched again and the non-global TLB goes.
    Cr3Reload {
        /// Operation number.
        seq: u64,
    },
}

impl SimEvent {
    /// The operation number.
    pub fn seq(&self) -> u64 {
        match *self {
            SimEvent::Cr3 { seq, .. }
            | SimEvent::AllocPt { seq, .. }
            | SimEvent::ReleasePt { seq, .. }
            | SimEvent::SetupStart { seq, .. }
            | SimEvent::SetupDone { seq, .. }
            | SimEvent::FlushSingle { seq, .. }
            | SimEvent::FlushAll { seq }
            | SimEvent::Cr3Reload { seq } => seq,
        }
    }
}

/// Entry writes by operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// `set_pte`.
    pub pte: u64,
    /// `set_pmd`.
    pub pmd: u64,
    /// `set_pud`.
    pub pud: u64,
    /// `pte_clear`.
    pub clear: u64,
    /// `set_pte_atomic`.
    pub pte_atomic: u64,
    /// `pmd_clear`.
    pub pmd_clear: u64,
    /// `pud_clear`.
    pub pud_clear: u64,
}

/// A memory access kind for the walker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read.
    Read,
    /// A write.
    Write,
}

/// The result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The machine frame of the page.
    pub mfn: MachineFrame,
    /// The pseudo-physical frame, when the machine frame belongs to the guest.
    pub pfn: Option<PhysFrame>,
    /// Writes allowed (RW in the L2 and the L1 entry).
    pub writable: bool,
    /// Mapped by a 2 MiB page.
    pub huge: bool,
    /// Global.
    pub global: bool,
    /// The leaf entry (the L2 entry for a 2 MiB page).
    pub leaf: PageTableEntry,
}

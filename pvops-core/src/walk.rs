//! The one page-table walker: a visitor over the entries that translate a virtual address
//! (as Mini-OS's `walk_pt`), used by the mapper, the Xen backend's live-entry reads and the
//! Xen conformance cases. Each caller says how to read an entry and follow a link
//! ([`TableRead`]); the walk itself (levels, indexes, where it stops) is written once.

use crate::addr::{PhysFrame, VirtAddr};
use crate::paging::{EntrySlot, Level, PageTableEntry, PteFlags};

/// How a walk reads tables.
pub trait TableRead {
    /// Why an entry could not be read or a link followed.
    type Error;
    /// The entry at `slot` as the walk must see it: a backend in lazy mode includes the
    /// writes it has queued but not issued ([`crate::ops::MmuOps::queued_entry`]).
    fn entry(&self, slot: EntrySlot) -> Result<PageTableEntry, Self::Error>;
    /// The pseudo-physical table a present, non-leaf `entry` links.
    fn table(&self, entry: PageTableEntry) -> Result<PhysFrame, Self::Error>;
}

/// What the visitor wants after seeing an entry that links a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Go down into the linked table.
    Descend,
    /// End the walk at this entry.
    Stop,
}

/// Where a walk ended: the last entry it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walked {
    /// The level of the table holding the entry.
    pub level: Level,
    /// The entry's slot.
    pub slot: EntrySlot,
    /// The entry.
    pub entry: PageTableEntry,
}

impl Walked {
    /// True when the walk reached a present L1 entry (a 4 KiB mapping).
    pub fn is_page(&self) -> bool {
        self.level == Level::L1 && self.entry.is_present()
    }
    /// True when the walk stopped at a present 2 MiB page (an L2 entry with PS set).
    pub fn is_huge(&self) -> bool {
        self.level == Level::L2 && is_huge(self.entry)
    }
}

fn is_huge(e: PageTableEntry) -> bool {
    e.is_present() && e.flags().contains(PteFlags::HUGE)
}

/// The slot of `va`'s entry in `table`, a table of `level`.
pub const fn slot_of(table: PhysFrame, va: VirtAddr, level: Level) -> EntrySlot {
    match level {
        Level::L3 => EntrySlot::pdpt(table, va.l3_index()),
        Level::L2 => EntrySlot::new(table, va.l2_index()),
        Level::L1 => EntrySlot::new(table, va.l1_index()),
    }
}

/// Walks the table rooted at `root` (a PDPT) for `va`, calling `visit` with every entry
/// read, top down. The walk goes down through present links while `visit` says
/// [`Visit::Descend`], and ends at an L1 entry, a non-present entry, a 2 MiB page, or where
/// `visit` says [`Visit::Stop`]; it returns that last entry.
pub fn walk<R: TableRead + ?Sized>(
    r: &R,
    root: PhysFrame,
    va: VirtAddr,
    mut visit: impl FnMut(Level, EntrySlot, PageTableEntry) -> Visit,
) -> Result<Walked, R::Error> {
    let mut table = root;
    for level in [Level::L3, Level::L2, Level::L1] {
        let slot = slot_of(table, va, level);
        let entry = r.entry(slot)?;
        let seen = visit(level, slot, entry);
        let leaf = level == Level::L1 || !entry.is_present() || is_huge(entry);
        if leaf || seen == Visit::Stop {
            return Ok(Walked { level, slot, entry });
        }
        table = r.table(entry)?;
    }
    unreachable!("the L1 level always ends the walk")
}

/// Walks to the end (no visitor): the entry mapping `va`, or the entry where the
/// translation stops.
pub fn walk_to<R: TableRead + ?Sized>(
    r: &R,
    root: PhysFrame,
    va: VirtAddr,
) -> Result<Walked, R::Error> {
    walk(r, root, va, |_, _, _| Visit::Descend)
}

/// Walks down to the entry of `level` for `va` (e.g. [`Level::L2`]: the entry that links
/// `va`'s L1), or wherever the translation stops above it.
pub fn walk_down_to<R: TableRead + ?Sized>(
    r: &R,
    root: PhysFrame,
    va: VirtAddr,
    level: Level,
) -> Result<Walked, R::Error> {
    walk(r, root, va, |l, _, _| {
        if l == level {
            Visit::Stop
        } else {
            Visit::Descend
        }
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::addr::MachineFrame;
    use crate::paging::TABLE_FLAGS;
    use std::collections::HashMap;

    /// Tables in a map, frames identity-mapped to machine frames.
    struct Mem(HashMap<(u32, usize), u64>);

    impl TableRead for Mem {
        type Error = ();
        fn entry(&self, slot: EntrySlot) -> Result<PageTableEntry, ()> {
            let key = (slot.table().number(), slot.index().get());
            Ok(PageTableEntry::from_bits(*self.0.get(&key).unwrap_or(&0)))
        }
        fn table(&self, e: PageTableEntry) -> Result<PhysFrame, ()> {
            Ok(PhysFrame::new(e.frame().ok_or(())?.number()))
        }
    }

    #[test]
    fn walks_stop_where_the_translation_does() {
        let va = VirtAddr::new(0xC020_3000);
        let mut m = Mem(HashMap::new());
        let link = |f| PageTableEntry::new(MachineFrame::new(f), TABLE_FLAGS).bits();
        m.0.insert((1, 3), link(2));
        let w = walk_to(&m, PhysFrame::new(1), va).unwrap();
        assert_eq!(
            (w.level, w.slot.table(), w.slot.index().get()),
            (Level::L2, PhysFrame::new(2), 1)
        );
        assert!(!w.is_page());
        m.0.insert((2, 1), link(3));
        m.0.insert((3, 3), link(0x99));
        let mut seen = std::vec::Vec::new();
        let w = walk(&m, PhysFrame::new(1), va, |l, s, _| {
            seen.push((l, s.index().get()));
            Visit::Descend
        })
        .unwrap();
        assert!(w.is_page());
        assert_eq!(w.entry.frame(), Some(MachineFrame::new(0x99)));
        assert_eq!(seen, [(Level::L3, 3), (Level::L2, 1), (Level::L1, 3)]);
        let w = walk_down_to(&m, PhysFrame::new(1), va, Level::L2).unwrap();
        assert_eq!(
            (w.level, w.entry.frame()),
            (Level::L2, Some(MachineFrame::new(3)))
        );
        m.0.insert((2, 1), link(3) | PteFlags::HUGE.bits());
        assert!(walk_to(&m, PhysFrame::new(1), va).unwrap().is_huge());
    }
}

//! How `XenMmu` reads and writes page tables: walks (the core's walker, through the lazy
//! queue), the state it keeps of frames (detached tables, page tables, pinned roots), the
//! plain stores into detached tables, and the read-only remaps when a table goes live.

use super::{XenError, XenMmu, DETACHED_FRAMES, MAX_PINNED};
use crate::abi::VIRT_BASE;
use crate::hypervisor::{BackendLog, Hypervisor};
use pvops_core::addr::{EntryIndex, MachineFrame, PhysFrame, VirtAddr, PAGE_SIZE};
use pvops_core::pae;
use pvops_core::paging::{
    EntrySlot, Level, PageTableEntry, PteFlags, ENTRIES, KERNEL_RO, KERNEL_RW, PDPT_ENTRIES,
};
use pvops_core::walk::{self, TableRead};

/// How a primitive stores into a table that is not live yet (see [`pvops_core::pae`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Store {
    /// `set_pte`: high half, then low half.
    Split,
    /// `set_pte_atomic`, `set_pmd`, `set_pud`, a present entry's flags: one 64-bit store.
    Whole,
    /// The clears: low half first.
    Clear,
}

impl<H: Hypervisor + BackendLog> XenMmu<H> {
    /// How far the live table maps the 1:1 region from VIRT_BASE, page by page.
    pub(super) fn measure_reach(&self) -> PhysFrame {
        let mut pfn = 0;
        while pfn < self.nr_pages {
            let va = VirtAddr::new(VIRT_BASE + pfn * PAGE_SIZE as u32);
            if self.live_entry(va).is_err() {
                break;
            }
            pfn += 1;
        }
        PhysFrame::new(pfn)
    }

    /// Entry `index` of `table` as a walk must see it: a queued (unissued) update of it
    /// first, else memory (page-table frames below `reach` are mapped, at least read-only).
    pub(super) fn read(
        &self,
        table: PhysFrame,
        index: impl Into<EntryIndex>,
    ) -> Result<PageTableEntry, XenError> {
        let index = index.into();
        if let Some(e) = self.queued_value(EntrySlot::new(table, index)) {
            return Ok(e);
        }
        if table >= self.reach {
            return Err(XenError::NotMapped {
                va: VirtAddr::new(VIRT_BASE.wrapping_add(table.number() << 12)),
            });
        }
        let p = self.hv.frame_ptr(table) as *const u64;
        // SAFETY: page-table frames are below `reach` (mapped, at least read-only) and an
        // EntryIndex is < 512.
        Ok(PageTableEntry::from_bits(unsafe {
            core::ptr::read_volatile(p.add(index.get()))
        }))
    }

    pub(super) fn to_phys(&self, mfn: MachineFrame) -> Option<PhysFrame> {
        let pfn = self.hv.m2p(mfn)?;
        (pfn.number() < self.nr_pages && self.hv.p2m(pfn) == Some(mfn)).then_some(pfn)
    }

    /// The L1 slot and entry mapping `va` in the table rooted at `root` (4 KiB pages only:
    /// a PV guest has no others), found by the core's walker.
    pub(super) fn entry_in(
        &self,
        root: PhysFrame,
        va: VirtAddr,
    ) -> Result<(EntrySlot, PageTableEntry), XenError> {
        let w = walk::walk_to(&Walk { mmu: self, va }, root, va)?;
        if !w.is_page() {
            return Err(XenError::NotMapped { va });
        }
        Ok((w.slot, w.entry))
    }

    /// The live L1 slot and entry mapping `va`.
    pub(super) fn live_entry(&self, va: VirtAddr) -> Result<(EntrySlot, PageTableEntry), XenError> {
        self.entry_in(self.cr3, va)
    }

    pub(super) fn mfn(&self, pfn: PhysFrame) -> Result<MachineFrame, XenError> {
        self.hv.p2m(pfn).ok_or(XenError::NoMachineFrame { pfn })
    }

    #[inline]
    pub(super) fn is_detached(&self, pfn: PhysFrame) -> bool {
        bit(&self.detached, pfn)
    }

    pub(super) fn set_detached(&mut self, pfn: PhysFrame, on: bool) -> bool {
        set_bit(&mut self.detached, pfn, on)
    }

    /// True when `pfn` is a page-table frame (announced, or Xen's bootstrap table).
    pub fn is_table(&self, pfn: PhysFrame) -> bool {
        bit(&self.tables, pfn)
    }

    pub(super) fn is_pinned(&self, root: PhysFrame) -> bool {
        self.pinned[..self.npinned].contains(&root)
    }

    pub(super) fn set_pinned(&mut self, root: PhysFrame, on: bool) {
        if let Some(i) = self.pinned[..self.npinned].iter().position(|r| *r == root) {
            if !on {
                self.pinned.copy_within(i + 1..self.npinned, i);
                self.npinned -= 1;
            }
        } else if on && self.npinned < MAX_PINNED {
            self.pinned[self.npinned] = root;
            self.npinned += 1;
        }
    }

    /// Makes the direct-map PTE of `pfn` in the table rooted at `root` read-only or writable
    /// if it maps it otherwise (a table that is not live: plain stores into its detached L1s).
    pub(super) fn patch_direct_map(
        &mut self,
        root: PhysFrame,
        pfn: PhysFrame,
        writable: bool,
    ) -> Result<(), XenError> {
        let va = VirtAddr::new(VIRT_BASE.wrapping_add(pfn.number() << 12));
        let Ok((slot, e)) = self.entry_in(root, va) else {
            return Ok(()); // not mapped there (yet): set_pte keeps it read-only later
        };
        if e.flags().contains(PteFlags::WRITABLE) != writable {
            let flags = if writable {
                e.flags() | PteFlags::WRITABLE
            } else {
                e.flags() - PteFlags::WRITABLE
            };
            self.store(slot, e.with_flags(flags), Store::Whole)?;
        }
        Ok(())
    }

    /// Writes one entry: a store of the primitive's kind ([`Store`]) into a detached table
    /// (Xen does not check tables that are not typed as page tables yet), an `mmu_update`
    /// into anything live (Xen writes the entry whole, so every primitive keeps its
    /// guarantee). Inlined: the direct map takes the plain-store path once per PTE, and as a
    /// call (its error written through memory) it cost about 60 cycles per PTE more than the
    /// stores themselves (guest-demo's store-phase profile: `set_pte` against `raw_store`).
    #[inline]
    pub(super) fn store(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
        how: Store,
    ) -> Result<(), XenError> {
        if self.is_detached(slot.table()) && slot.table() < self.reach {
            let p = self.hv.frame_ptr(slot.table()) as *mut u64;
            // SAFETY: a detached table frame is ours, reachable (checked), mapped writable and
            // page aligned; an EntryIndex is < 512.
            unsafe {
                let e = p.add(slot.index().get());
                match how {
                    Store::Split => pae::store_split(e, entry),
                    Store::Whole => pae::store_whole(e, entry),
                    Store::Clear => pae::clear(e),
                }
            }
            return Ok(());
        }
        self.update(slot, entry)
    }

    /// A detached table (and the detached tables it links, for an L2 or L3) goes live: every
    /// such frame is made read-only in the live address space, before Xen validates it.
    pub(super) fn attach(&mut self, table: PhysFrame, level: Level) -> Result<(), XenError> {
        if !self.is_detached(table) {
            return Ok(());
        }
        if level != Level::L1 {
            let count = if level == Level::L3 {
                PDPT_ENTRIES
            } else {
                ENTRIES
            };
            let child = if level == Level::L3 {
                Level::L2
            } else {
                Level::L1
            };
            for i in EntryIndex::all().take(count) {
                let e = self.read(table, i)?;
                if e.is_present() {
                    if let Some(c) = e.frame().and_then(|m| self.to_phys(m)) {
                        self.attach(c, child)?;
                    }
                }
            }
        }
        self.set_detached(table, false);
        self.set_writable(table, false)
    }

    /// A link into `slot.table()`: if that table is live and the linked table detached, the
    /// linked table goes live first.
    pub(super) fn link(
        &mut self,
        slot: EntrySlot,
        entry: PageTableEntry,
        child: Level,
    ) -> Result<(), XenError> {
        if entry.is_present() && !self.is_detached(slot.table()) {
            if let Some(c) = entry.frame().and_then(|m| self.to_phys(m)) {
                let was_lazy = self.lazy;
                self.lazy = true;
                let r = self.attach(c, child);
                self.lazy = was_lazy;
                r?;
            }
        }
        self.store(slot, entry, Store::Whole)
    }

    /// Maps `pfn` read-only or writable in the live 1:1 region (value computed, not read
    /// back, so queued updates of the same entry cannot be lost).
    pub(super) fn set_writable(&mut self, pfn: PhysFrame, writable: bool) -> Result<(), XenError> {
        let va = VirtAddr::new(VIRT_BASE + pfn.number() * PAGE_SIZE as u32);
        let (slot, _) = self.live_entry(va)?;
        let flags = if writable { KERNEL_RW } else { KERNEL_RO };
        let mfn = self.mfn(pfn)?;
        self.update(slot, PageTableEntry::new(mfn, flags))
    }
}

pub(super) fn bit(words: &[u64; DETACHED_FRAMES / 64], pfn: PhysFrame) -> bool {
    let i = pfn.number() as usize;
    i < DETACHED_FRAMES && words[i / 64] & (1 << (i % 64)) != 0
}

pub(super) fn set_bit(words: &mut [u64; DETACHED_FRAMES / 64], pfn: PhysFrame, on: bool) -> bool {
    let i = pfn.number() as usize;
    if i >= DETACHED_FRAMES {
        return false;
    }
    if on {
        words[i / 64] |= 1 << (i % 64);
    } else {
        words[i / 64] &= !(1 << (i % 64));
    }
    true
}

/// The tables of a `XenMmu` as the core's walker reads them (queued updates included).
struct Walk<'a, H: Hypervisor + BackendLog> {
    mmu: &'a XenMmu<H>,
    va: VirtAddr,
}

impl<H: Hypervisor + BackendLog> TableRead for Walk<'_, H> {
    type Error = XenError;
    fn entry(&self, slot: EntrySlot) -> Result<PageTableEntry, XenError> {
        self.mmu.read(slot.table(), slot.index())
    }
    fn table(&self, e: PageTableEntry) -> Result<PhysFrame, XenError> {
        self.mmu
            .to_phys(e.frame().ok_or(XenError::NotMapped { va: self.va })?)
            .ok_or(XenError::NotMapped { va: self.va })
    }
}

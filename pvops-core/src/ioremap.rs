//! `early_ioremap`: a small window of slots that maps machine memory before (and after) the
//! kernel's own page table exists.
//!
//! Every call walks the table that [`MmuOps::read_cr3`] returns *now* — the seed's fix
//! (Linux 37cc8d7f963b): under Xen the CPU first runs on Xen's table at `start_info.pt_base`,
//! not on the kernel's static table. [`TableSource::KernelTable`] reproduces the 2008 bug for
//! regression tests: the window is then installed into a table the CPU is not using.
//!
//! A window has one owner: an instance maps only into slots whose PTEs are all absent, so
//! a second instance over the same window takes other slots or gets
//! [`IoremapError::SlotTaken`], never the first one's pages; a mapping that fails halfway
//! is cleared again, so nothing of it stays present.

use crate::addr::{EntryIndex, MachineAddr, PhysFrame, VirtAddr, PAGE_SIZE};
use crate::frame_alloc::FrameAlloc;
use crate::mapper::{l1_slot, read_entry, MapError};
use crate::ops::LazyMmu;
use crate::ops::{MmuOps, Platform};
use crate::paging::{EntrySlot, PageTableEntry, KERNEL_RW};
use core::fmt;

/// Number of slots in the window.
pub const IOREMAP_SLOTS: usize = 8;
/// Pages per slot (64 KiB).
pub const IOREMAP_SLOT_PAGES: usize = 16;
/// Largest range one mapping can hold, in bytes (offset within the first page included).
pub const IOREMAP_MAX_BYTES: u64 = (IOREMAP_SLOT_PAGES as u64) * PAGE_SIZE;

/// Which table early_ioremap installs its mappings in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableSource {
    /// The live table, found through `read_cr3` at every call (correct).
    LiveCr3,
    /// A fixed kernel table, live or not (Linux 2.6.25-rc1's `swapper_pg_dir` bug).
    KernelTable(PhysFrame),
}

/// Why early_ioremap refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoremapError<E> {
    /// Size 0.
    ZeroSize,
    /// `addr + len` overflows.
    Overflow {
        /// Start.
        addr: MachineAddr,
        /// Length.
        len: u64,
    },
    /// The range needs more than one slot.
    TooLarge {
        /// Bytes asked for (including the offset in the first page).
        len: u64,
        /// The most a slot holds.
        max: u64,
    },
    /// Every slot is in use.
    NoFreeSlot,
    /// Every slot this instance has free holds a present PTE: another instance (or other
    /// code) maps there. Nothing was changed.
    SlotTaken {
        /// The first present page found.
        va: VirtAddr,
    },
    /// The mapping is not (or no longer) in the window.
    NotMapped {
        /// Its virtual address.
        va: VirtAddr,
    },
    /// A slot's pages do not all sit in one L1 table (the backend's window is not 2 MiB
    /// aligned).
    WindowCrossesTable {
        /// The first page that would lie past the table.
        va: VirtAddr,
    },
    /// Walking or changing the table failed.
    Map(MapError<E>),
}

impl<E: fmt::Display> fmt::Display for IoremapError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSize => write!(f, "early_ioremap of size 0"),
            Self::Overflow { addr, len } => write!(f, "early_ioremap {addr}+{len:#x} overflows"),
            Self::TooLarge { len, max } => write!(
                f,
                "early_ioremap of {len:#x} bytes exceeds a slot ({max:#x})"
            ),
            Self::NoFreeSlot => write!(f, "early_ioremap: all {IOREMAP_SLOTS} slots in use"),
            Self::SlotTaken { va } => {
                write!(
                    f,
                    "early_ioremap: {va} is mapped by another owner of the window"
                )
            }
            Self::NotMapped { va } => write!(f, "early_iounmap of {va}: not mapped"),
            Self::WindowCrossesTable { va } => {
                write!(f, "early_ioremap: {va} lies past the window's L1 table")
            }
            Self::Map(e) => write!(f, "early_ioremap: {e}"),
        }
    }
}

impl<E> From<MapError<E>> for IoremapError<E> {
    fn from(e: MapError<E>) -> Self {
        IoremapError::Map(e)
    }
}

/// A live early_ioremap mapping. Give it back with [`EarlyIoremap::unmap`].
#[must_use = "an early_ioremap slot stays taken until early_iounmap"]
#[derive(Debug, PartialEq, Eq)]
pub struct IoMapping {
    va: VirtAddr,
    len: u64,
    slot: u8,
    pages: u8,
}

impl IoMapping {
    /// Virtual address of the first mapped byte.
    pub fn addr(&self) -> VirtAddr {
        self.va
    }
    /// Mapped length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Always false: a mapping holds at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The slot index.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }
}

/// The early_ioremap window state.
#[derive(Debug)]
pub struct EarlyIoremap {
    window: VirtAddr,
    pages_in_use: [u8; IOREMAP_SLOTS],
    source: TableSource,
}

impl EarlyIoremap {
    /// A window at `window` (2 MiB aligned), walking `source`.
    pub const fn new(window: VirtAddr, source: TableSource) -> EarlyIoremap {
        EarlyIoremap {
            window,
            pages_in_use: [0; IOREMAP_SLOTS],
            source,
        }
    }

    /// The window's base address.
    pub fn window(&self) -> VirtAddr {
        self.window
    }

    /// The table this instance walks at the next call.
    pub fn root<B: MmuOps>(&self, backend: &B) -> PhysFrame {
        match self.source {
            TableSource::LiveCr3 => backend.read_cr3(),
            TableSource::KernelTable(f) => f,
        }
    }

    /// Slots in use.
    pub fn slots_in_use(&self) -> usize {
        self.pages_in_use.iter().filter(|p| **p != 0).count()
    }

    fn slot_va(&self, slot: usize) -> VirtAddr {
        VirtAddr::new(self.window.as_u32() + (slot * IOREMAP_SLOT_PAGES) as u32 * PAGE_SIZE as u32)
    }

    /// Maps `len` bytes at machine address `addr` read/write into a free slot whose PTEs
    /// are all absent.
    pub fn map<P: Platform, A: FrameAlloc + ?Sized>(
        &mut self,
        p: &mut P,
        alloc: &mut A,
        addr: MachineAddr,
        len: u64,
    ) -> Result<IoMapping, IoremapError<P::Error>> {
        if len == 0 {
            return Err(IoremapError::ZeroSize);
        }
        if addr.as_u64().checked_add(len).is_none() {
            return Err(IoremapError::Overflow { addr, len });
        }
        let span = addr.frame_offset() + len;
        if span > IOREMAP_MAX_BYTES {
            return Err(IoremapError::TooLarge {
                len: span,
                max: IOREMAP_MAX_BYTES,
            });
        }
        let pages = span.div_ceil(PAGE_SIZE) as usize;
        if self.pages_in_use.iter().all(|p| *p != 0) {
            return Err(IoremapError::NoFreeSlot);
        }
        let root = self.root(p);
        // The window is 2 MiB aligned and its slots fill 512 KiB: one L1 holds every entry
        // of every slot. Walk (and link) it once, outside lazy mode.
        let l1 = l1_slot(p, alloc, root, self.window, true)?.table();
        let mut taken = None;
        let mut found = None;
        'slots: for slot in (0..IOREMAP_SLOTS).filter(|s| self.pages_in_use[*s] == 0) {
            let base = self.slot_va(slot);
            // Every page's slot and frame are checked before anything is written.
            let mut todo = [(
                VirtAddr::new(0),
                EntrySlot::new(l1, base.l1_index()),
                PageTableEntry::EMPTY,
            ); IOREMAP_SLOT_PAGES];
            for (i, t) in todo.iter_mut().enumerate().take(pages) {
                let va = VirtAddr::new(base.as_u32() + (i as u32) * PAGE_SIZE as u32);
                let index = EntryIndex::new(base.l1_index().get() + i)
                    .ok_or(IoremapError::WindowCrossesTable { va })?;
                let mfn = addr
                    .checked_add(i as u64 * PAGE_SIZE)
                    .and_then(MachineAddr::frame)
                    .ok_or(IoremapError::Overflow { addr, len })?;
                if read_entry(p, l1, index)?.is_present() {
                    taken.get_or_insert(va);
                    continue 'slots;
                }
                *t = (
                    va,
                    EntrySlot::new(l1, index),
                    PageTableEntry::new(mfn, KERNEL_RW),
                );
            }
            found = Some((slot, todo));
            break;
        }
        let Some((slot, todo)) = found else {
            return Err(IoremapError::SlotTaken {
                va: taken.unwrap_or(self.window),
            });
        };
        // Batch the PTE writes and their invlpgs (one multicall under Xen).
        let written = (|| {
            let mut lazy = LazyMmu::enter(&mut *p);
            for (va, l1, entry) in todo.into_iter().take(pages) {
                // SAFETY: the window belongs to early_ioremap and this slot is free (its
                // PTEs were checked absent).
                unsafe { lazy.set_pte(l1, entry) }?;
                lazy.flush_tlb_single(va)?;
            }
            lazy.finish()
        })();
        if let Err(e) = written {
            // Nothing of a failed mapping stays present: clear every page of the slot
            // (errors here cannot be better reported than the first one).
            for (va, l1, _) in todo.into_iter().take(pages) {
                // SAFETY: the slot is ours and its mapping failed; nobody uses it.
                let _ = unsafe { p.pte_clear(l1) };
                let _ = p.flush_tlb_single(va);
            }
            return Err(IoremapError::Map(MapError::Backend(e)));
        }
        self.pages_in_use[slot] = pages as u8;
        Ok(IoMapping {
            va: VirtAddr::new(self.slot_va(slot).as_u32() + addr.frame_offset() as u32),
            len,
            slot: slot as u8,
            pages: pages as u8,
        })
    }

    /// Unmaps a mapping made by [`EarlyIoremap::map`].
    pub fn unmap<P: Platform, A: FrameAlloc + ?Sized>(
        &mut self,
        p: &mut P,
        alloc: &mut A,
        m: IoMapping,
    ) -> Result<(), IoremapError<P::Error>> {
        let slot = m.slot as usize;
        if slot >= IOREMAP_SLOTS
            || self.pages_in_use[slot] != m.pages
            || m.va.page_base() != self.slot_va(slot)
        {
            return Err(IoremapError::NotMapped { va: m.va });
        }
        let root = self.root(p);
        let first = l1_slot(p, alloc, root, m.va.page_base(), false)?;
        let mut todo = [(
            VirtAddr::new(0),
            EntrySlot::new(first.table(), first.index()),
        ); IOREMAP_SLOT_PAGES];
        for (i, t) in todo.iter_mut().enumerate().take(m.pages as usize) {
            let va = VirtAddr::new(m.va.page_base().as_u32() + (i as u32) * PAGE_SIZE as u32);
            let index = EntryIndex::new(first.index().get() + i)
                .ok_or(IoremapError::WindowCrossesTable { va })?;
            if !read_entry(p, first.table(), index)?.is_present() {
                return Err(IoremapError::NotMapped { va });
            }
            *t = (va, EntrySlot::new(first.table(), index));
        }
        let mut lazy = LazyMmu::enter(p);
        for (va, l1) in todo.into_iter().take(m.pages as usize) {
            // SAFETY: the mapping was ours and is given up here.
            unsafe { lazy.pte_clear(l1) }.map_err(MapError::Backend)?;
            lazy.flush_tlb_single(va).map_err(MapError::Backend)?;
        }
        lazy.finish().map_err(MapError::Backend)?;
        self.pages_in_use[slot] = 0;
        Ok(())
    }
}

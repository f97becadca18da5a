//! A profile of the direct map's store phase (`build_direct_map`), split into the work it
//! does per PTE, each part timed in its own loop over as many frames as the direct map has
//! PTEs, through the backend's real code: the loop itself, the p2m lookup
//! (`phys_to_machine`), the allocator's page-table bitmap (`is_table`, asked only where page
//! tables are mapped read-only: Xen PV), `set_pte` into a table that is not live (under Xen
//! PV a detached table: a bitmap test, then two plain stores), and the three together as
//! `map_linear`'s loop runs them; plus zeroing a table frame, once per L1 table the direct
//! map made. `cargo xtask bench` compares each part across backends (README: Performance).

use core::hint::black_box;
use pvops_core::addr::{EntryIndex, MachineFrame, PhysFrame};
use pvops_core::mapper::{new_table, zero_frame, MapError};
use pvops_core::mem::FrameAllocator;
use pvops_core::ops::LazyMmu;
use pvops_core::paging::{EntrySlot, Level, PageTableEntry, ENTRIES, KERNEL_RO, KERNEL_RW};
use pvops_core::Platform;

/// Cycles of each part (fastest of [`crate::calibrate::ROUNDS`] rounds) over `ptes` frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreProfile {
    /// Frames each loop runs over (the direct map's PTEs).
    pub ptes: u32,
    /// The loop alone (the frame number through `black_box`).
    pub loop_cycles: u64,
    /// `phys_to_machine` of every frame.
    pub p2m_cycles: u64,
    /// `FrameAllocator::is_table` of every frame.
    pub is_table_cycles: u64,
    /// `set_pte` of an entry per frame into one table that is not live, in lazy mode.
    pub set_pte_cycles: u64,
    /// Two plain `u32` stores per frame (high, then low half) into the same table frame
    /// through its direct-map address, without the backend.
    pub raw_store_cycles: u64,
    /// The three together, as `map_linear` runs them per PTE.
    pub body_cycles: u64,
    /// L1 tables the direct map made.
    pub tables: u32,
    /// Zeroing one frame `tables` times (what `new_table` does before announcing a table).
    pub zero_cycles: u64,
}

/// Why the profile could not run (it is skipped, the run still PASSes).
#[derive(Debug)]
pub enum ProfileError<E> {
    /// No frame for the scratch table, or the backend refused a table operation.
    Table(MapError<E>),
    /// The backend refused a write into the scratch table.
    Backend(E),
    /// A frame of the direct map has no machine frame.
    NoMachineFrame(PhysFrame),
}

impl<E: core::fmt::Display> core::fmt::Display for ProfileError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Table(e) => write!(f, "scratch table: {e}"),
            Self::Backend(e) => write!(f, "set_pte into the scratch table: {e}"),
            Self::NoMachineFrame(p) => write!(f, "pfn {p} has no machine frame"),
        }
    }
}

/// Runs every part [`crate::calibrate::ROUNDS`] times over frames `0..ptes` on `p`, with a
/// scratch L1 from `alloc` (zeroed, released and freed at the end).
pub fn run<P: Platform>(
    p: &mut P,
    alloc: &mut FrameAllocator,
    ptes: u32,
    tables: u32,
) -> Result<StoreProfile, ProfileError<P::Error>> {
    let (l1, _) = new_table(p, alloc, Level::L1).map_err(ProfileError::Table)?;
    let r = rounds(p, alloc, l1, ptes, tables);
    // The table was never linked: emptied, it is ordinary memory again.
    // SAFETY: `l1` is the scratch table allocated above, linked nowhere, used by nothing else.
    let cleanup = unsafe { zero_frame(p, l1) }
        .map_err(ProfileError::Table)
        .and_then(|()| p.release_pt(l1, Level::L1).map_err(ProfileError::Backend))
        .and_then(|()| {
            alloc
                .free(l1)
                .map_err(|e| ProfileError::Table(MapError::Alloc(e)))
        });
    let profile = r?;
    cleanup?;
    Ok(profile)
}

fn rounds<P: Platform>(
    p: &mut P,
    alloc: &FrameAllocator,
    l1: PhysFrame,
    ptes: u32,
    tables: u32,
) -> Result<StoreProfile, ProfileError<P::Error>> {
    let mut best = StoreProfile {
        ptes,
        tables,
        loop_cycles: u64::MAX,
        p2m_cycles: u64::MAX,
        is_table_cycles: u64::MAX,
        set_pte_cycles: u64::MAX,
        raw_store_cycles: u64::MAX,
        body_cycles: u64::MAX,
        zero_cycles: u64::MAX,
    };
    let ro = P::READ_ONLY_PAGE_TABLES;
    let slot = |f: u32| {
        EntrySlot::new(
            l1,
            EntryIndex::new(f as usize % ENTRIES).unwrap_or_default(),
        )
    };
    for _ in 0..crate::calibrate::ROUNDS {
        let t = p.cycles();
        for f in 0..black_box(ptes) {
            black_box(f);
        }
        best.loop_cycles = best.loop_cycles.min(p.cycles().wrapping_sub(t));

        let t = p.cycles();
        for f in 0..black_box(ptes) {
            black_box(p.phys_to_machine(PhysFrame::new(f)));
        }
        best.p2m_cycles = best.p2m_cycles.min(p.cycles().wrapping_sub(t));

        let t = p.cycles();
        for f in 0..black_box(ptes) {
            black_box(alloc.is_table(PhysFrame::new(f)));
        }
        best.is_table_cycles = best.is_table_cycles.min(p.cycles().wrapping_sub(t));

        let t = p.cycles();
        {
            let mut lazy = LazyMmu::enter(&mut *p);
            for f in 0..black_box(ptes) {
                let e = PageTableEntry::new(MachineFrame::new(f), KERNEL_RW);
                // SAFETY: `l1` is a fresh table no live table links: its entries map nothing.
                unsafe { lazy.set_pte(slot(f), e) }.map_err(ProfileError::Backend)?;
            }
            lazy.finish().map_err(ProfileError::Backend)?;
        }
        best.set_pte_cycles = best.set_pte_cycles.min(p.cycles().wrapping_sub(t));

        let table = p
            .frame_ptr(l1)
            .ok_or(ProfileError::Table(MapError::Unreachable(l1)))? as *mut u32;
        let t = p.cycles();
        for f in 0..black_box(ptes) {
            let e = PageTableEntry::new(MachineFrame::new(f), KERNEL_RW);
            let at = (f as usize % ENTRIES) * 2;
            // SAFETY: `table` is the 4 KiB of a fresh table frame no live table links, mapped
            // writable (frame_ptr); `at + 1` < 1024.
            unsafe {
                core::ptr::write_volatile(black_box(table).add(at + 1), e.high());
                core::ptr::write_volatile(table.add(at), e.low());
            }
        }
        best.raw_store_cycles = best.raw_store_cycles.min(p.cycles().wrapping_sub(t));

        let t = p.cycles();
        {
            let mut lazy = LazyMmu::enter(&mut *p);
            for f in 0..black_box(ptes) {
                let frame = PhysFrame::new(f);
                let mfn = lazy
                    .phys_to_machine(frame)
                    .ok_or(ProfileError::NoMachineFrame(frame))?;
                let flags = if ro && alloc.is_table(frame) {
                    KERNEL_RO
                } else {
                    KERNEL_RW
                };
                // SAFETY: as above.
                unsafe { lazy.set_pte(slot(f), PageTableEntry::new(mfn, flags)) }
                    .map_err(ProfileError::Backend)?;
            }
            lazy.finish().map_err(ProfileError::Backend)?;
        }
        best.body_cycles = best.body_cycles.min(p.cycles().wrapping_sub(t));

        let t = p.cycles();
        for _ in 0..black_box(tables) {
            // SAFETY: as in `run`: the scratch table is ours alone.
            unsafe { zero_frame(p, l1) }.map_err(ProfileError::Table)?;
        }
        best.zero_cycles = best.zero_cycles.min(p.cycles().wrapping_sub(t));
    }
    Ok(best)
}

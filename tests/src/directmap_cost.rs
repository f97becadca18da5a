//! The cost of building a direct map of N PTEs under Xen, measured on the model of Xen's
//! rules with the real `XenMmu` and `pvops_core::mapper::map_linear`: what the criterion
//! bench times, what `cargo xtask bench` reports, and what a test bounds.

use crate::xen_model::{DomainConfig, XenModel};
use backend_xen::XenCounters;
use backend_xen::{XenMmu, XenOptions};
use pvops_core::addr::{FrameRange, PhysAddr, PhysFrame};
use pvops_core::mapper::{map_linear, new_root};
use pvops_core::mem::{FrameAllocator, MemoryMap, RegionKind};
use pvops_core::paging::KERNEL_RW;
use pvops_core::MmuOps;

/// The PTE counts measured: 4 MiB, 256 MiB, and 512 MiB (the domU of `cargo xtask bench`).
/// All fit the kernel's direct map under Xen (852 MiB of lowmem at `page_offset`).
pub const SIZES: [u32; 3] = [1024, 65536, 131072];
/// Batch settings: the backend's default (1024 updates per `mmu_update`), Linux's multicall
/// batch size as a reference point, and one update per hypercall.
pub const MODES: [(&str, u32); 3] = [("batched", 0), ("batch32", 32), ("unbatched", 1)];

/// What building one direct map cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectMapCost {
    /// PTEs written.
    pub ptes: u32,
    /// L1 tables made.
    pub tables: u32,
    /// Hypercalls and entries, from XenMmu's counters.
    pub counters: XenCounters,
}

/// A domain, its XenMmu, an allocator and a fresh (not live) root, ready to map `ptes` pages.
pub struct DirectMapJob {
    mmu: XenMmu<XenModel>,
    alloc: Box<FrameAllocator>,
    root: PhysFrame,
    ptes: u32,
}

impl DirectMapJob {
    /// Prepares a domain large enough for `ptes` pages, with `batch` as `pvops.batch`.
    pub fn new(ptes: u32, batch: u32) -> Result<DirectMapJob, String> {
        let tables = ptes.div_ceil(512) + 16;
        let dom = DomainConfig::with_pages(ptes.max(16384))
            .pool_pages(tables)
            .image_pages(tables + 0x100)
            .build();
        let facts = dom.facts().map_err(|e| e.to_string())?;
        let opts = XenOptions {
            batch,
            ..Default::default()
        };
        let mut mmu = XenMmu::new(dom.model, &facts, &opts).map_err(|e| e.to_string())?;
        let mut map = MemoryMap::new();
        map.add(
            PhysAddr::new(0),
            facts.nr_pages as u64 * 4096,
            RegionKind::Usable,
        )
        .map_err(|e| e.to_string())?;
        let mut alloc = Box::new(FrameAllocator::new(
            &map,
            facts.first_free,
            mmu.reach(),
            dom.table_pool,
        ));
        // Xen's bootstrap table is still pinned: the new table must map it read-only too.
        for f in facts.bootstrap_tables.iter() {
            alloc.mark_table(f, true).map_err(|e| e.to_string())?;
        }
        let root = new_root(&mut mmu, &mut *alloc).map_err(|e| e.to_string())?;
        let lowmem = mmu.layout().lowmem_limit;
        if ptes as u64 * 4096 > lowmem {
            return Err(format!(
                "{ptes} PTEs do not fit the direct map ({} MiB of lowmem)",
                lowmem >> 20
            ));
        }
        Ok(DirectMapJob {
            mmu,
            alloc,
            root,
            ptes,
        })
    }

    /// Maps frames `0..ptes` where the kernel's direct map lies (the backend's
    /// `layout().page_offset`: 0xC0000000, L3 slot 3, under Xen), page-table frames read-only
    /// as the boot path maps them, then makes the table live (`write_cr3`: its frames
    /// read-only, pin, then the switch), which is where Xen first checks it.
    pub fn run(mut self) -> Result<DirectMapCost, String> {
        let before = self.mmu.counters();
        let range = [FrameRange {
            start: PhysFrame::new(0),
            end: PhysFrame::new(self.ptes),
        }];
        // The backend maps page-table frames read-only itself (its invariant).
        let flags = KERNEL_RW;
        let base = self.mmu.layout().page_offset;
        let done = map_linear(
            &mut self.mmu,
            &mut *self.alloc,
            self.root,
            base,
            &range,
            flags,
        )
        .map_err(|e| e.to_string())?;
        self.mmu.pin_root(self.root).map_err(|e| e.to_string())?;
        // SAFETY: the model runs no code; the new table only has to validate.
        unsafe { self.mmu.write_cr3(self.root) }.map_err(|e| e.to_string())?;
        Ok(DirectMapCost {
            ptes: done.ptes,
            tables: done.tables,
            counters: self.mmu.counters().since(&before),
        })
    }
}

/// Prepares and runs one job.
pub fn measure(ptes: u32, batch: u32) -> Result<DirectMapCost, String> {
    DirectMapJob::new(ptes, batch)?.run()
}

/// The bound for a batched direct map of `ptes` PTEs: ceil(N/512) + 8 hypercalls.
pub fn hypercall_bound(ptes: u32) -> u64 {
    ptes.div_ceil(512) as u64 + 8
}

//! The cost of runtime mapping under Xen (issue 10): N pages of a fresh area of the live
//! table mapped inside one lazy section ([`pvops_core::mapper::map_range`], L1 creation
//! included), then unmapped with their TLB flush inside one lazy section
//! ([`pvops_core::mapper::unmap_range`]), on the model of Xen's rules under the real
//! `XenMmu` after a whole boot: what `cargo xtask bench` reports as
//! `xen_model_hypercalls_{map,unmap}_n<N>` and what a test bounds by [`hypercall_bound`].

use crate::xen_model::boot_mib;
use backend_xen::XenCounters;
use pvops_core::addr::{MachineFrame, PhysFrame, VirtAddr};
use pvops_core::mapper;
use pvops_core::options::BootOptions;
use pvops_core::paging::{Level, KERNEL_RW};
use pvops_core::{Counters, LazyMmu, MmuOps};

/// The page counts measured: 1 MiB (the demo's buffer) and 16 MiB (eight L1 tables).
pub const SIZES: [usize; 2] = [256, 4096];
/// Where the pages go: the lower half of the kernel's root (its L2 exists, no L1 under it).
pub const AREA: VirtAddr = VirtAddr::new(0x4000_0000);

/// The bound issue 10 sets: ceil(N / 512) + 4 hypercalls.
pub fn hypercall_bound(pages: usize) -> u64 {
    pages.div_ceil(512) as u64 + 4
}

/// What mapping and unmapping N pages cost.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeMapCost {
    /// Pages.
    pub pages: usize,
    /// The lazy section of `map_range`.
    pub map: XenCounters,
    /// The lazy section of `unmap_range` and its flush.
    pub unmap: XenCounters,
}

/// Boots a 64 MiB domU on the model, then maps and unmaps `pages` fresh frames at [`AREA`];
/// checks the translations, gives every frame and table back.
pub fn measure(pages: usize) -> Result<RuntimeMapCost, String> {
    let mut run = boot_mib(64, BootOptions::default());
    if let Err(e) = &run.result {
        return Err(format!("boot: {e}"));
    }
    let mmu = run.mmu.as_mut().ok_or("no backend")?;
    let alloc = &mut run.state.alloc;
    let root = mmu.read_cr3();
    let mut frames: Vec<PhysFrame> = Vec::with_capacity(pages);
    let mut mfns: Vec<MachineFrame> = Vec::with_capacity(pages);
    for _ in 0..pages {
        let f = alloc.alloc().map_err(|e| e.to_string())?;
        frames.push(f);
        mfns.push(mmu.phys_to_machine(f).ok_or("no mfn")?);
    }
    let before = mmu.counters();
    {
        let mut lazy = LazyMmu::enter(&mut *mmu);
        // SAFETY: the area is unused by the booted kernel (the model runs no code).
        unsafe { mapper::map_range(&mut *lazy, alloc, root, AREA, pages, KERNEL_RW, |i| mfns[i]) }
            .map_err(|e| e.to_string())?;
        lazy.finish().map_err(|e| e.to_string())?;
    }
    let map = mmu.counters().since(&before);
    for (i, m) in mfns.iter().enumerate() {
        let va = VirtAddr::new(AREA.as_u32() + (i as u32) * 4096);
        let e = mapper::translate(&*mmu, root, va).map_err(|e| e.to_string())?;
        if e.frame() != Some(*m) {
            return Err(format!("{va} maps {:?} instead of {m}", e.frame()));
        }
    }
    let before = mmu.counters();
    {
        let mut lazy = LazyMmu::enter(&mut *mmu);
        // SAFETY: as above; nothing uses the pages.
        let flush = unsafe { mapper::unmap_range(&mut *lazy, root, AREA, pages, |_, _| {}) }
            .map_err(|e| e.to_string())?;
        flush.flush(&mut *lazy).map_err(|e| e.to_string())?;
        lazy.finish().map_err(|e| e.to_string())?;
    }
    let unmap = mmu.counters().since(&before);
    for chunk in 0..pages.div_ceil(512) {
        let va = VirtAddr::new(AREA.as_u32() + (chunk as u32) * 0x20_0000);
        mapper::retire_table(mmu, alloc, root, va, Level::L1).map_err(|e| e.to_string())?;
    }
    for f in frames {
        alloc.free(f).map_err(|e| e.to_string())?;
    }
    let violations = mmu.hypervisor().violations();
    if !violations.is_empty() {
        return Err(format!("model violations: {violations:?}"));
    }
    Ok(RuntimeMapCost { pages, map, unmap })
}

/// Hypercalls of a measurement (the `Counters` view).
pub fn hypercalls(c: &XenCounters) -> u64 {
    c.hypercalls()
}

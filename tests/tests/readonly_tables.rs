//! Read-only page tables are the Xen backend's invariant (issue 11 item 3), on the model of
//! Xen's rules under the real `XenMmu`: a table made after its frame's direct-map PTE was
//! written is read-only before the pin; `set_pte` never maps a table writable; a read-only ->
//! writable remap is flushed.

use backend_xen::{XenMmu, XenOptions};
use pvops_core::addr::{PhysFrame, VirtAddr};
use pvops_core::boot::{boot_until, BootState, Stage};
use pvops_core::mapper;
use pvops_core::options::BootOptions;
use pvops_core::paging::{Level, PteFlags, KERNEL_RW};
use pvops_core::MmuOps;
use pvops_tests::xen_model::{boot_mib, DomainConfig, ModelAccess, XenDomain, XenModel};

/// A 64 MiB domU booted up to `build_direct_map` (the kernel's root built, not live), and
/// the M2P lookups the boot made.
fn up_to_the_direct_map() -> (XenMmu<XenModel>, Box<BootState>, PhysFrame, u64) {
    let dom = DomainConfig::new(64).build();
    let facts = dom.facts().expect("start_info");
    let XenDomain {
        model,
        image,
        table_pool,
        ..
    } = dom;
    let mut mmu = XenMmu::new(model, &facts, &XenOptions::default()).expect("XenMmu::new");
    let info = backend_xen::boot_info(&mmu, &facts, image, table_pool);
    let mut state = Box::new(BootState::new());
    let mut log = String::new();
    let before = mmu.hypervisor().m2p_lookups();
    let r = boot_until(
        &mut mmu,
        &info,
        BootOptions::default(),
        &mut state,
        &mut log,
        Stage::BuildDirectMap,
    )
    .unwrap_or_else(|e| panic!("{e}\n{log}"));
    let lookups = mmu.hypervisor().m2p_lookups() - before;
    (mmu, state, r.root, lookups)
}

/// `boot_until(BuildDirectMap)`, then `map_page` into the new root: the L1 it allocates had
/// its direct-map PTE written (writable) by `build_direct_map`. Before the fix it stayed
/// writable there and Xen (the model) refused the pin with EBUSY.
#[test]
fn a_table_made_after_its_direct_map_pte_is_read_only_before_the_pin() {
    let (mut mmu, mut state, root, _) = up_to_the_direct_map();
    let va = mmu.layout().scratch_area;
    let f = state.alloc.alloc().unwrap();
    let mfn = mmu.phys_to_machine(f).unwrap();
    // SAFETY: the root is not live; the scratch area is unused.
    unsafe { mapper::map_page(&mut mmu, &mut state.alloc, root, va, mfn, KERNEL_RW) }
        .unwrap()
        .ignore();
    let l1 = mapper::walk(&mmu, root, va).unwrap().slot.table();
    let l1_va = mmu.layout().phys_to_virt(l1.start());
    let e = mapper::translate(&mmu, root, l1_va).unwrap();
    assert!(
        !e.flags().contains(PteFlags::WRITABLE),
        "the new L1 pfn {l1} is mapped writable in the root being built"
    );
    mmu.pin_root(root)
        .unwrap_or_else(|e| panic!("pin of the kernel's root: {e}"));
    // SAFETY: the model runs no code.
    unsafe { mmu.write_cr3(root) }.unwrap();
    assert_eq!(mmu.model().writable_pagetable_mappings(), vec![]);
}

/// Whatever flags a caller asks for, the backend maps a page-table frame read-only.
#[test]
fn set_pte_never_maps_a_page_table_writable() {
    let mut run = boot_mib(64, BootOptions::default());
    run.expect_pass();
    let mmu = run.mmu.as_mut().unwrap();
    let root = mmu.read_cr3();
    let va = mmu.layout().scratch_area;
    let mfn = mmu.phys_to_machine(root).unwrap();
    // SAFETY: maps the live root's frame at an unused scratch page.
    unsafe { mapper::map_page(mmu, &mut run.state.alloc, root, va, mfn, KERNEL_RW) }
        .unwrap()
        .flush(mmu)
        .unwrap();
    let e = mapper::translate(mmu, root, va).unwrap();
    assert!(!e.flags().contains(PteFlags::WRITABLE), "{e:?}");
    assert_eq!(mmu.model().writable_pagetable_mappings(), vec![]);
    assert!(mmu.model().failures().is_empty());
}

/// Retiring a live L1 makes its frame writable again, and that remap is flushed: an
/// `INVLPG_LOCAL` of the frame besides the unlink's full flush (before the fix: the full
/// flush only, issued before the remap).
#[test]
fn release_pt_flushes_the_page_it_made_writable() {
    let mut run = boot_mib(64, BootOptions::default());
    run.expect_pass();
    let mmu = run.mmu.as_mut().unwrap();
    let alloc = &mut run.state.alloc;
    let root = mmu.read_cr3();
    let va = VirtAddr::new(mmu.layout().scratch_area.as_u32() + 0x3000);
    let f = alloc.alloc().unwrap();
    let mfn = mmu.phys_to_machine(f).unwrap();
    // SAFETY: an unused scratch page.
    unsafe { mapper::map_page(mmu, alloc, root, va, mfn, KERNEL_RW) }
        .unwrap()
        .flush(mmu)
        .unwrap();
    // SAFETY: ours.
    unsafe { mapper::unmap_page(mmu, root, va) }
        .unwrap()
        .1
        .flush(mmu)
        .unwrap();
    let before = mmu.stats();
    let l1 = mapper::retire_table(mmu, alloc, root, va, Level::L1).unwrap();
    let ops = mmu.stats().mmuext_ops - before.mmuext_ops;
    assert_eq!(
        ops, 2,
        "TLB_FLUSH_LOCAL for the unlink + INVLPG_LOCAL for the remap"
    );
    let l1_va = mmu.layout().phys_to_virt(l1.start());
    let e = mapper::translate(mmu, root, l1_va).unwrap();
    assert!(
        e.flags().contains(PteFlags::WRITABLE),
        "pfn {l1} writable again"
    );
    alloc.free(f).unwrap();
}

/// The invariant must not cost an M2P lookup per direct-map PTE (it did: ~190 cycles per PTE
/// under real Xen, the store phase's largest part): `build_direct_map` of a 64 MiB domU writes
/// 16,384 writable PTEs, and only those whose machine frame shares a filter bucket with a
/// page table are looked up.
#[test]
fn the_direct_map_does_not_look_up_every_frame_in_the_m2p() {
    let (_, _, _, lookups) = up_to_the_direct_map();
    assert!(
        lookups < 16_384 / 20,
        "the boot up to build_direct_map made {lookups} M2P lookups for 16,384 PTEs"
    );
}

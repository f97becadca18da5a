//! The hypercall bound of a batched direct map under Xen (counted, not timed), on the model:
//! the direct-map job alone and a whole boot of the generic boot path.

use backend_xen::XenOptions;
use pvops_core::Counters as _;
use pvops_tests::directmap_cost::{hypercall_bound, measure, SIZES};
use pvops_tests::xen_model::boot_mib;

#[test]
fn batched_direct_map_stays_within_ceil_n_over_512_plus_8_hypercalls() {
    for n in SIZES {
        let c = measure(n, 0).expect("direct map on the model");
        assert_eq!(c.ptes, n);
        assert_eq!(c.tables, n.div_ceil(512));
        let h = c.counters.hypercalls();
        assert!(
            h <= hypercall_bound(n),
            "N={n}: {h} hypercalls > bound {} ({:?})",
            hypercall_bound(n),
            c.counters
        );
        // The PTEs and links went into the detached table as plain stores; Xen saw one
        // read-only remap per table frame (root, 4 L2s, the L1s), then pin + switch + unpin.
        assert_eq!(
            c.counters.mmu_update_entries,
            (c.tables + 5) as u64,
            "N={n}: {:?}",
            c.counters
        );
        assert_eq!(c.counters.mmuext_ops, 3, "N={n}: {:?}", c.counters);
    }
}

#[test]
fn unbatched_direct_map_costs_one_hypercall_per_update() {
    let n = 4096;
    let c = measure(n, 1).expect("direct map on the model");
    assert_eq!(c.counters.mmu_update_calls, c.counters.mmu_update_entries);
    assert!(c.counters.hypercalls() >= n as u64);
}

/// Hypercalls of a whole boot on the model (every boot-path stage, up to and including
/// `pagetable_setup_done`), and the direct map's PTE count.
fn whole_boot(mib: u32, batch: u32) -> (u64, u32, String) {
    let mut run = boot_mib(
        mib,
        XenOptions {
            batch,
            ..Default::default()
        },
    );
    let r = run.expect_pass();
    let i = run
        .stages
        .iter()
        .position(|(n, _)| n == "pagetable_setup_done")
        .expect("the boot path's last stage ran");
    let c = run.stages[i].1.since(&run.before_boot);
    (c.total, r.direct_map_ptes, format!("{c:?}"))
}

#[test]
fn a_whole_batched_boot_stays_within_ceil_n_over_512_plus_8_hypercalls() {
    // Since page tables are built detached (plain stores, checked by Xen at write_cr3),
    // build_direct_map alone makes almost no hypercalls: the bound covers the whole boot.
    for mib in [16, 512, 1024] {
        let (h, n, c) = whole_boot(mib, 0);
        assert!(n >= mib.min(852) * 256 - 1024, "{mib} MiB: only {n} PTEs");
        assert!(
            h <= hypercall_bound(n),
            "{mib} MiB: whole boot made {h} hypercalls > bound {} for {n} PTEs ({c})",
            hypercall_bound(n)
        );
    }
}

#[test]
fn a_whole_boot_with_batch_1_makes_one_hypercall_per_pte_at_least() {
    // The differential side of the bound above: the same boot with `pvops.batch=1` writes
    // every PTE into a read-only table through its own mmu_update.
    let (h, n, c) = whole_boot(64, 1);
    assert!(h >= n as u64, "batch=1: {h} hypercalls for {n} PTEs ({c})");
    let (hb, nb, _) = whole_boot(64, 0);
    assert_eq!(n, nb);
    assert!(hb * 100 < h, "batched {hb} vs batch=1 {h}");
}

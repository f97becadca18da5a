//! The hypercall bound of a batched direct map under Xen (counted, not timed), on the model.

use pvops_core::Counters as _;
use pvops_tests::directmap_cost::{hypercall_bound, measure, SIZES};

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

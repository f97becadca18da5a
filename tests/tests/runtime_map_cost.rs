//! Issue 10: mapping N pages of a fresh area in the live table inside one lazy section costs
//! at most ceil(N/512) + 4 hypercalls under Xen (the real `XenMmu` on the model), L1
//! creation and TLB flushes included; unmapping them likewise, with one batched flush.
//! Before issue 10 this cost about 4 hypercalls per page (`map_page` + flush each).

use pvops_tests::runtime_map_cost::{hypercall_bound, hypercalls, measure, SIZES};

#[test]
fn runtime_mapping_stays_within_the_bound() {
    for n in SIZES {
        let c = measure(n).unwrap_or_else(|e| panic!("N={n}: {e}"));
        let bound = hypercall_bound(n);
        assert!(
            hypercalls(&c.map) <= bound,
            "map N={n}: {} hypercalls > {bound}: {:?}",
            hypercalls(&c.map),
            c.map
        );
        assert!(
            hypercalls(&c.unmap) <= bound,
            "unmap N={n}: {} hypercalls > {bound}: {:?}",
            hypercalls(&c.unmap),
            c.unmap
        );
        // One flush for the whole range: a single mmuext operation.
        assert_eq!(c.unmap.mmuext_ops, 1, "unmap N={n}: {:?}", c.unmap);
    }
}

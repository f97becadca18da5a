//! Xen cost on the model of Xen's rules: time to build direct maps of N PTEs through the real
//! XenMmu, batched (1024 per mmu_update), in batches of 32 (Linux's multicall batch) and one
//! update per hypercall. The hypercall counts are printed by `cargo run -p pvops-benches
//! --bin xen-model-cost` (they do not vary between runs).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pvops_tests::directmap_cost::{DirectMapJob, MODES, SIZES};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xen_directmap");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for n in SIZES {
        for (mode, batch) in MODES {
            g.bench_function(format!("{mode}/{n}"), |b| {
                b.iter_batched(
                    || DirectMapJob::new(n, batch).expect("model domain"),
                    |job| job.run().expect("direct map"),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Native cost: 512-entry batches through the framework's set_pte vs raw PAE stores.

use criterion::{criterion_group, criterion_main, Criterion};
use pvops_benches::{framework_batch, raw_batch, HostStores};
use pvops_core::addr::{MachineFrame, PhysFrame};
use pvops_core::paging::{PageTableEntry, KERNEL_RW};
use std::hint::black_box;

fn entries() -> [PageTableEntry; 512] {
    core::array::from_fn(|i| PageTableEntry::new(MachineFrame(0x1000 + i as u32), KERNEL_RW))
}

fn bench(c: &mut Criterion) {
    let e = entries();
    let mut frames = vec![0u64; 2 * 512];
    let table = PhysFrame(1);
    let mut g = c.benchmark_group("native_set_pte");
    g.bench_function("framework", |b| {
        let mut stores = HostStores::new(&mut frames);
        b.iter(|| framework_batch(&mut stores, black_box(table), black_box(&e)))
    });
    g.bench_function("raw", |b| {
        b.iter(|| raw_batch(&mut frames, black_box(table), black_box(&e)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

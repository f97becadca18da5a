//! Benchmarks (criterion) for pvops.

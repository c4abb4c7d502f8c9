//! Criterion benches of weft-fanout against `buffer_unordered` and
//! `select_all` (smaller sizes than `compare`, to keep sampling affordable).
//! Run: `cargo bench -p weft-benches --bench fanout`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::cases::fanout::{iters_for, merge4, scatter_cpu, scatter_timer};
use weft_benches::workload;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/scatter-timer");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000));
    for (flavor, rt) in [
        ("multi-thread", workload::runtime()),
        ("current-thread", workload::current_thread()),
    ] {
        for imp in ["weft-scatter", "buffer-unordered"] {
            group.bench_function(BenchmarkId::new(imp, flavor), |b| {
                b.iter(|| rt.block_on(scatter_timer(imp, 1_000)))
            });
        }
    }
    group.finish();

    let iters = iters_for(Duration::from_micros(10));
    let mut group = c.benchmark_group("fanout/scatter-cpu");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000));
    let rt = workload::runtime();
    for imp in ["weft-scatter-spawned", "weft-scatter", "buffer-unordered"] {
        group.bench_function(imp, |b| {
            b.iter(|| rt.block_on(scatter_cpu(imp, 1_000, iters)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("fanout/merge-4-streams");
    group.sample_size(10);
    group.throughput(Throughput::Elements(400_000));
    let rt = workload::current_thread();
    for imp in ["weft-merge-fair", "weft-merge-biased", "select-all"] {
        group.bench_function(imp, |b| b.iter(|| rt.block_on(merge4(imp, 100_000))));
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);

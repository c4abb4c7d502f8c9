//! Criterion benches of weft-pipeline: 100,000 items through 3 map stages
//! (weft per-item, weft batched, the tokio mpsc chain peer), and `par_map`
//! against a sequential loop and rayon, on multi-thread and current-thread
//! runtimes. Run: `cargo bench -p weft-benches --bench pipeline`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use weft_benches::cases::pipeline::{mpsc_chain, weft_batched, weft_pipeline};
use weft_benches::workload;

const ITEMS: u64 = 100_000;

fn three_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline/3-maps");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);
    for (flavor, rt) in [
        ("multi-thread", workload::runtime()),
        ("current-thread", workload::current_thread()),
    ] {
        group.bench_function(BenchmarkId::new("tokio-mpsc-chain", flavor), |b| {
            b.iter(|| rt.block_on(mpsc_chain(ITEMS)))
        });
        group.bench_function(BenchmarkId::new("weft-pipeline", flavor), |b| {
            b.iter(|| rt.block_on(weft_pipeline(ITEMS)))
        });
        group.bench_function(BenchmarkId::new("weft-pipeline-batched", flavor), |b| {
            b.iter(|| rt.block_on(weft_batched(ITEMS)))
        });
    }
    group.finish();
}

fn par_map(c: &mut Criterion) {
    let items: Vec<u64> = (0..ITEMS).collect();
    let mut group = c.benchmark_group("par_map/x2");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);
    group.bench_function("sequential-loop", |b| {
        b.iter(|| items.iter().map(|x| x * 2).collect::<Vec<_>>())
    });
    group.bench_function("rayon-par-iter", |b| {
        b.iter(|| items.par_iter().map(|x| x * 2).collect::<Vec<_>>())
    });
    group.bench_function("weft-par-map", |b| {
        b.iter(|| weft_pipeline::par_map(&items, |x| x * 2))
    });
    group.finish();
}

criterion_group!(benches, three_maps, par_map);
criterion_main!(benches);

//! Criterion benches of weft-pool on the reference workload (100,000 jobs per
//! iteration), multi-thread and current-thread runtimes.
//! Run: `cargo bench -p weft-benches --bench pool`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::cases::pool::{weft_batch, weft_execute, weft_submit};
use weft_benches::workload;

const JOBS: u64 = 100_000;

fn pool(c: &mut Criterion) {
    for iters in workload::ITERS {
        let mut group = c.benchmark_group(format!("pool/iters={iters}"));
        group.throughput(Throughput::Elements(JOBS));
        group.sample_size(10);
        for (flavor, rt) in [
            ("multi-thread", workload::runtime()),
            ("current-thread", workload::current_thread()),
        ] {
            group.bench_function(BenchmarkId::new("weft-pool-submit", flavor), |b| {
                b.iter(|| rt.block_on(weft_submit(JOBS, iters)))
            });
            group.bench_function(BenchmarkId::new("weft-pool-batch", flavor), |b| {
                b.iter(|| rt.block_on(weft_batch(JOBS, iters)))
            });
            group.bench_function(BenchmarkId::new("weft-pool-execute", flavor), |b| {
                b.iter(|| rt.block_on(weft_execute(JOBS, iters)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pool);
criterion_main!(benches);

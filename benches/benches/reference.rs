//! Criterion benches of the reference peers on the reference workload
//! (100,000 jobs per iteration to keep criterion's sampling affordable).
//! Run: `cargo bench -p weft-benches --bench reference`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::cases::reference::{PEERS, run_peer};
use weft_benches::workload;

const JOBS: u64 = 100_000;

fn reference(c: &mut Criterion) {
    for iters in workload::ITERS {
        let mut group = c.benchmark_group(format!("reference/iters={iters}"));
        group.throughput(Throughput::Elements(JOBS));
        group.sample_size(10);
        for (flavor, rt) in [
            ("multi-thread", workload::runtime()),
            ("current-thread", workload::current_thread()),
        ] {
            for peer in PEERS {
                group.bench_function(BenchmarkId::new(peer, flavor), |b| {
                    b.iter(|| rt.block_on(run_peer(peer, JOBS, iters)))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, reference);
criterion_main!(benches);

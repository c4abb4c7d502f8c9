//! Criterion benches of weft-exec: executor spawn throughput against
//! `Semaphore::acquire_owned` + `tokio::spawn` (100,000 jobs per iteration),
//! on a multi-thread and a current-thread runtime.
//! Run: `cargo bench -p weft-benches --bench exec`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::cases::exec::{semaphore_spawn, weft_spawn};
use weft_benches::workload;

const JOBS: u64 = 100_000;

fn exec(c: &mut Criterion) {
    for iters in workload::ITERS {
        let mut group = c.benchmark_group(format!("exec/iters={iters}"));
        group.throughput(Throughput::Elements(JOBS));
        group.sample_size(10);
        for (flavor, rt) in [
            ("multi-thread", workload::runtime()),
            ("current-thread", workload::current_thread()),
        ] {
            group.bench_function(BenchmarkId::new("weft-exec-spawn", flavor), |b| {
                b.iter(|| rt.block_on(weft_spawn(JOBS, iters)))
            });
            group.bench_function(BenchmarkId::new("semaphore-spawn", flavor), |b| {
                b.iter(|| rt.block_on(semaphore_spawn(JOBS, iters)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, exec);
criterion_main!(benches);

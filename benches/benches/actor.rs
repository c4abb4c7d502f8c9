//! Criterion benches of weft-actor against kameo, ractor and a hand-rolled
//! tokio mpsc + oneshot actor, on multi-thread and current-thread runtimes.
//! Run: `cargo bench -p weft-benches --bench actor`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::cases::actor::{IMPLS, ask, tell};
use weft_benches::workload;

const TELLS: u64 = 20_000;
const ASKS: u64 = 2_000;

fn actor(c: &mut Criterion) {
    for (flavor, rt) in [
        ("multi-thread", workload::runtime()),
        ("current-thread", workload::current_thread()),
    ] {
        let mut group = c.benchmark_group(format!("actor-tell/{flavor}"));
        group.throughput(Throughput::Elements(TELLS));
        group.sample_size(10);
        for imp in IMPLS {
            group.bench_function(BenchmarkId::from_parameter(imp), |b| {
                b.iter(|| rt.block_on(tell(imp, TELLS)))
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("actor-ask/{flavor}"));
        group.throughput(Throughput::Elements(ASKS));
        group.sample_size(10);
        for imp in IMPLS {
            group.bench_function(BenchmarkId::from_parameter(imp), |b| {
                b.iter(|| rt.block_on(ask(imp, ASKS)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, actor);
criterion_main!(benches);

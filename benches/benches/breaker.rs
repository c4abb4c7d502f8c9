//! Criterion benches of circuit breakers: one closed-state call around a
//! ready future and one open-state rejection, weft-breaker against recloser,
//! on a current-thread runtime and on a multi-thread runtime's block_on.
//! Run: `cargo bench -p weft-benches --bench breaker`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use weft_benches::cases::breaker::Subject;

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");
    for (flavor, rt) in [
        ("current-thread", weft_benches::cases::breaker::runtime()),
        (
            "multi-thread",
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    ] {
        for imp in ["weft-breaker", "recloser"] {
            let mut s = Subject::new(imp);
            group.bench_function(BenchmarkId::new(format!("closed/{imp}"), flavor), |b| {
                b.iter(|| rt.block_on(s.call(false)))
            });
            let mut s = Subject::new(imp);
            rt.block_on(s.trip());
            group.bench_function(BenchmarkId::new(format!("open/{imp}"), flavor), |b| {
                b.iter(|| rt.block_on(s.call(false)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, breaker);
criterion_main!(benches);

//! Criterion benches of weft-coord against raw etcd-client on a private etcd
//! on loopback: one uncontended lock + unlock cycle each.
//! Run: `cargo bench -p weft-benches --bench coord` (needs `etcd` on PATH;
//! without it the benches are skipped with a line on stderr).

use criterion::{Criterion, criterion_group, criterion_main};
use weft_benches::cases::coord::{LocalEtcd, lock_setup, raw_cycles, weft_cycles};

fn coord(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(etcd) = rt.block_on(LocalEtcd::start()) else {
        return;
    };
    let (weft, raw) = rt.block_on(lock_setup(&etcd.endpoint));
    let mut group = c.benchmark_group("coord/lock-unlock");
    group.sample_size(20);
    group.bench_function("weft-coord-mutex", |b| {
        b.iter_custom(|iters| rt.block_on(weft_cycles(&weft, iters)))
    });
    group.bench_function("etcd-client-lock", |b| {
        b.iter_custom(|iters| rt.block_on(raw_cycles(&raw, iters)))
    });
    group.finish();
    drop(etcd);
}

criterion_group!(benches, coord);
criterion_main!(benches);

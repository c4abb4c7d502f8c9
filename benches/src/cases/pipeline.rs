//! weft-pipeline against a hand-written chain of tokio mpsc channels (one
//! task per stage), and `par_map` against a sequential loop and rayon's
//! `par_iter`.
//!
//! - `pipeline/3-maps`: 1,000,000 `u64`s through 3 cheap map stages into a
//!   summing sink. `weft-pipeline` uses the plain per-item API (items move
//!   in chunks internally); `weft-pipeline-batched` batches 1,024 items
//!   first and maps whole batches; `weft-pipeline-chunk1` turns the internal
//!   chunking off (one item per hand-off), to show what it buys.
//! - `par_map/x2`: 100,000 items, `f = x * 2` (the sequential fast path).
//! - `par_map/1us`: 100,000 items, `f` costing about 1 µs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use weft_pipeline::{Batch, ParMap, Pipeline, Stage};

use crate::workload;
use crate::{Ctx, Group, Row, Target, throughput};

/// The pipeline group.
pub const GROUP: Group = Group {
    name: "pipeline",
    run,
    overheads: &[],
    targets: &[
        Target {
            case: "pipeline/3-maps",
            weft: "weft-pipeline",
            peer: "tokio-mpsc-chain",
            at_least: 0.9,
        },
        Target {
            case: "pipeline/3-maps",
            weft: "weft-pipeline-batched",
            peer: "tokio-mpsc-chain",
            at_least: 5.0,
        },
        // "Batching on >= 5x unbatched", read strictly: against weft's own
        // pipeline with items handed over one at a time (chunk 1). Measured
        // in full mode only (it is slow).
        Target {
            case: "pipeline/3-maps",
            weft: "weft-pipeline-batched",
            peer: "weft-pipeline-chunk1",
            at_least: 5.0,
        },
        Target {
            case: "par_map/x2",
            weft: "weft-par-map",
            peer: "sequential-loop",
            at_least: 0.95,
        },
        Target {
            case: "par_map/1us",
            weft: "weft-par-map",
            peer: "sequential-loop",
            at_least: 1.7,
        },
    ],
};

/// Items through the 3-map pipeline.
pub const ITEMS: u64 = 1_000_000;
/// Channel capacity between stages, for weft and the peer alike.
pub const CAPACITY: usize = 1024;
/// Items per `par_map` run.
pub const PAR_ITEMS: u64 = 100_000;
/// xorshift rounds that cost about 1 µs (see [`workload::job`]).
pub const ONE_US_ITERS: u32 = 700;

#[inline]
fn f1(x: u64) -> u64 {
    x.wrapping_add(1)
}
#[inline]
fn f2(x: u64) -> u64 {
    x.wrapping_mul(3)
}
#[inline]
fn f3(x: u64) -> u64 {
    x ^ 0x5555
}

/// The expected sum of the 3-map pipeline over `n` items.
pub fn expected(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, x| acc.wrapping_add(f3(f2(f1(x)))))
}

/// The peer: a producer task and three stage tasks joined by bounded tokio
/// mpsc channels, one item per send, and the caller summing.
pub async fn mpsc_chain(n: u64) -> u64 {
    use tokio::sync::mpsc::{Receiver, Sender, channel};
    fn stage_task(mut rx: Receiver<u64>, tx: Sender<u64>, f: fn(u64) -> u64) {
        tokio::spawn(async move {
            while let Some(x) = rx.recv().await {
                if tx.send(f(x)).await.is_err() {
                    break;
                }
            }
        });
    }
    let (tx0, rx0) = channel::<u64>(CAPACITY);
    let (tx1, rx1) = channel::<u64>(CAPACITY);
    let (tx2, rx2) = channel::<u64>(CAPACITY);
    let (tx3, mut rx3) = channel::<u64>(CAPACITY);
    tokio::spawn(async move {
        for i in 0..n {
            if tx0.send(i).await.is_err() {
                break;
            }
        }
    });
    stage_task(rx0, tx1, f1);
    stage_task(rx1, tx2, f2);
    stage_task(rx2, tx3, f3);
    tokio::spawn(async move {
        let mut sum = 0u64;
        while let Some(x) = rx3.recv().await {
            sum = sum.wrapping_add(x);
        }
        sum
    })
    .await
    .expect("sink task")
}

fn stage<T>(name: &str) -> Stage<T> {
    Stage::new(name).capacity(CAPACITY)
}

/// weft with the per-item API.
pub async fn weft_pipeline(n: u64) -> u64 {
    let sum = Arc::new(AtomicU64::new(0));
    let s = sum.clone();
    let mut local = 0u64;
    Pipeline::from_iter(0..n)
        .map(stage("f1"), f1)
        .map(stage("f2"), f2)
        .map(stage("f3"), f3)
        .for_each(move |x| {
            local = local.wrapping_add(x);
            s.store(local, Ordering::Relaxed);
        })
        .run()
        .await
        .expect("pipeline runs");
    sum.load(Ordering::Relaxed)
}

/// weft with its internal chunking turned off (`chunk(1)`: one item per
/// hand-off), to show what chunking buys.
pub async fn weft_chunk1(n: u64) -> u64 {
    let sum = Arc::new(AtomicU64::new(0));
    let s = sum.clone();
    let mut local = 0u64;
    Pipeline::from_iter(0..n)
        .map(stage("f1").chunk(1), f1)
        .map(stage("f2").chunk(1), f2)
        .map(stage("f3").chunk(1), f3)
        .for_each(move |x| {
            local = local.wrapping_add(x);
            s.store(local, Ordering::Relaxed);
        })
        .run()
        .await
        .expect("pipeline runs");
    sum.load(Ordering::Relaxed)
}

/// weft with user batching: 1,024 items per batch, each stage maps a batch;
/// batches move one per hand-off, up to 8 batches (8,192 items) waiting
/// per stage.
pub async fn weft_batched(n: u64) -> u64 {
    let sum = Arc::new(AtomicU64::new(0));
    let s = sum.clone();
    let mut local = 0u64;
    Pipeline::from_iter(0..n)
        .batch("batch", Batch::size(1024).capacity(CAPACITY))
        .map(stage("f1").capacity(8).chunk(1), |v: Vec<u64>| {
            v.into_iter().map(f1).collect::<Vec<_>>()
        })
        .map(stage("f2").capacity(8).chunk(1), |v: Vec<u64>| {
            v.into_iter().map(f2).collect::<Vec<_>>()
        })
        .map(stage("f3").capacity(8).chunk(1), |v: Vec<u64>| {
            v.into_iter().map(f3).collect::<Vec<_>>()
        })
        .for_each(move |v| {
            local = v.into_iter().fold(local, u64::wrapping_add);
            s.store(local, Ordering::Relaxed);
        })
        .run()
        .await
        .expect("pipeline runs");
    sum.load(Ordering::Relaxed)
}

fn one_us(x: &u64) -> u64 {
    workload::job(*x, ONE_US_ITERS)
}

fn double(x: &u64) -> u64 {
    x * 2
}

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let case = "pipeline/3-maps";
    if ctx.wants(case) {
        let n = ITEMS;
        let want = expected(n);
        let rt = workload::runtime();
        type Imp = fn(u64) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>>;
        let imps: [(&str, Imp); 4] = [
            ("tokio-mpsc-chain", |n| Box::pin(mpsc_chain(n))),
            ("weft-pipeline", |n| Box::pin(weft_pipeline(n))),
            ("weft-pipeline-chunk1", |n| Box::pin(weft_chunk1(n))),
            ("weft-pipeline-batched", |n| Box::pin(weft_batched(n))),
        ];
        for (name, imp) in imps {
            // The chunk1 row is informational and slow: full mode only, so
            // the quick run stays well under its time budget.
            if ctx.quick && name == "weft-pipeline-chunk1" {
                continue;
            }
            rows.push(throughput(ctx, case, name, n, || {
                let start = Instant::now();
                let sum = rt.block_on(imp(n));
                let d = start.elapsed();
                assert_eq!(sum, want, "{name} computed a wrong sum");
                d
            }));
        }
    }
    let items: Vec<u64> = (0..PAR_ITEMS).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workload::workers())
        .build()
        .expect("rayon pool");
    for (case, f) in [
        ("par_map/x2", double as fn(&u64) -> u64),
        ("par_map/1us", one_us),
    ] {
        if !ctx.wants(case) {
            continue;
        }
        let want: Vec<u64> = items.iter().map(f).collect();
        let check = |name: &str, got: Vec<u64>| {
            assert!(got == want, "{name} computed a wrong result");
        };
        rows.push(throughput(ctx, case, "sequential-loop", PAR_ITEMS, || {
            let start = Instant::now();
            let out: Vec<u64> = std::hint::black_box(&items).iter().map(f).collect();
            let d = start.elapsed();
            check("sequential-loop", out);
            d
        }));
        rows.push(throughput(ctx, case, "rayon-par-iter", PAR_ITEMS, || {
            let start = Instant::now();
            let out: Vec<u64> =
                pool.install(|| std::hint::black_box(&items).par_iter().map(f).collect());
            let d = start.elapsed();
            check("rayon-par-iter", out);
            d
        }));
        let pm = ParMap::new();
        rows.push(throughput(ctx, case, "weft-par-map", PAR_ITEMS, || {
            let start = Instant::now();
            let out = pm.map(std::hint::black_box(&items), f);
            let d = start.elapsed();
            check("weft-par-map", out);
            d
        }));
    }
}

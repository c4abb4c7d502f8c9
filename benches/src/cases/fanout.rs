//! weft-fanout against futures' `buffer_unordered` and `select_all`.
//!
//! Both scatter cases run inside a spawned task on the runtime, as a request
//! handler would. Implementations are measured in alternation, 7 rounds in
//! quick mode (15 in full), and the median is reported.
//!
//! - `fanout/scatter-timer`: 10,000 I/O-like futures (each awaits a 1 ms
//!   tokio timer) at concurrency 100. `weft-scatter` (in-task, input-order
//!   results) vs `buffer-unordered` (collecting a `Vec`). Quick mode: 4,000.
//! - `fanout/scatter-cpu`: 10,000 CPU-bound items of about 10 µs (xorshift
//!   rounds, calibrated at start) at concurrency 100 on a 2-worker
//!   multi-thread runtime. `weft-scatter-spawned` (one task per item) vs
//!   `buffer-unordered` (one task, no parallelism); `joinset-spawn` (a
//!   hand-written `JoinSet` of at most 100 spawned tasks) shows what
//!   spawning per item gives on this machine at that moment. Quick mode:
//!   5,000.
//! - `fanout/merge-4-streams`: 4 streams of 1,000,000 `u64`s merged and
//!   summed on a current-thread runtime. `weft-merge-fair` and
//!   `weft-merge-biased` vs `select-all`. Quick mode: 4 × 250,000.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use weft_fanout::merge::{merge_biased, merge_fair};
use weft_fanout::scatter;

use crate::workload::{self, job};
use crate::{Ctx, Group, Row, Target, Unit};

/// The fan-out group.
pub const GROUP: Group = Group {
    name: "fanout",
    run,
    overheads: &[],
    targets: &[
        Target {
            case: "fanout/scatter-timer",
            weft: "weft-scatter",
            peer: "buffer-unordered",
            at_least: 0.9,
        },
        Target {
            case: "fanout/scatter-cpu",
            weft: "weft-scatter-spawned",
            peer: "buffer-unordered",
            at_least: 1.7,
        },
        Target {
            case: "fanout/merge-4-streams",
            weft: "weft-merge-fair",
            peer: "select-all",
            at_least: 0.9,
        },
    ],
};

/// Concurrency of both scatter cases.
pub const CONCURRENCY: usize = 100;

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    if ctx.wants("fanout/scatter-timer") {
        let items = if ctx.quick { 4_000 } else { 10_000 };
        let rt = workload::runtime();
        rows.extend(paired(
            ctx,
            "fanout/scatter-timer",
            &["weft-scatter", "buffer-unordered"],
            items,
            |imp| {
                let start = Instant::now();
                let n = rt.block_on(in_task(scatter_timer(imp, items)));
                let elapsed = start.elapsed();
                assert_eq!(n, items, "{imp} lost items");
                elapsed
            },
        ));
    }
    if ctx.wants("fanout/scatter-cpu") {
        let items = if ctx.quick { 5_000 } else { 10_000 };
        let iters = iters_for(Duration::from_micros(10));
        let expected = (0..items).fold(0u64, |a, i| a.wrapping_add(job(i, iters)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rows.extend(paired(
            ctx,
            "fanout/scatter-cpu",
            &["weft-scatter-spawned", "buffer-unordered", "joinset-spawn"],
            items,
            |imp| {
                let start = Instant::now();
                let sum = rt.block_on(in_task(scatter_cpu(imp, items, iters)));
                let elapsed = start.elapsed();
                assert_eq!(sum, expected, "{imp} computed a wrong sum");
                elapsed
            },
        ));
    }
    if ctx.wants("fanout/merge-4-streams") {
        let per = if ctx.quick { 250_000 } else { 1_000_000 };
        let expected = 4 * (0..per).sum::<u64>();
        let rt = workload::current_thread();
        rows.extend(paired(
            ctx,
            "fanout/merge-4-streams",
            &["weft-merge-fair", "weft-merge-biased", "select-all"],
            4 * per,
            |imp| {
                let start = Instant::now();
                let sum = rt.block_on(merge4(imp, per));
                let elapsed = start.elapsed();
                assert_eq!(sum, expected, "{imp} computed a wrong sum");
                elapsed
            },
        ));
    }
}

/// Throughput rows for `imps` on one case, measured in alternation (one run
/// of each per round, so a burst of load from other processes on the shared
/// machine hits weft and its peers alike), median of the rounds.
fn paired(
    ctx: &Ctx,
    case: &str,
    imps: &[&'static str],
    items: u64,
    mut f: impl FnMut(&'static str) -> Duration,
) -> Vec<Row> {
    let rounds = if ctx.quick { 7 } else { 15 };
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); imps.len()];
    for _ in 0..rounds {
        for (i, imp) in imps.iter().enumerate() {
            times[i].push(f(imp));
        }
    }
    imps.iter()
        .zip(times)
        .map(|(imp, mut t)| {
            t.sort_unstable();
            Row::new(
                case,
                *imp,
                items as f64 / t[t.len() / 2].as_secs_f64(),
                Unit::ItemsPerSec,
            )
        })
        .collect()
}

/// Runs `fut` on a runtime worker, as a request handler would (and as the
/// reference `buffer-unordered` peer does), rather than on the thread that
/// called `block_on`.
async fn in_task<F>(fut: F) -> u64
where
    F: std::future::Future<Output = u64> + Send + 'static,
{
    tokio::spawn(fut).await.expect("bench task")
}

/// xorshift rounds that take about `target` on this machine.
pub fn iters_for(target: Duration) -> u32 {
    let probe = 2_000u32;
    let start = Instant::now();
    for i in 0..200u64 {
        std::hint::black_box(job(i, probe));
    }
    let per_iter = start.elapsed().as_secs_f64() / (200.0 * f64::from(probe));
    ((target.as_secs_f64() / per_iter) as u32).max(1)
}

/// `items` futures each awaiting a 1 ms timer, `CONCURRENCY` at a time;
/// returns how many results came back.
pub async fn scatter_timer(imp: &'static str, items: u64) -> u64 {
    let f = |i: u64| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, Infallible>(i)
    };
    let out: Vec<u64> = match imp {
        "weft-scatter" => scatter(0..items, CONCURRENCY, f)
            .expect("CONCURRENCY is not 0")
            .try_collect()
            .await
            .expect("infallible"),
        "buffer-unordered" => {
            stream::iter(0..items)
                .map(f)
                .buffer_unordered(CONCURRENCY)
                .map(|r| r.expect("infallible"))
                .collect()
                .await
        }
        other => panic!("unknown impl {other}"),
    };
    out.len() as u64
}

/// `items` CPU-bound jobs of `iters` rounds, `CONCURRENCY` at a time; the
/// sum of the results.
pub async fn scatter_cpu(imp: &'static str, items: u64, iters: u32) -> u64 {
    let f = move |i: u64| async move { Ok::<_, Infallible>(job(i, iters)) };
    match imp {
        "weft-scatter-spawned" => scatter(0..items, CONCURRENCY, f)
            .expect("CONCURRENCY is not 0")
            .spawned()
            .completion_order()
            .try_collect()
            .await
            .expect("infallible")
            .into_iter()
            .fold(0u64, u64::wrapping_add),
        "weft-scatter" => scatter(0..items, CONCURRENCY, f)
            .expect("CONCURRENCY is not 0")
            .completion_order()
            .try_collect()
            .await
            .expect("infallible")
            .into_iter()
            .fold(0u64, u64::wrapping_add),
        "buffer-unordered" => {
            stream::iter(0..items)
                .map(f)
                .buffer_unordered(CONCURRENCY)
                .fold(0u64, |a, r| async move {
                    a.wrapping_add(r.expect("infallible"))
                })
                .await
        }
        "joinset-spawn" => {
            // The hand-written parallel version: a JoinSet holding at most
            // CONCURRENCY spawned tasks.
            let mut set = tokio::task::JoinSet::<Result<u64, Infallible>>::new();
            let mut sum = 0u64;
            for i in 0..items {
                if set.len() >= CONCURRENCY {
                    let r = set.join_next().await.expect("non-empty").expect("job");
                    sum = sum.wrapping_add(r.expect("infallible"));
                }
                set.spawn(f(i));
            }
            while let Some(r) = set.join_next().await {
                sum = sum.wrapping_add(r.expect("job").expect("infallible"));
            }
            sum
        }
        other => panic!("unknown impl {other}"),
    }
}

/// Merges 4 streams of `0..per` and sums them.
pub async fn merge4(imp: &str, per: u64) -> u64 {
    let inputs = || (0..4).map(move |_| stream::iter(0..per));
    let mut sum = 0u64;
    match imp {
        "weft-merge-fair" => {
            let mut m = merge_fair(inputs());
            while let Some(x) = m.next().await {
                sum = sum.wrapping_add(x);
            }
        }
        "weft-merge-biased" => {
            let mut m =
                merge_biased(inputs().zip([4, 3, 2, 1]).map(|(s, p)| (p, s)), 16).expect("valid");
            while let Some(x) = m.next().await {
                sum = sum.wrapping_add(x);
            }
        }
        "select-all" => {
            let mut m = stream::select_all(inputs());
            while let Some(x) = m.next().await {
                sum = sum.wrapping_add(x);
            }
        }
        other => panic!("unknown impl {other}"),
    }
    sum
}

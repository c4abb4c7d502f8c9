//! weft-exec: executor spawn throughput on the reference workload (paired
//! with the peers of [`crate::cases::reference`] under `jobs/iters=N`, plus
//! `semaphore-spawn`: `Semaphore::acquire_owned` + `tokio::spawn`), and the
//! per-call overhead of weft's concurrency limit against tower's
//! `ConcurrencyLimit` and of weft's rate-limit layer against a bare governor
//! `check()`, on a current-thread runtime, a multi-thread runtime, and with
//! 2 threads contending on one shared limit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};
use weft_core::Overflow;
use weft_exec::{BoundedExecutor, ConcurrencyLimitLayer, RateLimitLayer};

use crate::workload::{self, QUEUE, job};
use crate::{Ctx, Group, Overhead, Row, Target, Unit, interleaved};

/// The exec group.
pub const GROUP: Group = Group {
    name: "exec",
    run,
    // The rate-limit layer on its default clock (tokio time) against a bare
    // governor `check()` on governor's default clock: at most 20 ns added.
    overheads: &[
        Overhead {
            case: "exec-overhead/rate-limit/current-thread",
            weft: "weft-rate-limit",
            peer: "governor-check",
            at_most_ns: 20.0,
        },
        Overhead {
            case: "exec-overhead/rate-limit/multi-thread",
            weft: "weft-rate-limit",
            peer: "governor-check",
            at_most_ns: 20.0,
        },
        Overhead {
            case: "exec-overhead/rate-limit/2-threads",
            weft: "weft-rate-limit",
            peer: "governor-check",
            at_most_ns: 20.0,
        },
    ],
    targets: &[
        Target {
            case: "jobs/iters=0",
            weft: "weft-exec-spawn",
            peer: "semaphore-spawn",
            at_least: 1.0,
        },
        Target {
            case: "jobs/iters=0",
            weft: "weft-exec-spawn",
            peer: "joinset-semaphore",
            at_least: 1.0,
        },
        Target {
            case: "jobs/iters=100",
            weft: "weft-exec-spawn",
            peer: "semaphore-spawn",
            at_least: 1.0,
        },
        Target {
            case: "jobs/iters=100",
            weft: "weft-exec-spawn",
            peer: "joinset-semaphore",
            at_least: 1.0,
        },
        // weft / tower <= 1.2x in ns/call, i.e. tower / weft >= 1/1.2.
        Target {
            case: "exec-overhead/concurrency-limit/current-thread",
            weft: "weft-concurrency-limit",
            peer: "tower-concurrency-limit",
            at_least: 0.833,
        },
        Target {
            case: "exec-overhead/concurrency-limit/multi-thread",
            weft: "weft-concurrency-limit",
            peer: "tower-concurrency-limit",
            at_least: 0.833,
        },
        Target {
            case: "exec-overhead/concurrency-limit/2-threads",
            weft: "weft-concurrency-limit",
            peer: "tower-concurrency-limit",
            at_least: 0.833,
        },
    ],
};

/// weft's executor on the reference workload: `max_running` = queue =
/// `QUEUE` (the in-flight bound the spawn-per-job peers use); the caller
/// awaits every handle in order.
pub async fn weft_spawn(jobs: u64, iters: u32) -> u64 {
    let exec = BoundedExecutor::builder()
        .name("bench")
        .max_running(QUEUE)
        .queue_capacity(QUEUE)
        .overflow(Overflow::Block)
        .build()
        .expect("executor");
    let mut pending = VecDeque::with_capacity(QUEUE);
    let mut sum = 0u64;
    for i in 0..jobs {
        if pending.len() >= QUEUE {
            let h: weft_exec::TaskHandle<u64> = pending.pop_front().expect("non-empty");
            sum = sum.wrapping_add(h.await.expect("job"));
        }
        let h = match exec.spawn(async move { job(i, iters) }).await {
            Ok(h) => h,
            Err(_) => panic!("spawn refused"),
        };
        pending.push_back(h);
    }
    for h in pending {
        sum = sum.wrapping_add(h.await.expect("job"));
    }
    sum
}

/// `Semaphore::acquire_owned` + `tokio::spawn` per job, the permit dropped
/// when the job ends; the caller awaits every `JoinHandle` in order.
pub async fn semaphore_spawn(jobs: u64, iters: u32) -> u64 {
    let sem = Arc::new(Semaphore::new(QUEUE));
    let mut pending = VecDeque::with_capacity(QUEUE);
    let mut sum = 0u64;
    for i in 0..jobs {
        if pending.len() >= QUEUE {
            let h: tokio::task::JoinHandle<u64> = pending.pop_front().expect("non-empty");
            sum = sum.wrapping_add(h.await.expect("job"));
        }
        let permit = sem.clone().acquire_owned().await.expect("open");
        pending.push_back(tokio::spawn(async move {
            let r = job(i, iters);
            drop(permit);
            r
        }));
    }
    for h in pending {
        sum = sum.wrapping_add(h.await.expect("job"));
    }
    sum
}

fn ns_rows(rows: &mut Vec<Row>, case: &str, names: &[&str], n: u64, times: Vec<Duration>) {
    for (name, d) in names.iter().zip(times) {
        rows.push(Row::new(
            case,
            *name,
            d.as_nanos() as f64 / n as f64,
            Unit::NsPerCall,
        ));
    }
}

/// A service that is always ready and answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u64) -> Self::Future {
        ready(Ok(x))
    }
}

/// `n` calls through `svc`, each `ready().await` then `call().await`.
async fn drive<S>(mut svc: S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut sum = 0u64;
    for i in 0..n {
        let r = svc
            .ready()
            .await
            .expect("ready")
            .call(i)
            .await
            .expect("call");
        sum = sum.wrapping_add(r);
    }
    std::hint::black_box(sum)
}

#[derive(Clone, Copy)]
enum Flavor {
    Current,
    Multi,
    TwoThreads,
}

impl Flavor {
    fn label(self) -> &'static str {
        match self {
            Flavor::Current => "current-thread",
            Flavor::Multi => "multi-thread",
            Flavor::TwoThreads => "2-threads",
        }
    }

    fn runtime(self) -> Runtime {
        match self {
            Flavor::Current => workload::current_thread(),
            Flavor::Multi => workload::runtime(),
            Flavor::TwoThreads => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }
}

/// Times `n` calls per thread through services made by `make` (one per
/// thread, sharing whatever `make` shares); ns per call from one thread's
/// view (wall time / n).
fn time_calls<S, F>(rt: &Runtime, flavor: Flavor, n: u64, make: F) -> Duration
where
    F: Fn() -> S,
    S: Service<u64, Response = u64> + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    match flavor {
        Flavor::Current | Flavor::Multi => {
            let svc = make();
            let start = Instant::now();
            rt.block_on(drive(svc, n));
            start.elapsed()
        }
        Flavor::TwoThreads => {
            let (a, b) = (make(), make());
            let start = Instant::now();
            rt.block_on(async move {
                let ta = tokio::spawn(drive(a, n));
                let tb = tokio::spawn(drive(b, n));
                ta.await.expect("a");
                tb.await.expect("b");
            });
            start.elapsed()
        }
    }
}

/// Bare governor `check()` calls, `n` per thread.
fn time_bare_check<C>(rt: &Runtime, flavor: Flavor, n: u64, limiter: Arc<C>) -> Duration
where
    C: Fn() -> bool + Send + Sync + 'static,
{
    let run = |l: Arc<C>| async move {
        let mut ok = 0u64;
        for _ in 0..n {
            ok += l() as u64;
        }
        assert_eq!(
            std::hint::black_box(ok),
            n,
            "the bench quota must never limit"
        );
    };
    let start = Instant::now();
    match flavor {
        Flavor::Current | Flavor::Multi => rt.block_on(run(limiter)),
        Flavor::TwoThreads => rt.block_on(async move {
            let a = tokio::spawn(run(limiter.clone()));
            let b = tokio::spawn(run(limiter));
            a.await.expect("a");
            b.await.expect("b");
        }),
    }
    start.elapsed()
}

/// A quota the benchmark never exhausts: a burst of a billion, refilled at
/// one per nanosecond.
fn huge_quota() -> Quota {
    Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
}

fn overhead(ctx: &Ctx, rows: &mut Vec<Row>) {
    let n: u64 = if ctx.quick { 100_000 } else { 1_000_000 };
    let samples = if ctx.quick { 9 } else { 15 };
    for flavor in [Flavor::Current, Flavor::Multi, Flavor::TwoThreads] {
        let rt = flavor.runtime();
        let case = format!("exec-overhead/concurrency-limit/{}", flavor.label());
        if ctx.wants(&case) {
            let times = interleaved(
                samples,
                &mut [
                    &mut || {
                        let layer = ConcurrencyLimitLayer::new(1_000);
                        time_calls(&rt, flavor, n, || layer.layer(Echo))
                    },
                    &mut || {
                        let sem = Arc::new(Semaphore::new(1_000));
                        time_calls(&rt, flavor, n, || {
                            tower::limit::ConcurrencyLimit::with_semaphore(Echo, sem.clone())
                        })
                    },
                    &mut || time_calls(&rt, flavor, n, || Echo),
                ],
            );
            ns_rows(
                rows,
                &case,
                &[
                    "weft-concurrency-limit",
                    "tower-concurrency-limit",
                    "no-limit",
                ],
                n,
                times,
            );
        }
        let case = format!("exec-overhead/rate-limit/{}", flavor.label());
        if ctx.wants(&case) {
            let times = interleaved(
                samples,
                &mut [
                    &mut || {
                        // Built inside the runtime: the tokio clock reads its time.
                        let layer = rt.block_on(async { RateLimitLayer::new(huge_quota()) });
                        time_calls(&rt, flavor, n, || layer.layer(Echo))
                    },
                    &mut || {
                        let layer = RateLimitLayer::with_clock(
                            huge_quota(),
                            governor::clock::QuantaClock::default(),
                        );
                        time_calls(&rt, flavor, n, || layer.layer(Echo))
                    },
                    &mut || {
                        let l = Arc::new(RateLimiter::direct(huge_quota()));
                        time_bare_check(&rt, flavor, n, Arc::new(move || l.check().is_ok()))
                    },
                    &mut || {
                        let l = Arc::new(rt.block_on(async {
                            RateLimiter::direct_with_clock(
                                huge_quota(),
                                weft_exec::TokioClock::new(),
                            )
                        }));
                        time_bare_check(&rt, flavor, n, Arc::new(move || l.check().is_ok()))
                    },
                    &mut || time_calls(&rt, flavor, n, || Echo),
                ],
            );
            ns_rows(
                rows,
                &case,
                &[
                    "weft-rate-limit",
                    "weft-rate-limit-quanta-clock",
                    "governor-check",
                    "governor-check-tokio-clock",
                    "no-limit",
                ],
                n,
                times,
            );
        }
    }
}

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    // The spawn throughput rows (`jobs/iters=N`) are measured by
    // `crate::cases::reference`, interleaved with every peer.
    overhead(ctx, rows);
}

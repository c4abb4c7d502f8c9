//! Circuit breakers: the cost of one call in the closed state around a ready
//! future (one thread, and two threads sharing one breaker), and of one
//! rejection in the open state. weft-breaker against recloser, failsafe and
//! tower-resilience's circuit breaker.
//!
//! Rows (`ns/call`, lower is better):
//! - `breaker/closed/1-thread`, `breaker/closed/2-threads`: a call that
//!   succeeds at once, every breaker with its default configuration (for
//!   weft and recloser, a count window of 100 calls). 2 threads: each thread
//!   runs its own current-thread runtime and makes the calls on clones of
//!   one breaker; the value is the slower thread's time per call.
//! - `breaker/open-reject`: a call to a tripped breaker.
//!
//! weft variants: `weft-breaker` (default: count window), `weft-breaker-consecutive`
//! (consecutive failures only), `weft-breaker-time-window` (10 s time window,
//! the one place a lock exists, taken once per second per bucket), and
//! `weft-breaker-tower` (through the tower service, for the like-for-like
//! comparison with tower-resilience, which is only a tower layer).

use std::future::{Future, ready};
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use failsafe::futures::CircuitBreaker as _;
use tower::{Layer, Service, ServiceExt};
use weft_breaker::{BreakerLayer, CircuitBreaker, SlidingWindow};

use crate::{Ctx, Group, Row, Target, ns_per_call};

/// The breaker group.
pub const GROUP: Group = Group {
    name: "breaker",
    run,
    overheads: &[],
    targets: &[
        Target {
            case: CLOSED_1,
            weft: "weft-breaker",
            peer: "recloser",
            at_least: 1.0,
        },
        Target {
            case: CLOSED_1,
            weft: "weft-breaker",
            peer: "tower-resilience",
            at_least: 10.0,
        },
        Target {
            case: CLOSED_2,
            weft: "weft-breaker",
            peer: "recloser",
            at_least: 1.0,
        },
        Target {
            case: CLOSED_2,
            weft: "weft-breaker",
            peer: "tower-resilience",
            at_least: 10.0,
        },
    ],
};

const CLOSED_1: &str = "breaker/closed/1-thread";
const CLOSED_2: &str = "breaker/closed/2-threads";
const OPEN: &str = "breaker/open-reject";

/// The implementations, by the name used in rows.
pub const IMPLS: [&str; 7] = [
    "weft-breaker",
    "weft-breaker-consecutive",
    "weft-breaker-time-window",
    "weft-breaker-tower",
    "recloser",
    "failsafe",
    "tower-resilience",
];

fn calls(ctx: &Ctx) -> u64 {
    if ctx.quick { 200_000 } else { 2_000_000 }
}

/// A current-thread runtime with time enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One breaker of any implementation, ready to be called.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // the peers' types are not Debug
pub enum Subject {
    /// weft's plain `call`.
    Weft(CircuitBreaker),
    /// weft through tower.
    WeftTower(weft_breaker::Breaker<Inner>),
    /// recloser's async wrapper.
    Recloser(recloser::AsyncRecloser),
    /// failsafe's state machine.
    Failsafe(Failsafe),
    /// tower-resilience's breaker (a tower service).
    TowerResilience(TowerResilience),
}

/// The inner service: fails when asked to.
pub type Inner = tower::util::ServiceFn<fn(bool) -> std::future::Ready<Result<u64, &'static str>>>;
/// failsafe's default breaker type.
pub type Failsafe = failsafe::StateMachine<
    failsafe::failure_policy::OrElse<
        failsafe::failure_policy::SuccessRateOverTimeWindow<failsafe::backoff::EqualJittered>,
        failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::EqualJittered>,
    >,
    (),
>;
/// tower-resilience's breaker around [`Inner`].
pub type TowerResilience = tower_resilience::circuitbreaker::CircuitBreaker<
    Inner,
    tower_resilience::circuitbreaker::DefaultClassifier,
>;

fn inner() -> Inner {
    fn answer(fail: bool) -> std::future::Ready<Result<u64, &'static str>> {
        ready(if fail { Err("down") } else { Ok(1) })
    }
    tower::service_fn(answer as fn(bool) -> _)
}

impl Subject {
    /// Builds `imp` with its defaults (weft: the variant's window).
    pub fn new(imp: &str) -> Subject {
        let weft = |w: SlidingWindow, consecutive: u32| {
            CircuitBreaker::builder()
                .sliding_window(w)
                .minimum_calls(10)
                .consecutive_failures(consecutive)
                .open_duration(Duration::from_secs(3600))
                .build()
                .expect("valid")
        };
        match imp {
            "weft-breaker" => Subject::Weft(weft(SlidingWindow::Count(100), 0)),
            "weft-breaker-consecutive" => Subject::Weft(weft(SlidingWindow::Disabled, 5)),
            "weft-breaker-time-window" => {
                Subject::Weft(weft(SlidingWindow::Time(Duration::from_secs(10)), 0))
            }
            "weft-breaker-tower" => Subject::WeftTower(
                BreakerLayer::new(weft(SlidingWindow::Count(100), 0)).layer(inner()),
            ),
            "recloser" => Subject::Recloser(recloser::AsyncRecloser::from(
                recloser::Recloser::custom()
                    .open_wait(Duration::from_secs(3600))
                    .build(),
            )),
            "failsafe" => Subject::Failsafe(failsafe::Config::new().build()),
            "tower-resilience" => Subject::TowerResilience(
                tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                    .failure_rate_threshold(0.5)
                    .sliding_window_size(100)
                    .minimum_number_of_calls(10)
                    .wait_duration_in_open(Duration::from_secs(3600))
                    .build()
                    .expect("valid")
                    .layer(inner()),
            ),
            other => panic!("unknown breaker implementation {other}"),
        }
    }

    /// The implementation's name.
    pub fn name(&self) -> &'static str {
        match self {
            Subject::Weft(_) => "weft-breaker",
            Subject::WeftTower(_) => "weft-breaker-tower",
            Subject::Recloser(_) => "recloser",
            Subject::Failsafe(_) => "failsafe",
            Subject::TowerResilience(_) => "tower-resilience",
        }
    }

    /// One call; `fail` makes the protected call fail. Returns whether the
    /// breaker let it through.
    pub async fn call(&mut self, fail: bool) -> bool {
        let fut = ready(if fail { Err("down") } else { Ok(1u64) });
        match self {
            Subject::Weft(b) => match b.call(fut).await {
                Ok(v) => {
                    black_box(v);
                    true
                }
                Err(e) => !e.is_open(),
            },
            Subject::WeftTower(s) => match s.ready().await {
                Ok(s) => {
                    black_box(s.call(fail).await.ok());
                    true
                }
                Err(_) => false,
            },
            Subject::Recloser(r) => !matches!(r.call(fut).await, Err(recloser::Error::Rejected)),
            Subject::Failsafe(f) => !matches!(f.call(fut).await, Err(failsafe::Error::Rejected)),
            Subject::TowerResilience(s) => match s.ready().await {
                Ok(s) => !matches!(
                    s.call(fail).await,
                    Err(tower_resilience::circuitbreaker::CircuitBreakerError::OpenCircuit)
                ),
                Err(_) => false,
            },
        }
    }

    /// Trips the breaker open with failing calls.
    pub async fn trip(&mut self) {
        for _ in 0..1_000 {
            if !self.call(true).await {
                return;
            }
        }
        panic!("breaker did not open after 1000 failures");
    }
}

async fn run_calls(mut s: Subject, n: u64, expect_pass: bool) {
    for _ in 0..n {
        let passed = s.call(false).await;
        debug_assert_eq!(passed, expect_pass);
        black_box(passed);
    }
}

/// Times `n` closed-state calls on one thread.
pub fn closed_one(imp: &str, n: u64) -> Duration {
    let rt = runtime();
    let s = Subject::new(imp);
    rt.block_on(run_calls(s.clone(), 1_000, true));
    let start = Instant::now();
    rt.block_on(run_calls(s, n, true));
    start.elapsed()
}

/// Times `n` calls per thread on two threads sharing one breaker; returns
/// the slower thread's time.
pub fn closed_two(imp: &str, n: u64) -> Duration {
    let template = Mutex::new(Subject::new(imp));
    contended(n, || {
        let s = template.lock().expect("lock").clone();
        run_calls(s, n, true)
    })
}

fn contended<F, Fut>(_n: u64, make: F) -> Duration
where
    F: Fn() -> Fut + Sync,
    Fut: Future<Output = ()>,
{
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let rt = runtime();
                    let fut = make();
                    barrier.wait();
                    let start = Instant::now();
                    rt.block_on(fut);
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

/// Times `n` rejected calls on a tripped breaker.
pub fn open_reject(imp: &str, n: u64) -> Duration {
    let rt = runtime();
    let mut s = Subject::new(imp);
    rt.block_on(s.trip());
    let start = Instant::now();
    rt.block_on(run_calls(s, n, false));
    start.elapsed()
}

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let n = calls(ctx);
    for imp in IMPLS {
        if ctx.wants(CLOSED_1) {
            rows.push(ns_per_call(ctx, CLOSED_1, imp, n, || closed_one(imp, n)));
        }
        if ctx.wants(CLOSED_2) {
            // tower-resilience's async mutex makes a contended call cost tens
            // of microseconds; 1% of the calls measure it just as well and
            // keep `compare --quick` under its time budget.
            let n2 = if imp == "tower-resilience" {
                (n / 100).max(1_000)
            } else {
                n
            };
            rows.push(ns_per_call(ctx, CLOSED_2, imp, n2, || closed_two(imp, n2)));
        }
        if ctx.wants(OPEN) {
            rows.push(ns_per_call(ctx, OPEN, imp, n, || open_reject(imp, n)));
        }
    }
}

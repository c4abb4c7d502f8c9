//! A circuit breaker in front of a flaky dependency that is healthy, then
//! failing, then slow, then recovers.
//!
//! Run: `cargo run --example circuit_breaker` (about 4.5 seconds).
//!
//! What to look for:
//! - `transition` lines as they happen: closed -> open when the failure rate
//!   over the last 20 calls reaches 50%; open -> half_open after the open
//!   duration; half_open -> open when a probe fails, with the open duration
//!   doubling (200 ms, 400 ms, 800 ms); half_open -> closed once 3 probes
//!   succeed; closed -> open again for the slow-call rate (calls over 50 ms),
//!   with the open duration back at 200 ms; a slow probe counts as a failed
//!   one; and finally half_open -> closed when the dependency recovers.
//! - per-phase counts: while open, calls are rejected at once without
//!   touching the dependency (`rejected`), so the dependency sees far fewer
//!   calls than the caller makes.
//! - the closing summary: the breaker's own counts add up
//!   (admitted = successes + failures + ignored + cancelled, and
//!   admitted + rejected = every call made), and a retry policy in front of
//!   the breaker does not retry a rejection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use weft_breaker::retry::{Backoff, RetryError, RetryPolicy};
use weft_breaker::{CallError, CircuitBreaker, SlidingWindow};

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const SLOW: u8 = 2;

/// The dependency: answers at once, fails, or answers after 80 ms.
struct Dependency {
    mode: AtomicU8,
    calls: AtomicU64,
}

impl Dependency {
    async fn get(&self) -> Result<u64, &'static str> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        match self.mode.load(Ordering::Relaxed) {
            HEALTHY => Ok(n),
            FAILING => Err("503 service unavailable"),
            _ => {
                sleep(Duration::from_millis(80)).await;
                Ok(n)
            }
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    ok: u64,
    failed: u64,
    rejected: u64,
}

#[tokio::main]
async fn main() {
    weft_examples::init_tracing();
    let start = Instant::now();

    let breaker = CircuitBreaker::builder()
        .name("inventory")
        .sliding_window(SlidingWindow::Count(20))
        .minimum_calls(10)
        .failure_rate(0.5)
        .slow_calls(Duration::from_millis(50), 0.5)
        .open_duration(Duration::from_millis(200))
        .open_backoff(2.0, Duration::from_secs(2))
        .half_open_probes(3)
        .on_transition(move |t| {
            println!(
                "[{:>5} ms] transition {:>9} -> {:<9} ({}{})",
                start.elapsed().as_millis(),
                t.from,
                t.to,
                t.reason.as_str(),
                t.open_for
                    .map(|d| format!(", open for {d:?}"))
                    .unwrap_or_default(),
            );
        })
        .build()
        .expect("valid breaker");

    let dep = Arc::new(Dependency {
        mode: AtomicU8::new(HEALTHY),
        calls: AtomicU64::new(0),
    });
    let mut made = 0u64;

    let phases = [
        ("healthy", HEALTHY, 400),
        ("failing", FAILING, 800),
        ("healthy again", HEALTHY, 900),
        ("slow", SLOW, 1_200),
        ("recovering", HEALTHY, 1_000),
    ];
    for (name, mode, millis) in phases {
        dep.mode.store(mode, Ordering::Relaxed);
        let before = dep.calls.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_millis(millis);
        let mut c = Counts::default();
        println!("[{:>5} ms] phase {name}", start.elapsed().as_millis());
        while Instant::now() < until {
            made += 1;
            match breaker.call(dep.get()).await {
                Ok(_) => c.ok += 1,
                Err(CallError::Open(_)) => c.rejected += 1,
                Err(_) => c.failed += 1,
            }
            sleep(Duration::from_millis(5)).await;
        }
        println!(
            "[{:>5} ms] phase {name} done: ok {}, failed {}, rejected {}; the dependency saw {} calls; breaker is {}",
            start.elapsed().as_millis(),
            c.ok,
            c.failed,
            c.rejected,
            dep.calls.load(Ordering::Relaxed) - before,
            breaker.state(),
        );
    }

    // A retry policy in front of the breaker: failures are retried, a
    // rejection by an open breaker is not.
    let retry = RetryPolicy::new()
        .max_attempts(3)
        .backoff(Backoff::exponential(Duration::from_millis(5)));
    breaker.force_open();
    made += 1;
    match retry.call_through(&breaker, || dep.get()).await {
        Err(RetryError::Open { attempts, .. }) => {
            println!(
                "retry through a forced-open breaker: rejected after {attempts} attempt, not retried"
            )
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    breaker.reset();

    let s = breaker.stats();
    let admitted = s.successes + s.failures + s.ignored + s.cancelled;
    println!(
        "summary: {made} calls made = {admitted} admitted + {} rejected; admitted = {} ok + {} failed (+ {} ignored, {} cancelled); {} slow; opened {} times, closed {} times; {} probes",
        s.rejected,
        s.successes,
        s.failures,
        s.ignored,
        s.cancelled,
        s.slow,
        s.opened,
        s.closed,
        s.probes,
    );
    assert_eq!(admitted + s.rejected, made, "every call is accounted for");
    assert_eq!(
        admitted,
        dep.calls.load(Ordering::Relaxed),
        "only admitted calls reached the dependency"
    );
    assert!(
        s.opened >= 2,
        "the breaker opened for failures and for slowness"
    );
}

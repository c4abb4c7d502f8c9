//! Retry policy: attempts, backoff, budget, deadline, breaker interplay, tower.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, sleep};
use weft_breaker::retry::{Backoff, Jitter, RetryBudget, RetryError, RetryPolicy};
use weft_breaker::{CircuitBreaker, State};
use weft_core::Outcome;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_failures_up_to_max_attempts_with_backoff() {
    support::init();
    let policy = RetryPolicy::new()
        .max_attempts(4)
        .no_budget()
        .backoff(Backoff::exponential(100 * MS).jitter(Jitter::None));
    let n = AtomicU32::new(0);
    let start = Instant::now();
    let r = policy
        .call(|| async {
            n.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("down")
        })
        .await;
    let e = r.unwrap_err();
    assert_eq!(e.attempts(), 4);
    assert_eq!(e.into_inner(), Some("down"));
    assert_eq!(n.load(Ordering::SeqCst), 4);
    // 100 + 200 + 400 ms of backoff.
    assert_eq!(start.elapsed(), 700 * MS);
}

#[tokio::test(start_paused = true)]
async fn ignored_and_successful_results_are_not_retried() {
    let policy = RetryPolicy::new().classify(|r: &Result<u32, u16>| match r {
        Err(400) => Outcome::Ignored,
        Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    });
    let n = AtomicU32::new(0);
    let r = policy
        .call(|| async {
            n.fetch_add(1, Ordering::SeqCst);
            Err::<u32, u16>(400)
        })
        .await;
    assert_eq!(r.unwrap_err().attempts(), 1);
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_a_running_attempt() {
    let policy = RetryPolicy::new()
        .deadline(Duration::from_secs(1))
        .max_attempts(10);
    let start = Instant::now();
    let r = policy
        .call(|| async {
            sleep(Duration::from_secs(5)).await;
            Ok::<_, ()>(())
        })
        .await;
    assert!(matches!(
        r,
        Err(RetryError::DeadlineExceeded { attempts: 1 })
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn breaker_open_is_not_retried_by_default() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let policy = RetryPolicy::new().max_attempts(5);
    let n = AtomicU32::new(0);
    let r = policy
        .call_through(&b, || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("down")
        })
        .await;
    // First attempt fails and trips; the retry is rejected and not retried again.
    match r {
        Err(RetryError::Open { attempts, open }) => {
            assert_eq!(attempts, 2);
            assert_eq!(open.state(), State::Open);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_on_open_waits_for_the_breaker() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(2))
        .half_open_probes(1)
        .build()
        .unwrap();
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .retry_on_open(true)
        .backoff(Backoff::exponential(10 * MS).jitter(Jitter::None));
    let n = AtomicU32::new(0);
    let start = Instant::now();
    let r = policy
        .call_through(&b, || async {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("down")
            } else {
                Ok(7)
            }
        })
        .await;
    // Attempt 1 fails and trips; attempt 2 (after 10 ms) is rejected with
    // 1.99 s to go; attempt 3 waits that out and is the successful probe.
    assert_eq!(r.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn budget_is_shared_across_clones() {
    paused().block_on(async {
        let budget = RetryBudget::new(0.0, 2);
        let a = RetryPolicy::new()
            .budget(budget.clone())
            .max_attempts(10)
            .backoff(Backoff::exponential(MS));
        let b = a.clone();
        let fail = || async { Err::<(), _>(()) };
        assert_eq!(a.call(fail).await.unwrap_err().attempts(), 3);
        assert_eq!(b.call(fail).await.unwrap_err().attempts(), 1);
        let s = budget.stats();
        assert_eq!((s.deposits, s.withdrawals, s.refusals), (2, 2, 2));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Over any mix of calls, retries never exceed reserve + ratio * calls,
    /// and no call outlives its deadline.
    #[test]
    fn retry_stays_within_budget_and_deadline(
        ratio in 0.0f64..0.5,
        reserve in 0u32..5,
        max_attempts in 1u32..6,
        deadline_ms in 1u64..500,
        jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Decorrelated)],
        calls in proptest::collection::vec((0u64..200, any::<bool>()), 1..30),
    ) {
        paused().block_on(async {
            let budget = RetryBudget::new(ratio, reserve);
            let policy = RetryPolicy::new()
                .budget(budget.clone())
                .max_attempts(max_attempts)
                .deadline(Duration::from_millis(deadline_ms))
                .backoff(Backoff::exponential(20 * MS).max(100 * MS).jitter(jitter));
            let attempts = Arc::new(AtomicU32::new(0));
            for (latency, succeed) in &calls {
                let start = Instant::now();
                let a = attempts.clone();
                let r = policy
                    .call(|| {
                        let a = a.clone();
                        async move {
                            a.fetch_add(1, Ordering::SeqCst);
                            sleep(Duration::from_millis(*latency)).await;
                            if *succeed { Ok(()) } else { Err(()) }
                        }
                    })
                    .await;
                prop_assert!(start.elapsed() <= Duration::from_millis(deadline_ms));
                prop_assert!(r.as_ref().err().is_none_or(|e| e.attempts() <= max_attempts));
            }
            let retries = attempts.load(Ordering::SeqCst) as f64 - calls.len() as f64;
            prop_assert!(retries <= f64::from(reserve) + ratio * calls.len() as f64 + 1e-9,
                "retries {} > {} + {} * {}", retries, reserve, ratio, calls.len());
            prop_assert_eq!(budget.stats().withdrawals as f64, retries);
            Ok(())
        })?;
    }

    /// Guards that no attempt number, base, max or jitter makes a delay
    /// panic or exceed the max (including an uncapped `Duration::MAX`).
    #[test]
    fn backoff_never_panics_and_never_exceeds_the_max(
        n in any::<u32>(),
        base_ns in any::<u64>(),
        max in prop_oneof![
            Just(Duration::MAX),
            Just(Duration::ZERO),
            any::<u64>().prop_map(Duration::from_nanos),
            any::<u64>().prop_map(Duration::from_secs),
        ],
        multiplier in prop_oneof![Just(1.0f64), 1.0f64..1e6, Just(f64::MAX)],
        prev in prop_oneof![Just(Duration::MAX), any::<u64>().prop_map(Duration::from_nanos)],
        r in 0.0f64..1.0,
    ) {
        for j in [Jitter::None, Jitter::Full, Jitter::Decorrelated] {
            let b = Backoff::exponential(Duration::from_nanos(base_ns))
                .max(max)
                .multiplier(multiplier)
                .jitter(j);
            let d = b.delay(n, prev, r);
            prop_assert!(d <= max, "{:?} > {:?} ({:?})", d, max, j);
        }
    }

    #[test]
    fn backoff_delays_stay_in_bounds(n in 1u32..40, prev_ms in 0u64..5_000, r in 0.0f64..1.0) {
        let base = 10 * MS;
        let max = 2_000 * MS;
        for j in [Jitter::None, Jitter::Full, Jitter::Decorrelated] {
            let d = Backoff::exponential(base).max(max).jitter(j).delay(n, Duration::from_millis(prev_ms), r);
            prop_assert!(d <= max);
            if j == Jitter::Decorrelated {
                prop_assert!(d >= base.min(max));
                // The first retry has no previous delay: it counts as `base`,
                // so the first decorrelated delay is in [base, 3 * base].
                let hi = Duration::from_millis(prev_ms).max(base) * 3;
                prop_assert!(d <= hi + Duration::from_nanos(1), "{:?} > {:?}", d, hi);
            }
        }
    }
}

/// Guards that `Backoff::max(Duration::MAX)` means "no cap" and never
/// panics: a delay that grows past what a `Duration` holds is the max.
#[test]
fn backoff_with_an_uncapped_max_does_not_panic() {
    let b = Backoff::exponential(SEC)
        .max(Duration::MAX)
        .jitter(Jitter::None);
    let r = std::panic::catch_unwind(|| b.delay(70, Duration::ZERO, 0.5));
    assert!(r.is_ok(), "delay(70) panicked");
    assert_eq!(r.unwrap(), Duration::MAX);
    assert_eq!(b.delay(3, Duration::ZERO, 0.5), 4 * SEC);
    let dec = b.jitter(Jitter::Decorrelated);
    assert_eq!(dec.delay(2, Duration::MAX, 1.0), Duration::MAX);
}

/// Guards that a retry whose backoff is too long to add to the clock is
/// treated as ending past the deadline (the policy gives up, as documented)
/// instead of panicking on `Instant` overflow.
#[tokio::test(start_paused = true)]
async fn a_backoff_too_long_for_the_clock_is_past_the_deadline() {
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .no_budget()
        .deadline(SEC)
        .backoff(
            Backoff::exponential(Duration::from_secs(u64::MAX / 2))
                .max(Duration::MAX)
                .jitter(Jitter::None),
        );
    let n = AtomicU32::new(0);
    let r = policy
        .call(|| async {
            n.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("down")
        })
        .await;
    match r {
        Err(RetryError::Inner { attempts, .. }) => assert_eq!(attempts, 1),
        other => panic!("expected the first failure back, got {other:?}"),
    }
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[cfg(feature = "tower-retry")]
mod tower_retry {
    use super::*;
    use tower::retry::RetryLayer;
    use tower::{Layer, Service, ServiceExt};
    use weft_breaker::BreakerLayer;
    use weft_core::BoxError;

    #[tokio::test(start_paused = true)]
    async fn tower_retry_with_breaker_below() {
        let b = CircuitBreaker::builder()
            .consecutive_failures(3)
            .build()
            .unwrap();
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let inner = tower::service_fn(move |x: u32| {
            let n = n2.clone();
            async move {
                if n.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                    Err::<u32, BoxError>("flaky".into())
                } else {
                    Ok(x)
                }
            }
        });
        let policy = RetryPolicy::new()
            .max_attempts(3)
            .backoff(Backoff::exponential(MS));
        let mut svc = RetryLayer::new(policy).layer(BreakerLayer::new(b.clone()).layer(inner));
        assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);
        assert_eq!(n.load(Ordering::SeqCst), 2);

        // Trip the breaker: the retry's next attempt is refused by the
        // breaker's poll_ready, and the Open error comes back unretried.
        b.force_open();
        let err = svc.ready().await.unwrap_err();
        assert!(err.downcast_ref::<weft_breaker::Open>().is_some());
        b.reset();
        let b1 = CircuitBreaker::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let n1 = Arc::new(AtomicU32::new(0));
        let n3 = n1.clone();
        let down = tower::service_fn(move |_: u32| {
            n3.fetch_add(1, Ordering::SeqCst);
            async { Err::<u32, BoxError>("down".into()) }
        });
        let policy = RetryPolicy::new()
            .max_attempts(5)
            .backoff(Backoff::exponential(MS));
        let mut svc = RetryLayer::new(policy).layer(BreakerLayer::new(b1.clone()).layer(down));
        let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(err.downcast_ref::<weft_breaker::Open>().is_some(), "{err}");
        assert_eq!(
            n1.load(Ordering::SeqCst),
            1,
            "one real attempt, then the breaker said no"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tower_retry_counts_attempts_per_request() {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let inner = tower::service_fn(move |_: ()| {
            n2.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), BoxError>("down".into()) }
        });
        let policy = RetryPolicy::new()
            .max_attempts(3)
            .no_budget()
            .backoff(Backoff::exponential(MS));
        let mut svc = RetryLayer::new(policy).layer(inner);
        for i in 1..=2 {
            svc.ready().await.unwrap().call(()).await.unwrap_err();
            assert_eq!(n.load(Ordering::SeqCst), 3 * i);
        }
    }
}

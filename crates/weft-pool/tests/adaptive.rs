//! Adaptive sizing: scaling decisions, cooldown, idle expiry (paused time).

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::sleep;
use weft_pool::{Scaling, ShutdownMode, WorkerPool};

#[tokio::test(start_paused = true)]
async fn grows_under_load_and_shrinks_when_idle() {
    let pool = WorkerPool::builder()
        .name("adaptive")
        .min_workers(2)
        .max_workers(8)
        .queue_capacity(5000)
        .scaling(Scaling::default().idle_timeout(Duration::from_secs(3600)))
        .build()
        .unwrap();
    assert_eq!(pool.stats().workers, 2);
    for _ in 0..2000 {
        pool.execute(async { sleep(Duration::from_millis(100)).await })
            .await
            .unwrap();
    }
    // Busy with work queued: +25% (at least one) per check, 1 s cooldown.
    sleep(Duration::from_millis(510)).await;
    assert_eq!(pool.stats().workers, 3, "first check grows 2 -> 3");
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pool.stats().workers,
        3,
        "cooldown: no change one interval later"
    );
    sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.stats().workers, 4);
    sleep(Duration::from_secs(10)).await;
    assert_eq!(pool.stats().workers, 8, "capped at max_workers");
    // Let the queue empty, then utilisation drops: shrink by 15% steps to min.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.stats().queued, 0);
    assert_eq!(pool.stats().workers, 2, "shrunk back to min_workers");
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(10)))
        .await;
    assert_eq!(r.completed, 2000);
    assert!(r.is_clean(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn idle_workers_expire_above_min() {
    let pool = WorkerPool::builder()
        .min_workers(1)
        .max_workers(4)
        .workers(4)
        .scaling(
            Scaling::default()
                .interval(Duration::from_secs(3600))
                .idle_timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    assert_eq!(pool.stats().workers, 4);
    sleep(Duration::from_secs(4)).await;
    assert_eq!(pool.stats().workers, 4, "not idle long enough yet");
    sleep(Duration::from_secs(2)).await;
    assert_eq!(pool.stats().workers, 1, "idle workers expired down to min");
    // The remaining worker never expires.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.stats().workers, 1);
    assert_eq!(pool.submit(async { 3 }).await.unwrap().await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn resize_widens_adaptive_bounds() {
    let pool = WorkerPool::builder()
        .min_workers(1)
        .max_workers(2)
        .build()
        .unwrap();
    assert_eq!(pool.resize(6), 6);
    assert_eq!(pool.stats().workers, 6);
    assert_eq!(pool.stats().target_workers, 6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// The rule stays within bounds, only grows with work queued, only
    /// shrinks with nothing queued, and stays inside the hysteresis band.
    #[test]
    fn decide_respects_bounds_and_hysteresis(
        live in 1usize..64, util in 0.0f64..1.0, queued in 0usize..10, min in 1usize..8, extra in 0usize..64,
    ) {
        let s = Scaling::default();
        let max = min + extra;
        let live = live.clamp(min, max);
        match s.decide(live, util, queued, min, max) {
            None => {}
            Some(n) => {
                prop_assert!(n >= min && n <= max);
                prop_assert_ne!(n, live);
                if n > live {
                    prop_assert!(util >= 0.7 && queued > 0);
                    prop_assert!(n - live <= (live as f64 * 0.25).ceil().max(1.0) as usize);
                } else {
                    prop_assert!(util < 0.35 && queued == 0);
                }
            }
        }
        if (0.35..0.7).contains(&util) {
            prop_assert_eq!(s.decide(live, util, queued, min, max), None);
        }
    }
}

/// Guards the validation of [`Scaling`]: a zero interval (which made the
/// scaler task panic, so the pool never scaled) and every other value that
/// makes no sense are refused by `build()` with an error that says what to
/// pass.
#[tokio::test(start_paused = true)]
async fn a_zero_scaling_interval_is_refused_when_built() {
    let build = |s: Scaling| {
        WorkerPool::builder()
            .min_workers(1)
            .max_workers(4)
            .scaling(s)
            .build()
    };
    let bad = [
        ("interval", Scaling::new().interval(Duration::ZERO)),
        ("idle_timeout", Scaling::new().idle_timeout(Duration::ZERO)),
        ("grow_at", Scaling::new().thresholds(f64::NAN, 0.35)),
        ("grow_at", Scaling::new().thresholds(1.5, 0.35)),
        ("shrink_at", Scaling::new().thresholds(0.7, -0.1)),
        ("shrink_at", Scaling::new().thresholds(0.7, f64::NAN)),
        ("shrink_at", Scaling::new().thresholds(0.5, 0.5)),
        ("shrink_at", Scaling::new().thresholds(0.3, 0.6)),
        ("grow_by", Scaling::new().steps(-0.25, 0.15)),
        ("grow_by", Scaling::new().steps(f64::INFINITY, 0.15)),
        ("shrink_by", Scaling::new().steps(0.25, f64::NAN)),
        ("shrink_by", Scaling::new().steps(0.25, -1.0)),
        ("shrink_by", Scaling::new().steps(0.25, 1.5)),
    ];
    for (field, s) in bad {
        let e = build(s.clone()).expect_err(&format!("{s:?} was accepted"));
        assert!(
            matches!(e, weft_pool::BuildError::InvalidScaling(_)),
            "{s:?}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(field) && msg.contains("pass"), "{s:?}: {msg}");
    }
    // Also refused on a fixed-size pool (where it would be ignored).
    let e = WorkerPool::builder()
        .workers(2)
        .scaling(Scaling::new().interval(Duration::ZERO))
        .build()
        .unwrap_err();
    assert!(matches!(e, weft_pool::BuildError::InvalidScaling(_)), "{e}");
    // The edges of what makes sense are accepted.
    for s in [
        Scaling::new().thresholds(1.0, 0.0),
        Scaling::new().steps(0.0, 0.0),
        Scaling::new().steps(3.0, 1.0),
        Scaling::new().cooldown(Duration::ZERO),
        Scaling::new().interval(Duration::MAX),
    ] {
        assert!(build(s.clone()).is_ok(), "{s:?} was refused");
    }
}

/// Control for the test above: with a non-zero interval the same load grows
/// the pool.
#[tokio::test(start_paused = true)]
async fn a_positive_scaling_interval_grows_the_pool() {
    let pool = WorkerPool::builder()
        .min_workers(1)
        .max_workers(4)
        .scaling(Scaling::new().interval(Duration::from_millis(100)))
        .build()
        .unwrap();
    for _ in 0..40 {
        pool.execute(async { sleep(Duration::from_secs(1)).await })
            .await
            .unwrap();
    }
    sleep(Duration::from_secs(5)).await;
    assert!(pool.stats().target_workers > 1, "{:?}", pool.stats());
}

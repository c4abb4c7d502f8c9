//! hedge: fixed and percentile delays, at most k extra attempts, first
//! success wins, losers cancelled, budget, errors; all in paused time.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::Tracker;
use tokio::time::{Instant, sleep};
use tower::{Service, ServiceExt, service_fn};
use weft_core::{BoxError, Panicked};
use weft_fanout::hedge::{ConfigError, Hedge, HedgeLayer};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A backend whose n-th call (0-based) takes `plan(n)`: `(delay, ok)`.
fn backend(
    t: Tracker,
    plan: impl Fn(usize) -> (u64, bool) + Clone + Send + Sync + 'static,
) -> (
    impl Service<
        (),
        Response = usize,
        Error = BoxError,
        Future = impl Future<Output = Result<usize, BoxError>>,
    > + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |()| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let (delay, ok) = plan(n);
        let g = t.guard();
        async move {
            sleep(ms(delay)).await;
            g.done();
            if ok {
                Ok(n)
            } else {
                Err(BoxError::from(format!("attempt {n} failed")))
            }
        }
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn fixed_delay_hedge_wins_and_the_primary_is_cancelled() {
    support::init();
    let t = Tracker::default();
    let (inner, calls) = backend(
        t.clone(),
        |n| if n == 0 { (1000, true) } else { (10, true) },
    );
    let layer = HedgeLayer::builder().fixed_delay(ms(50)).build().unwrap();
    let mut svc = layer.wrap(inner);
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(out, 1);
    assert_eq!(start.elapsed(), ms(60));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(t.live(), 0, "the slow primary was cancelled");
    let s = svc.stats();
    assert_eq!(
        (s.requests, s.hedges, s.hedge_wins, s.cancelled),
        (1, 1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_primary_is_fast_enough() {
    let t = Tracker::default();
    let (inner, calls) = backend(t.clone(), |_| (20, true));
    let mut svc = hedged_after_50ms(inner);
    for _ in 0..5 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(svc.stats().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_k_extra_attempts_each_one_delay_apart() {
    let t = Tracker::default();
    let (inner, calls) = backend(t.clone(), |n| match n {
        0 | 1 => (1000, true),
        _ => (1000 - 300, true),
    });
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(100))
        .max_extra_attempts(2)
        .build()
        .unwrap()
        .wrap(inner);
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(()).await.unwrap();
    // Attempts at 0, 100, 200 ms; the third answers at 200 + 700 = 900 ms,
    // before the primary (1000 ms). No fourth attempt at 300 ms.
    assert_eq!(out, 2);
    assert_eq!(start.elapsed(), ms(900));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(t.live(), 0);
    assert_eq!(svc.stats().cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn percentile_delay_follows_recent_latencies() {
    let t = Tracker::default();
    // 20 calls of 10 ms teach the window; then a primary that hangs.
    let (inner, calls) = backend(t.clone(), |n| match n {
        0..20 => (10, true),
        20 => (5000, true),
        _ => (10, true),
    });
    let mut svc = HedgeLayer::builder()
        .latency_percentile(0.9)
        .min_samples(20)
        .build()
        .unwrap()
        .wrap(inner);
    assert_eq!(svc.stats().delay, None, "no hedging before min_samples");
    for _ in 0..20 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(svc.stats().hedges, 0);
    assert_eq!(svc.stats().delay, Some(ms(10)));
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(out, 21, "the hedge answered");
    assert_eq!(start.elapsed(), ms(20), "hedged after p90 = 10 ms");
    assert_eq!(calls.load(Ordering::SeqCst), 22);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_hedges() {
    let t = Tracker::default();
    let (inner, calls) = backend(
        t.clone(),
        |n| if n % 2 == 0 { (100, true) } else { (1, true) },
    );
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(10))
        .budget_ratio(0.0)
        .budget_burst(1)
        .build()
        .unwrap()
        .wrap(inner);
    let start = Instant::now();
    assert_eq!(
        svc.ready().await.unwrap().call(()).await.unwrap(),
        1,
        "first request hedged"
    );
    assert_eq!(start.elapsed(), ms(11));
    let start = Instant::now();
    // Call 2 is slow; the budget is spent, so it is not hedged.
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 2);
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let s = svc.stats();
    assert_eq!((s.hedges, s.budget_denied), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn hedging_never_doubles_the_load() {
    let t = Tracker::default();
    // Every primary is slow, so every request would like a hedge.
    let (inner, calls) = backend(t.clone(), |_| (100, true));
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(10))
        .budget_ratio(0.2)
        .budget_burst(5)
        .build()
        .unwrap()
        .wrap(inner);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let fut = svc.ready().await.unwrap().call(());
        set.spawn(fut);
        sleep(ms(1)).await;
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let s = svc.stats();
    assert_eq!(s.requests, 200);
    assert!(
        s.hedges <= 5 + 40,
        "hedges {} exceed burst + 20% of requests",
        s.hedges
    );
    assert!(
        s.hedges >= 40,
        "the budget should be used, got {}",
        s.hedges
    );
    assert_eq!(calls.load(Ordering::SeqCst) as u64, 200 + s.hedges);
}

#[tokio::test(start_paused = true)]
async fn a_fast_error_is_returned_without_hedging() {
    let t = Tracker::default();
    let (inner, calls) = backend(t.clone(), |_| (5, false));
    let mut svc = hedged_after_50ms(inner);
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "attempt 0 failed");
    assert_eq!(start.elapsed(), ms(5));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "hedging is not a retry");
}

#[tokio::test(start_paused = true)]
async fn a_failed_primary_does_not_beat_a_hedge_in_flight() {
    let t = Tracker::default();
    let (inner, _) = backend(t.clone(), |n| if n == 0 { (80, false) } else { (50, true) });
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(20))
        .build()
        .unwrap()
        .wrap(inner);
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ms(70));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_cancels_every_attempt() {
    let t = Tracker::default();
    let (inner, calls) = backend(t.clone(), |_| (1000, true));
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(10))
        .max_extra_attempts(3)
        .build()
        .unwrap()
        .wrap(inner);
    let fut = svc.ready().await.unwrap().call(());
    assert!(tokio::time::timeout(ms(25), fut).await.is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "attempts at 0, 10 and 20 ms"
    );
    assert_eq!(t.live(), 0);
    assert_eq!(svc.stats().cancelled, 3);
}

#[test]
fn bad_configurations_are_refused() {
    assert_eq!(
        HedgeLayer::builder().build().unwrap_err(),
        ConfigError::NoDelay
    );
    assert_eq!(
        HedgeLayer::builder()
            .latency_percentile(1.5)
            .build()
            .unwrap_err(),
        ConfigError::Percentile(1.5)
    );
    assert_eq!(
        HedgeLayer::builder()
            .fixed_delay(ms(1))
            .budget_ratio(1.0)
            .build()
            .unwrap_err(),
        ConfigError::BudgetRatio(1.0)
    );
    assert!(matches!(
        HedgeLayer::builder()
            .latency_percentile(0.9)
            .min_samples(50)
            .window(10)
            .build(),
        Err(ConfigError::Window {
            window: 10,
            min_samples: 50
        })
    ));
    // Zero where it makes no sense: refused with what to pass, not clamped.
    let err = HedgeLayer::builder()
        .latency_percentile(0.9)
        .min_samples(0)
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::ZeroMinSamples);
    assert!(err.to_string().contains("pass e.g. 20"), "{err}");
    let err = HedgeLayer::builder()
        .latency_percentile(0.9)
        .window(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::Window {
            window: 0,
            min_samples: 20
        }
    );
    assert!(
        err.to_string().contains("pass a window of at least 20"),
        "{err}"
    );
    // NaN and out-of-range values are refused too, never a panic.
    for p in [0.0, -0.5, f64::NAN] {
        assert!(matches!(
            HedgeLayer::builder().latency_percentile(p).build(),
            Err(ConfigError::Percentile(_))
        ));
    }
    for r in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            HedgeLayer::builder()
                .fixed_delay(ms(1))
                .budget_ratio(r)
                .build(),
            Err(ConfigError::BudgetRatio(_))
        ));
    }
    assert!(
        ConfigError::NoDelay
            .to_string()
            .contains("call fixed_delay(..) or latency_percentile(..)")
    );
    // min_samples 1 (what the message allows) builds.
    assert!(
        HedgeLayer::builder()
            .latency_percentile(0.9)
            .min_samples(1)
            .window(1)
            .build()
            .is_ok()
    );
}

/// A hedge reserves the inner service's capacity (`poll_ready` on its own
/// clone) before it calls: when the service has no capacity, the hedge
/// waits for it rather than calling an unready service.
#[tokio::test(start_paused = true)]
async fn a_hedge_waits_for_the_inner_service_to_be_ready() {
    let (mock, mut handle) = tower_test::mock::pair::<&'static str, &'static str>();
    handle.allow(1);
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(10))
        .build()
        .unwrap()
        .wrap(mock);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call("req"));
    tokio_test::assert_pending!(fut.poll());
    let (req, primary) = handle.next_request().await.unwrap();
    assert_eq!(req, "req");
    sleep(ms(20)).await;
    // The delay has passed, but the service has no capacity: no hedge yet.
    tokio_test::assert_pending!(fut.poll());
    assert!(
        tokio::time::timeout(ms(1), handle.next_request())
            .await
            .is_err(),
        "no hedge is sent while the service is not ready"
    );
    assert_eq!(svc.stats().hedges, 0);
    handle.allow(1);
    tokio_test::assert_pending!(fut.poll());
    let (req, hedge) = handle.next_request().await.unwrap();
    assert_eq!(req, "req");
    hedge.send_response("from the hedge");
    assert_eq!(
        tokio_test::assert_ready!(fut.poll()).unwrap(),
        "from the hedge"
    );
    assert_eq!(svc.stats().hedges, 1);
    drop(primary);
}

/// A backend whose n-th call (0-based) answers `Ok(n)` after `plan(n).0` ms,
/// or panics there: in its future (`plan(n).1 == Some("future")`) or in
/// `call` itself, before it returns a future (`Some("call")`).
fn panicking_backend(
    plan: impl Fn(usize) -> (u64, Option<&'static str>) + Clone + Send + Sync + 'static,
) -> impl Service<
    (),
    Response = usize,
    Error = BoxError,
    Future = impl Future<Output = Result<usize, BoxError>> + Send,
> + Clone {
    let calls = Arc::new(AtomicUsize::new(0));
    service_fn(move |()| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let (delay, panics) = plan(n);
        assert_ne!(panics, Some("call"), "attempt {n} broke in call");
        async move {
            sleep(ms(delay)).await;
            assert_ne!(panics, Some("future"), "attempt {n} broke in its future");
            Ok(n)
        }
    })
}

/// `inner` behind a hedge sent after a fixed 50 ms.
fn hedged_after_50ms<S>(inner: S) -> Hedge<S> {
    HedgeLayer::builder()
        .fixed_delay(ms(50))
        .build()
        .unwrap()
        .wrap(inner)
}

/// Guards DESIGN contract 3 for hedging: a hedge attempt that panics is a
/// failed attempt, so the good primary still answers (the panic used to
/// unwind out of the response future and take the whole call down), and
/// the panic is counted.
#[tokio::test(start_paused = true)]
async fn a_panicking_hedge_does_not_sink_a_good_primary() {
    // The primary answers at 100 ms; the hedge, sent at 50 ms, panics at 60.
    let inner = panicking_backend(|n| match n {
        0 => (100, None),
        _ => (10, Some("future")),
    });
    let mut svc = hedged_after_50ms(inner);
    svc.ready().await.unwrap();
    let start = Instant::now();
    let out = tokio::spawn(svc.call(()))
        .await
        .expect("the hedge's panic escaped");
    assert_eq!(out.unwrap(), 0, "the primary won");
    assert_eq!(start.elapsed(), ms(100));
    let s = svc.stats();
    assert_eq!(
        (s.requests, s.hedges, s.hedge_wins, s.panicked),
        (1, 1, 0, 1)
    );
}

/// Guards the mirror case: a primary that panics while a hedge is in flight
/// does not beat it; the hedge answers. A primary that panics in `call`
/// (before there is a future) is a failed attempt reported as an error
/// holding `weft_core::Panicked`, not a panic of `Hedge::call`, and, as with
/// any failed attempt, is not retried.
#[tokio::test(start_paused = true)]
async fn a_panicking_primary_lets_the_hedge_win() {
    // The primary panics at 80 ms; the hedge, sent at 50 ms, answers at 150.
    let inner = panicking_backend(|n| match n {
        0 => (80, Some("future")),
        _ => (100, None),
    });
    let mut svc = hedged_after_50ms(inner);
    svc.ready().await.unwrap();
    let start = Instant::now();
    let out = tokio::spawn(svc.call(()))
        .await
        .expect("the primary's panic escaped");
    assert_eq!(out.unwrap(), 1, "the hedge won");
    assert_eq!(start.elapsed(), ms(150));
    let s = svc.stats();
    assert_eq!(
        (s.requests, s.hedges, s.hedge_wins, s.panicked),
        (1, 1, 1, 1)
    );

    let inner = panicking_backend(|_| (10, Some("call")));
    let mut svc = hedged_after_50ms(inner);
    svc.ready().await.unwrap();
    // `call` runs inside the task, so a panic escaping it fails the join.
    let (out, s) = tokio::spawn(async move {
        let fut = svc.call(());
        (fut.await, svc.stats())
    })
    .await
    .expect("the call's panic escaped");
    let err = out.unwrap_err();
    let panic = err.downcast_ref::<Panicked>().expect("Panicked");
    assert!(
        panic.message().contains("attempt 0 broke in call"),
        "{panic}"
    );
    assert_eq!((s.requests, s.hedges, s.panicked), (1, 0, 1));
}

/// Guards the hedge budget against losing tokens: the token for a hedge is
/// taken when its delay passes, before the inner service is ready for it.
/// When the hedge is then not sent (the primary answers first, the caller
/// leaves, or the service reports an error instead of readiness), the
/// token goes back, so a budget of exactly one token still pays for the
/// next hedge that is really sent.
#[tokio::test(start_paused = true)]
async fn a_hedge_not_sent_gives_its_budget_token_back() {
    let (mock, mut handle) = tower_test::mock::pair::<&'static str, &'static str>();
    let mut svc = HedgeLayer::builder()
        .fixed_delay(ms(10))
        .budget_ratio(0.0)
        .budget_burst(1)
        .build()
        .unwrap()
        .wrap(mock);
    let stats = |svc: &weft_fanout::hedge::Hedge<_>| {
        let s = svc.stats();
        (s.hedges, s.budget_denied)
    };

    // Case 1: the primary answers while the hedge waits for capacity.
    handle.allow(1);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call("one"));
    tokio_test::assert_pending!(fut.poll());
    let (_, primary) = handle.next_request().await.unwrap();
    sleep(ms(20)).await;
    tokio_test::assert_pending!(fut.poll(), "the hedge holds the token, waiting");
    primary.send_response("primary");
    assert_eq!(tokio_test::assert_ready!(fut.poll()).unwrap(), "primary");
    drop(fut);
    assert_eq!(stats(&svc), (0, 0));

    // Case 2: the caller leaves while the hedge waits for capacity.
    handle.allow(1);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call("two"));
    tokio_test::assert_pending!(fut.poll());
    let (_, primary) = handle.next_request().await.unwrap();
    sleep(ms(20)).await;
    tokio_test::assert_pending!(fut.poll());
    drop(fut);
    drop(primary);
    assert_eq!(stats(&svc), (0, 0));

    // Case 3: the service errs instead of becoming ready for the hedge.
    handle.allow(1);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call("three"));
    tokio_test::assert_pending!(fut.poll());
    let (_, primary) = handle.next_request().await.unwrap();
    sleep(ms(20)).await;
    tokio_test::assert_pending!(fut.poll());
    handle.send_error("no capacity for a hedge");
    tokio_test::assert_pending!(fut.poll(), "no hedge; the primary is still awaited");
    primary.send_response("primary");
    assert_eq!(tokio_test::assert_ready!(fut.poll()).unwrap(), "primary");
    drop(fut);
    assert_eq!(stats(&svc), (0, 0));

    // The one token is still there: the next hedge is sent.
    handle.allow(1);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call("four"));
    tokio_test::assert_pending!(fut.poll());
    let (_, _primary) = handle.next_request().await.unwrap();
    sleep(ms(20)).await;
    handle.allow(1);
    tokio_test::assert_pending!(fut.poll());
    let (req, hedge) = handle.next_request().await.unwrap();
    assert_eq!(req, "four");
    hedge.send_response("hedge");
    assert_eq!(tokio_test::assert_ready!(fut.poll()).unwrap(), "hedge");
    assert_eq!(stats(&svc), (1, 0), "the hedge was paid for, not refused");
}

/// A delay too large to add to the clock (`Duration::MAX` as "never hedge")
/// is capped like `tokio::time::sleep` caps it, not an overflow panic: the
/// call simply is not hedged.
#[tokio::test(start_paused = true)]
async fn a_huge_fixed_delay_never_hedges_and_does_not_overflow() {
    let t = Tracker::default();
    let (inner, calls) = backend(t.clone(), |_| (1000, true));
    let mut svc = HedgeLayer::builder()
        .fixed_delay(Duration::MAX)
        .max_extra_attempts(2)
        .build()
        .unwrap()
        .wrap(inner);
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(out, 0);
    assert_eq!(start.elapsed(), ms(1000));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(svc.stats().hedges, 0);
}

/// Panics when dropped (unless already unwinding).
struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("attempt state panicked when dropped");
        }
    }
}

/// A slow primary whose future panics when it is cancelled (the hedge
/// won) does not take the caller down: the panic is contained and counted.
#[tokio::test(start_paused = true)]
async fn a_primary_panicking_when_cancelled_is_contained() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let inner = service_fn(move |()| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let _state = (n == 0).then(|| PanicsOnDrop);
            sleep(ms(if n == 0 { 1000 } else { 10 })).await;
            Ok::<_, BoxError>(n)
        }
    });
    let mut svc = hedged_after_50ms(inner);
    let call = svc.ready().await.unwrap().call(());
    let r = tokio::spawn(call)
        .await
        .expect("the primary's drop panic escaped");
    assert_eq!(r.unwrap(), 1, "the hedge answered");
    assert_eq!(svc.stats().panicked, 1);
}

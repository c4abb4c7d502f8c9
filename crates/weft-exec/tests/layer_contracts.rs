//! The contracts every weft-exec tower layer keeps (DESIGN.md): settings
//! that make no sense are refused when the layer is built (1); `call`
//! without a successful `poll_ready` fails loudly, or sheds, and a
//! reservation goes back when the service is dropped without `call` (6);
//! refusals are logged at warn (7).

mod support;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::panic::{UnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use weft_exec::{
    AdaptiveLimit, AdaptiveLimitLayer, Aimd, Algorithm, ConcurrencyLimit, ConcurrencyLimitLayer,
    KeyedRateLimitLayer, KeyedRateLimiter, LoadShed, LoadShedLayer, Overloaded, Quota,
    RateLimitLayer, RateLimited, Sample, TooManyKeys, Vegas,
};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone {
    service_fn(|x: u32| async move { Ok::<_, Infallible>(x) })
}

/// The message `f` panics with (it must panic).
fn panic_message<T>(f: impl FnOnce() -> T + UnwindSafe) -> String {
    let payload = catch_unwind(f)
        .map(|_| ())
        .expect_err("the setting was accepted; it should be refused");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .expect("a panic message")
}

#[track_caller]
fn assert_refused<T>(f: impl FnOnce() -> T + UnwindSafe, expected: &str) {
    let msg = panic_message(f);
    assert!(
        msg.contains(expected),
        "panic message {msg:?} does not say {expected:?}"
    );
}

// ---- Contract 1: nonsense is refused when the layer is built -------------

#[test]
fn a_concurrency_limit_of_zero_is_refused_with_what_to_pass() {
    let expected = "ConcurrencyLimit max must be at least 1 (got 0): pass how many requests may be in flight at once";
    assert_refused(|| ConcurrencyLimit::new(echo(), 0), expected);
    assert_refused(|| ConcurrencyLimitLayer::new(0), expected);
    // 1 is fine.
    assert_eq!(ConcurrencyLimit::new(echo(), 1).stats().max, 1);
}

#[test]
fn keyed_max_keys_of_zero_is_refused_with_what_to_pass() {
    assert_refused(
        || KeyedRateLimiter::<u32>::new(Quota::per_second(nz(1))).max_keys(0),
        "KeyedRateLimiter max_keys must be at least 1 (got 0): pass how many keys may be tracked at once",
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_max_keys_of_one_is_kept_as_asked() {
    let limiter = KeyedRateLimiter::new(Quota::per_minute(nz(1))).max_keys(1);
    limiter.check(&1u32).unwrap();
    match limiter.check(&2u32) {
        Err(weft_exec::KeyedRefusal::TooManyKeys(e)) => assert_eq!(e.max_keys(), 1),
        other => panic!("expected TooManyKeys, got {other:?}"),
    }
}

#[test]
fn aimd_settings_that_make_no_sense_are_refused() {
    assert_refused(|| Aimd::new().min(0), "Aimd min must be at least 1 (got 0)");
    assert_refused(|| Aimd::new().max(0), "Aimd max must be at least 1 (got 0)");
    assert_refused(
        || Aimd::new().initial(0),
        "Aimd initial limit must be at least 1 (got 0)",
    );
    for f in [0.0, 1.0, 1.5, -0.5, f64::NAN] {
        assert_refused(
            move || Aimd::new().backoff(f),
            "Aimd backoff must be in (0, 1)",
        );
    }
    assert_refused(
        || Aimd::new().latency_threshold(Duration::ZERO),
        "Aimd latency_threshold must be above zero",
    );
    // A small backoff is taken as given, not clamped.
    let mut a = Aimd::new().backoff(0.5).initial(10);
    let dropped = Sample::new(Duration::from_millis(1), 10, true);
    assert_eq!(a.update(10, dropped), 5);
}

#[test]
fn vegas_settings_that_make_no_sense_are_refused() {
    assert_refused(
        || Vegas::new().min(0),
        "Vegas min must be at least 1 (got 0)",
    );
    assert_refused(
        || Vegas::new().max(0),
        "Vegas max must be at least 1 (got 0)",
    );
    assert_refused(
        || Vegas::new().initial(0),
        "Vegas initial limit must be at least 1 (got 0)",
    );
    for x in [-1.0, f64::NAN, f64::INFINITY] {
        assert_refused(move || Vegas::new().alpha(x), "Vegas alpha must be");
        assert_refused(move || Vegas::new().beta(x), "Vegas beta must be");
    }
}

#[test]
fn contradictory_bounds_are_refused_when_the_limit_is_built() {
    assert_refused(
        || {
            drop(AdaptiveLimitLayer::new(
                Aimd::new().min(10).max(5).initial(7),
            ))
        },
        "Aimd min (10) is above max (5)",
    );
    // An initial limit set outside the bounds.
    assert_refused(
        || AdaptiveLimitLayer::new(Aimd::new().max(10).initial(20)),
        "Aimd initial limit 20 is outside [min, max] = [1, 10]: pass an initial limit between them",
    );
    assert_refused(
        || AdaptiveLimit::new(echo(), Vegas::new().initial(20).min(50)),
        "Vegas initial limit 20 is outside [min, max] = [50, 200]",
    );
    assert_refused(
        || AdaptiveLimitLayer::new(Vegas::new().alpha(8.0)),
        "Vegas alpha (8) is above beta (6)",
    );
}

#[test]
fn the_default_initial_limit_is_brought_within_the_bounds() {
    // Lowering only the max, or raising only the min, just works: the
    // default start (20) moves to the nearest bound.
    assert_eq!(AdaptiveLimitLayer::new(Aimd::new().max(10)).limit(), 10);
    assert_eq!(AdaptiveLimitLayer::new(Vegas::new().min(50)).limit(), 50);
    assert_eq!(AdaptiveLimitLayer::new(Vegas::new()).limit(), 20);
}

#[test]
fn bounds_may_be_set_in_any_order() {
    // min above the default max for a moment, then a max that fits.
    let layer = AdaptiveLimitLayer::new(Vegas::new().min(300).initial(400).max(1000));
    assert_eq!(layer.limit(), 400);
    // An initial limit above the default max, then a max that fits.
    let layer = AdaptiveLimitLayer::new(Aimd::new().initial(500).max(600));
    assert_eq!(layer.limit(), 500);
    // alpha above the default beta, then a beta that fits.
    let layer = AdaptiveLimitLayer::new(Vegas::new().alpha(8.0).beta(12.0));
    assert_eq!(layer.limit(), 20);
}

#[test]
fn a_custom_algorithm_starting_at_zero_is_refused() {
    struct StartsAtZero;
    impl Algorithm for StartsAtZero {
        fn initial_limit(&self) -> usize {
            0
        }
        fn update(&mut self, limit: usize, _: Sample) -> usize {
            limit
        }
    }
    assert_refused(
        || AdaptiveLimitLayer::new(StartsAtZero),
        "Algorithm::initial_limit returned 0: an adaptive limit must start at 1 or more",
    );
}

// ---- Contract 6: call without poll_ready; reservations dropped -----------

#[tokio::test]
#[should_panic(
    expected = "ConcurrencyLimit::call without a reserved slot: call poll_ready (or ready()) first"
)]
async fn concurrency_call_without_poll_ready_panics() {
    let mut svc = ConcurrencyLimit::new(echo(), 1);
    drop(svc.call(1));
}

#[tokio::test]
#[should_panic(
    expected = "AdaptiveLimit::call without a reserved slot: call poll_ready (or ready()) first"
)]
async fn adaptive_call_without_poll_ready_panics() {
    let mut svc = AdaptiveLimitLayer::new(Vegas::new()).layer(echo());
    drop(svc.call(1));
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "RateLimit::call without a grant: call poll_ready (or ready()) first")]
async fn rate_limit_call_without_poll_ready_panics() {
    let mut svc = RateLimitLayer::new(Quota::per_second(nz(10))).layer(echo());
    drop(svc.call(1));
}

/// The inner `service_fn` would take the call; `KeyedRateLimit` still says
/// it is a bug, and a clone of a ready service is not ready.
#[tokio::test(start_paused = true)]
#[should_panic(
    expected = "KeyedRateLimit::call without poll_ready: call poll_ready (or ready()) first"
)]
async fn keyed_rate_limit_call_without_poll_ready_panics() {
    let limiter = KeyedRateLimiter::new(Quota::per_second(nz(10)));
    let mut svc = KeyedRateLimitLayer::new(limiter, |r: &u32| *r).layer(echo());
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    drop(clone.call(1));
}

#[tokio::test]
async fn load_shed_call_without_poll_ready_answers_overloaded() {
    let (svc, mut h) = mock::pair::<u32, u32>();
    h.allow(10);
    let mut s = mock::Spawn::new(LoadShedLayer::named("api").layer(svc));
    // The inner service has room, but nobody asked: shed, not forwarded.
    let err = s.call(1).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    assert_eq!(s.get_ref().stats().shed, 1);
    assert!(
        h.poll_request().is_pending(),
        "a shed request reached inner"
    );
    // Once readiness is asked for, the call goes through.
    assert_ready_ok!(s.poll_ready());
    let fut = s.call(2);
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, 2, "request 1 never reached the inner service");
    tx.send_response(20);
    assert_eq!(fut.await.unwrap(), 20);
}

#[tokio::test]
async fn load_shed_dropped_after_poll_ready_releases_the_inner_reservation() {
    let (svc, mut h) = mock::pair::<u32, u32>();
    h.allow(10);
    let limit = ConcurrencyLimitLayer::new(1);
    let mut a = mock::Spawn::new(LoadShed::new(limit.layer(svc.clone())));
    let mut b = mock::Spawn::new(LoadShed::new(limit.layer(svc)));
    // `a` holds the only slot; `b` would shed.
    assert_ready_ok!(a.poll_ready());
    assert_eq!(a.get_ref().get_ref().stats().in_flight, 1);
    assert_ready_ok!(b.poll_ready());
    assert!(b.call(1).await.unwrap_err().is::<Overloaded>());
    // Dropped without call: the slot goes back and `b` is served.
    drop(a);
    assert_ready_ok!(b.poll_ready());
    assert_eq!(b.get_ref().get_ref().stats().in_flight, 1);
    let fut = b.call(2);
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, 2);
    tx.send_response(20);
    assert_eq!(fut.await.unwrap(), 20);
}

#[tokio::test]
async fn adaptive_clone_starts_unreserved_and_a_dropped_reservation_wakes_it() {
    let (svc, mut h) = mock::pair::<(), ()>();
    h.allow(10);
    let mut a = mock::Spawn::new(AdaptiveLimit::new(svc, Aimd::new().initial(1)));
    assert_ready_ok!(a.poll_ready());
    let mut clone = mock::Spawn::new(a.get_ref().clone());
    assert_pending!(clone.poll_ready(), "the clone shares the limit of 1");
    assert_eq!(clone.get_ref().stats().in_flight, 1);
    drop(a);
    assert!(clone.is_woken());
    assert_ready_ok!(clone.poll_ready());
}

/// governor cannot give a cell back, so `RateLimit` documents that a grant
/// taken in `poll_ready` is spent even if the service is dropped without
/// `call`: the next caller waits for the next cell.
#[tokio::test(start_paused = true)]
async fn rate_limit_grant_is_spent_when_dropped_without_call() {
    let (svc, mut h) = mock::pair::<u32, u32>();
    h.allow(10);
    let layer = RateLimitLayer::new(Quota::per_second(nz(1)));
    let mut a = mock::Spawn::new(layer.layer(svc.clone()));
    let mut b = mock::Spawn::new(layer.layer(svc));
    assert_ready_ok!(a.poll_ready());
    drop(a);
    assert_pending!(b.poll_ready());
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_pending!(b.poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(b.is_woken());
    assert_ready_ok!(b.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limit_with_a_mock() {
    let (svc, mut h) = mock::pair::<(&'static str, u32), u32>();
    let limiter = KeyedRateLimiter::new(Quota::per_second(nz(2)).allow_burst(nz(1)));
    let layer = KeyedRateLimitLayer::new(limiter.clone(), |r: &(&'static str, u32)| r.0);
    let mut s = mock::Spawn::new(layer.layer(svc));

    // Readiness is the inner service's.
    h.allow(0);
    assert_pending!(s.poll_ready());
    h.allow(1);
    assert!(s.is_woken());
    assert_ready_ok!(s.poll_ready());
    let fut = s.call(("alice", 1));
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, ("alice", 1));
    tx.send_response(10);
    assert_eq!(fut.await.unwrap(), 10);

    // alice's budget is spent: refused with the typed error, at once, and
    // the inner service never sees the request nor gives up its readiness.
    h.allow(1);
    assert_ready_ok!(s.poll_ready());
    let err = s.call(("alice", 2)).await.unwrap_err();
    let rl = err.downcast_ref::<RateLimited>().expect("RateLimited");
    assert_eq!(rl.retry_after(), Duration::from_millis(500));
    assert!(
        h.poll_request().is_pending(),
        "refused request reached inner"
    );

    // bob is not affected, and is served on the readiness alice left.
    h.allow(0);
    assert_ready_ok!(s.poll_ready());
    let fut = s.call(("bob", 3));
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, ("bob", 3));
    tx.send_response(30);
    assert_eq!(fut.await.unwrap(), 30);

    // Refilled once paused time reaches retry_after, not before.
    h.allow(2);
    tokio::time::advance(rl.retry_after() - Duration::from_millis(1)).await;
    assert_ready_ok!(s.poll_ready());
    let err = s.call(("alice", 4)).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_ready_ok!(s.poll_ready());
    let fut = s.call(("alice", 5));
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, ("alice", 5));
    tx.send_response(50);
    assert_eq!(fut.await.unwrap(), 50);
    assert_eq!(limiter.stats().rate_limited, 2);
}

// ---- Contract 7: refusals are logged at warn ----------------------------

/// Records every event (level and fields) sent while it is the default.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

impl Captured {
    fn take(&self) -> Vec<(Level, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    (captured, guard)
}

fn warnings(events: &[(Level, String)]) -> Vec<&str> {
    events
        .iter()
        .filter(|(l, _)| *l <= Level::WARN)
        .map(|(_, s)| s.as_str())
        .collect()
}

#[tokio::test]
async fn a_shed_request_is_logged_at_warn_with_the_layers_name() {
    let (captured, _guard) = capture();
    let (svc, mut h) = mock::pair::<u32, u32>();
    let mut s = mock::Spawn::new(LoadShedLayer::named("checkout").layer(svc));

    // Accepted: nothing at warn.
    h.allow(1);
    assert_ready_ok!(s.poll_ready());
    let fut = s.call(1);
    let (_, tx) = h.next_request().await.unwrap();
    tx.send_response(1);
    fut.await.unwrap();
    assert!(warnings(&captured.take()).is_empty());

    // Shed: one warning, naming the layer.
    h.allow(0);
    assert_ready_ok!(s.poll_ready());
    assert!(s.call(2).await.unwrap_err().is::<Overloaded>());
    let events = captured.take();
    let warned = warnings(&events);
    assert_eq!(warned.len(), 1, "{events:?}");
    assert!(warned[0].contains("shed"), "{warned:?}");
    assert!(warned[0].contains("name=checkout"), "{warned:?}");
}

#[tokio::test(start_paused = true)]
async fn keyed_refusals_are_logged_at_warn_with_the_limiters_name() {
    let (captured, _guard) = capture();
    let limiter = KeyedRateLimiter::new(Quota::per_minute(nz(1)))
        .max_keys(1)
        .name("per_tenant");
    let mut svc = KeyedRateLimitLayer::new(limiter, |r: &u32| *r).layer(echo());

    // Accepted: nothing at warn.
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert!(warnings(&captured.take()).is_empty());

    // Over its budget: RateLimited, logged at warn.
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    let events = captured.take();
    let warned = warnings(&events);
    assert_eq!(warned.len(), 1, "{events:?}");
    assert!(warned[0].contains("rate limited"), "{warned:?}");
    assert!(warned[0].contains("name=per_tenant"), "{warned:?}");
    assert!(warned[0].contains("retry_after"), "{warned:?}");

    // A flood in the same second: refused and counted, not one warning
    // each (they go to debug).
    for _ in 0..5 {
        let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(err.is::<RateLimited>());
    }
    assert!(warnings(&captured.take()).is_empty());

    // A new key while the store is full: TooManyKeys, a kind of its own,
    // logged at warn at once.
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(err.is::<TooManyKeys>());
    let events = captured.take();
    let warned = warnings(&events);
    assert_eq!(warned.len(), 1, "{events:?}");
    assert!(warned[0].contains("name=per_tenant"), "{warned:?}");
    assert!(warned[0].contains("more_since_last_line=0"), "{warned:?}");

    // A second later, the next rate-limit line says how many it stands for.
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    let events = captured.take();
    let warned = warnings(&events);
    assert_eq!(warned.len(), 1, "{events:?}");
    assert!(warned[0].contains("more_since_last_line=5"), "{warned:?}");
}

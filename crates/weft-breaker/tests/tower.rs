//! The tower layer: readiness, reservations, classification.

mod support;

use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;
use weft_breaker::{Breaker, BreakerLayer, CircuitBreaker, Open, SlidingWindow, State};
use weft_core::{BoxError, Outcome};

const SEC: Duration = Duration::from_secs(1);

fn breaker(probes: u32) -> CircuitBreaker {
    CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(1))
        .half_open_probes(probes)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn open_breaker_rejects_in_poll_ready_before_touching_inner() {
    support::init();
    let b = breaker(1);
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(BreakerLayer::new(b.clone()));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("a");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "a");
    send.send_error("down");
    assert_eq!(fut.await.unwrap_err().to_string(), "down");
    assert_eq!(b.state(), State::Open);

    // The inner mock is never polled: if it were, it would stay pending
    // (no capacity) instead of failing.
    handle.allow(0);
    let err = assert_ready_err!(svc.poll_ready());
    let open = err.downcast_ref::<Open>().expect("an Open error");
    assert_eq!(open.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn reservation_held_until_call_and_released_on_drop() {
    let b = breaker(1);
    let b2 = b.clone();
    // Trip, then let the open duration pass.
    let mut svc = BreakerLayer::new(b.clone()).layer(tower::service_fn(|fail: bool| async move {
        if fail { Err("down") } else { Ok("up") }
    }));
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;

    // poll_ready takes the only probe slot...
    svc.ready().await.unwrap();
    assert_eq!(b2.stats().probes_in_flight, 1);
    // ...a clone starts unreserved and finds no slot...
    let mut clone = svc.clone();
    let err = clone.ready().await.unwrap_err();
    assert_eq!(err.downcast_ref::<Open>().unwrap().state(), State::HalfOpen);
    // ...and dropping the reserved service gives the slot back, uncounted.
    drop(svc);
    assert_eq!(b2.stats().probes_in_flight, 0);
    assert_eq!(b2.stats().cancelled, 1);
    assert_eq!(
        clone.ready().await.unwrap().call(false).await.unwrap(),
        "up"
    );
    assert_eq!(b2.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn pending_inner_keeps_reservation_and_classifier_applies() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let layer = BreakerLayer::new(b.clone()).classify(|r: &Result<&str, BoxError>| match r {
        Err(e) if e.to_string() == "not found" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    });
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("x");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("not found");
    assert!(fut.await.is_err());
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().ignored, 1);
}

/// Guards that a permit `poll_ready` took while the inner service was
/// pending is checked again when the inner service becomes ready: if the
/// breaker tripped in between (the permit's generation is gone), the stale
/// permit is dropped and `poll_ready` fails with the breaker's `Open` error
/// instead of admitting a call to the failing dependency.
#[tokio::test(start_paused = true)]
async fn poll_ready_rechecks_a_permit_taken_while_inner_was_pending() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .sliding_window(SlidingWindow::Disabled)
        .open_duration(60 * SEC)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(BreakerLayer::new(b.clone()));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    b.call(async { Err::<(), _>("down") }).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
    handle.allow(1);
    let r = svc.poll_ready();
    assert!(
        matches!(r, std::task::Poll::Ready(Err(_))),
        "poll_ready admitted a call while the breaker is {:?}: {r:?}",
        b.state()
    );
    let err = assert_ready_err!(r);
    let open = err.downcast_ref::<Open>().expect("an Open error");
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_after(), Some(60 * SEC));
    // The stale permit counts as cancelled, not as an outcome.
    let s = b.stats();
    assert_eq!((s.cancelled, s.failures, s.rejected), (1, 1, 1));
}

#[tokio::test]
#[should_panic(expected = "without an admission")]
async fn call_without_poll_ready_panics() {
    let mut svc = Breaker::new(
        tower::service_fn(|()| async { Ok::<_, &str>(()) }),
        breaker(1),
    );
    drop(svc.call(()));
}

//! ShutdownLayer: refusing during shutdown, draining in-flight requests, reservations.
mod support;

use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Service, ServiceExt, service_fn};
use tower_test::mock;
use weft_core::Drain;
use weft_shutdown::{Coordinator, ShutdownLayer, ShuttingDown};

#[tokio::test]
async fn refuses_after_close_and_counts() {
    let layer = ShutdownLayer::new("api");
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());

    assert_ready_ok!(svc.poll_ready());
    let resp = svc.call(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 1);
    send.send_response(2);
    assert_eq!(resp.await.unwrap(), 2);

    layer.close();
    let err = assert_ready_err!(svc.poll_ready());
    assert!(err.downcast_ref::<ShuttingDown>().is_some());
    let s = layer.stats();
    assert_eq!(
        (s.accepted, s.completed, s.rejected, s.in_flight),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn refuses_at_once_even_when_the_inner_service_is_not_ready() {
    let layer = ShutdownLayer::new("api");
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    layer.close();
    assert_ready_err!(svc.poll_ready());
}

#[tokio::test]
async fn a_reservation_is_released_when_the_service_is_dropped_without_call() {
    let layer = ShutdownLayer::new("api");
    let (mut svc, _handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(layer.stats().in_flight, 1);
    drop(svc);
    assert_eq!(layer.stats().in_flight, 0);
    let report = layer.drain(Instant::now()).await;
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn a_clone_starts_without_a_reservation() {
    let layer = ShutdownLayer::new("api");
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(
            |x: u32| async move { Ok::<_, std::io::Error>(x) },
        ));
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    assert_eq!(layer.stats().in_flight, 1);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(clone.call(1));
    }));
    assert!(caught.is_err(), "call without poll_ready must panic");
    assert_eq!(svc.call(7).await.unwrap(), 7);
    assert_eq!(layer.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn requests_during_shutdown_are_refused_and_in_flight_ones_finish() {
    support::trace();
    let shutdown = Coordinator::builder()
        .phase("stop-accepting", Duration::from_secs(10))
        .signals(false)
        .build()
        .unwrap();
    let layer = shutdown.layer("stop-accepting", "api").unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|ms: u64| async move {
            sleep(Duration::from_millis(ms)).await;
            if ms == 13 {
                Err::<u64, std::io::Error>(std::io::Error::other("unlucky"))
            } else {
                Ok(ms)
            }
        }));

    let mut in_flight = Vec::new();
    for ms in [2000, 3000, 13] {
        let mut s = svc.clone();
        in_flight.push(tokio::spawn(async move { s.ready().await?.call(ms).await }));
    }
    tokio::task::yield_now().await;
    assert_eq!(layer.stats().in_flight, 3);

    shutdown.trigger();
    let mut late = svc.clone();
    let Err(err) = late.ready().await else {
        panic!("must be refused during shutdown")
    };
    assert!(err.downcast_ref::<ShuttingDown>().is_some());

    let start = Instant::now();
    let report = shutdown.run().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(3000),
        "waits for the slowest"
    );
    let results: Vec<_> = futures::future::join_all(in_flight).await;
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count(),
        2
    );

    let api = report.component("api").unwrap();
    assert!(api.outcome.is_completed());
    let d = api.detail.as_ref().unwrap();
    assert_eq!((d.accepted, d.completed, d.failed), (3, 2, 1));
    assert_eq!(d.rejected_after_close, 1);
    assert!(d.is_clean(), "{d}");
}

#[tokio::test(start_paused = true)]
async fn requests_still_running_at_the_deadline_are_named() {
    let layer = ShutdownLayer::new("api");
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|()| async {
            sleep(Duration::from_secs(60)).await;
            Ok::<_, std::io::Error>(())
        }));
    let fut = svc.ready().await.unwrap().call(());
    let running = tokio::spawn(fut);
    tokio::task::yield_now().await;
    let report = layer.drain(Instant::now() + Duration::from_secs(1)).await;
    assert_eq!(report.aborted, 1);
    assert!(report.is_balanced(), "{report}");
    assert_eq!(
        report.unfinished,
        vec!["1 requests still in flight at the deadline"]
    );
    running.abort();
    let _ = running.await;
    assert_eq!(
        layer.stats().cancelled,
        1,
        "a dropped response future counts as cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reservation_left_unused_at_the_deadline_is_named_for_what_it_is() {
    let layer = ShutdownLayer::new("api");
    let (mut svc, _handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    assert_ready_ok!(svc.poll_ready()); // reserved, never called, not dropped
    let report = layer.drain(Instant::now() + Duration::from_secs(1)).await;
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.accepted, 0);
    assert_eq!(
        report.aborted, 0,
        "a reservation is not an accepted request"
    );
    assert_eq!(
        report.unfinished,
        vec!["1 reserved slots neither called nor released at the deadline"]
    );
    drop(svc);
    assert_eq!(layer.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_coordinator_report_names_requests_cut_off_at_the_deadline() {
    let shutdown = Coordinator::builder()
        .phase("stop-accepting", Duration::from_secs(1))
        .signals(false)
        .build()
        .unwrap();
    let layer = shutdown.layer("stop-accepting", "api").unwrap();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|()| async {
            sleep(Duration::from_secs(60)).await;
            Ok::<_, std::io::Error>(())
        }));
    let running = tokio::spawn(svc.ready().await.unwrap().call(()));
    tokio::task::yield_now().await;
    shutdown.trigger();
    let report = shutdown.run().await;
    assert!(!report.is_clean(), "{report}");
    assert_eq!(
        report.unfinished(),
        vec!["api: 1 requests still in flight at the deadline".to_owned()],
        "{report}"
    );
    running.abort();
}

/// Guards the layer's accounting when the inner service's `call` panics: the
/// request must not be counted accepted (it never got a response future that
/// could count an outcome), so the drain's report still balances.
#[tokio::test(start_paused = true)]
async fn a_call_that_panics_in_the_inner_service_leaves_the_report_balanced() {
    let layer = ShutdownLayer::new("api");
    let mut svc = tower::Layer::layer(
        &layer,
        service_fn(
            |_: u32| -> std::future::Ready<Result<u32, std::convert::Infallible>> {
                panic!("handler bug")
            },
        ),
    );
    svc.ready().await.unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(1));
    }));
    assert!(caught.is_err());
    let report = layer.drain(Instant::now() + Duration::from_secs(1)).await;
    assert!(report.is_balanced(), "{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.accepted, 0, "{report}");
    let s = layer.stats();
    assert_eq!((s.accepted, s.in_flight), (0, 0), "the slot is released");
}

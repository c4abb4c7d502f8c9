//! The tower service: backpressure in poll_ready, reservations, errors.

use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use weft_core::BoxError;
use weft_pool::service::{Closed, Full, Pool, PoolLayer};
use weft_pool::{JobError, ShutdownMode, WorkerPool};

#[tokio::test]
async fn calls_run_on_the_pool_and_errors_pass_through() {
    let pool = WorkerPool::builder()
        .workers(2)
        .queue_capacity(4)
        .build()
        .unwrap();
    let mut svc = PoolLayer::new(pool.clone()).layer(service_fn(|x: i32| async move {
        if x < 0 {
            Err::<i32, BoxError>("negative".into())
        } else {
            Ok(x + 1)
        }
    }));
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
    let err = svc.ready().await.unwrap().call(-1).await.unwrap_err();
    assert_eq!(err.to_string(), "negative");
    let s = pool.stats();
    assert_eq!(
        (s.succeeded, s.failed),
        (1, 1),
        "an Err response counts as failed"
    );
}

#[tokio::test]
async fn a_panicking_call_is_a_panicked_error() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let svc = Pool::new(
        service_fn(|_: ()| async move {
            panic!("handler bug");
            #[allow(unreachable_code)]
            Ok::<(), BoxError>(())
        }),
        pool.clone(),
    );
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(
        matches!(err.downcast_ref::<JobError>(), Some(JobError::Panicked(_))),
        "{err}"
    );
    assert_eq!(pool.stats().workers, 1);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reflects_queue_room_and_a_dropped_reservation_is_released() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let slow = service_fn(|d: u64| async move {
        tokio::time::sleep(Duration::from_millis(d)).await;
        Ok::<_, BoxError>(d)
    });
    let layer = PoolLayer::new(pool.clone());
    let mut a = tokio_test::task::spawn(layer.layer(slow));
    let mut b = tokio_test::task::spawn(layer.layer(slow));

    // a reserves the only slot; b must wait.
    assert_ready_ok!(a.enter(|cx, mut s| s.poll_ready(cx)));
    assert_pending!(b.enter(|cx, mut s| s.poll_ready(cx)));
    // Dropping a without calling releases the slot: b becomes ready.
    drop(a);
    assert!(b.is_woken());
    assert_ready_ok!(b.enter(|cx, mut s| s.poll_ready(cx)));
    let fut = b.enter(|_, mut s| s.call(10));
    assert_eq!(fut.await.unwrap(), 10);
}

#[tokio::test]
#[should_panic(expected = "call poll_ready first")]
async fn call_without_poll_ready_is_a_bug() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let mut svc = Pool::new(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }), pool);
    drop(svc.call(()));
}

#[tokio::test]
async fn after_shutdown_the_service_is_closed() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let svc = Pool::new(
        service_fn(|_: ()| async { Ok::<_, BoxError>(()) }),
        pool.clone(),
    );
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(err.downcast_ref::<Closed>().is_some(), "{err}");
}

/// Guards the sharing of queue reservations and the typed errors of `call`:
/// every service over one pool (two `Pool::new`s, clones) takes its
/// reservation from one per-pool semaphore, so `poll_ready` is `Pending`
/// while the queue is full (each `Pool::new` used to have its own, so
/// `poll_ready` said Ready and `call` then failed with an untyped string);
/// and when another submitter fills the queue anyway, `call` fails with a
/// [`Full`] found by `downcast_ref`.
#[tokio::test(start_paused = true)]
async fn the_tower_pool_reports_a_full_queue_as_a_typed_error() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let inner = service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, std::convert::Infallible>(x)
    });
    // Two services over the same pool (e.g. one per connection).
    let mut a = Pool::new(inner, pool.clone());
    let mut b = Pool::new(inner, pool.clone());
    let ra = a.ready().await.unwrap().call(1); // the idle worker takes it at once
    tokio::task::yield_now().await;
    let rb = b.ready().await.unwrap().call(2); // queued: the queue is full
    let mut c = tokio_test::task::spawn(a.clone());
    assert_pending!(c.enter(|cx, mut s| s.poll_ready(cx)));
    let mut d = tokio_test::task::spawn(PoolLayer::new(pool.clone()).layer(inner));
    assert_pending!(d.enter(|cx, mut s| s.poll_ready(cx)));
    // The first call finishes, the second starts: its slot is free again.
    assert_eq!(ra.await.unwrap(), 1);
    tokio::task::yield_now().await;
    assert!(c.is_woken() || d.is_woken());
    assert_ready_ok!(c.enter(|cx, mut s| s.poll_ready(cx)));
    assert_pending!(d.enter(|cx, mut s| s.poll_ready(cx)));
    drop(c);
    assert!(d.is_woken(), "a dropped reservation wakes the next waiter");
    assert_ready_ok!(d.enter(|cx, mut s| s.poll_ready(cx)));
    // Another submitter takes the slot the service reserved.
    let other = pool.try_submit(async { 0 }).unwrap();
    let err = d.enter(|_, mut s| s.call(3)).await.unwrap_err();
    assert!(err.downcast_ref::<Full>().is_some(), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(rb.await.unwrap(), 2);
    assert_eq!(other.await, Ok(0));

    // Closed between poll_ready and call: a typed Closed.
    let mut e = Pool::new(inner, pool.clone());
    std::future::poll_fn(|cx| e.poll_ready(cx)).await.unwrap();
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    let err = e.call(4).await.unwrap_err();
    assert!(err.downcast_ref::<Closed>().is_some(), "{err}");
}

/// Guards that a service waiting for a reservation learns of a shutdown at
/// once (the per-pool semaphore is closed with the pool) rather than when a
/// slot frees up.
#[tokio::test(start_paused = true)]
async fn a_service_waiting_for_room_sees_the_shutdown() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let slow = service_fn(|d: u64| async move {
        tokio::time::sleep(Duration::from_millis(d)).await;
        Ok::<_, BoxError>(d)
    });
    let mut a = tokio_test::task::spawn(Pool::new(slow, pool.clone()));
    let mut b = tokio_test::task::spawn(Pool::new(slow, pool.clone()));
    assert_ready_ok!(a.enter(|cx, mut s| s.poll_ready(cx)));
    assert_pending!(b.enter(|cx, mut s| s.poll_ready(cx)));
    // a keeps its reservation: nothing frees a slot, only the shutdown.
    let p = pool.clone();
    let shut = tokio::spawn(async move {
        p.shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
            .await
    });
    tokio::task::yield_now().await;
    assert!(b.is_woken());
    let err = match b.enter(|cx, mut s| s.poll_ready(cx)) {
        std::task::Poll::Ready(Err(e)) => e,
        other => panic!(
            "expected a Closed error, got {:?}",
            other.map(|r| r.is_ok())
        ),
    };
    assert!(err.downcast_ref::<Closed>().is_some(), "{err}");
    assert!(shut.await.unwrap().is_clean());
}

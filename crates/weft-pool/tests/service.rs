//! The tower service: backpressure in poll_ready, reservations, errors.

use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use weft_core::BoxError;
use weft_pool::service::{Closed, Pool, PoolLayer};
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

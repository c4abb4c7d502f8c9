//! The tower layers: concurrency limit, load shedding, rate limits.

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;
use weft_exec::{
    ConcurrencyLimit, ConcurrencyLimitLayer, KeyedRateLimitLayer, KeyedRateLimiter, KeyedRefusal,
    LoadShed, LoadShedLayer, Overloaded, Quota, RateLimitLayer, RateLimited,
};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[tokio::test]
async fn concurrency_limit_is_shared_across_clones_and_services() {
    support::init();
    let layer = ConcurrencyLimitLayer::new(2);
    let (a, mut ha) = mock::pair::<u32, u32>();
    let (b, mut hb) = mock::pair::<u32, u32>();
    let mut sa = mock::Spawn::new(layer.layer(a));
    let mut sa2 = mock::Spawn::new(sa.get_ref().clone());
    let mut sb = mock::Spawn::new(layer.layer(b));
    ha.allow(10);
    hb.allow(10);

    assert_ready_ok!(sa.poll_ready());
    let r1 = sa.call(1);
    assert_ready_ok!(sa2.poll_ready());
    let r2 = sa2.call(2);
    // Both slots of the one shared limit are taken, even for another service.
    assert_pending!(sb.poll_ready());
    assert_pending!(sa.poll_ready());
    assert_eq!(sa.get_ref().stats().in_flight, 2);

    let (req, tx) = ha.next_request().await.unwrap();
    assert_eq!(req, 1);
    tx.send_response(10);
    assert_eq!(r1.await.unwrap(), 10);
    assert!(sb.is_woken());
    assert_ready_ok!(sb.poll_ready());
    drop(r2);
    assert_ready_ok!(sa.poll_ready());
}

#[tokio::test]
async fn concurrency_reservation_is_released_when_dropped_without_call() {
    let (svc, mut h) = mock::pair::<(), ()>();
    h.allow(10);
    let mut a = mock::Spawn::new(ConcurrencyLimit::new(svc, 1));
    let b_inner = a.get_ref().clone();
    assert_ready_ok!(a.poll_ready());
    // A clone starts unreserved and must wait.
    let mut b = mock::Spawn::new(b_inner);
    assert_pending!(b.poll_ready());
    drop(a);
    assert!(b.is_woken());
    assert_ready_ok!(b.poll_ready());
}

#[tokio::test]
async fn load_shed_fails_fast_when_inner_not_ready() {
    let (svc, mut h) = mock::pair::<u32, u32>();
    let mut s = mock::Spawn::new(LoadShedLayer::named("api").layer(svc));
    h.allow(0);
    assert_ready_ok!(s.poll_ready(), "load shed is always ready");
    let err = s.call(1).await.unwrap_err();
    assert!(err.downcast_ref::<Overloaded>().is_some(), "{err}");
    assert_eq!(err.to_string(), "service overloaded");
    h.allow(1);
    assert_ready_ok!(s.poll_ready());
    let fut = s.call(2);
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, 2);
    tx.send_response(20);
    assert_eq!(fut.await.unwrap(), 20);
    assert_eq!(s.get_ref().stats().shed, 1);
}

/// tokio's cooperative budget makes a `Buffer`'s `poll_ready` return
/// `Pending` once the task has done ~128 budgeted operations, even with room.
/// tower's `LoadShed` sheds those requests; weft's must not.
#[tokio::test]
async fn load_shed_does_not_shed_because_of_the_coop_budget() {
    async fn run<S>(mut svc: S) -> (usize, usize)
    where
        S: Service<u32, Response = u32, Error = weft_core::BoxError>,
    {
        let mut futs = Vec::new();
        let mut shed = 0;
        // 500 requests, far below the buffer's capacity, issued from one task
        // without yielding: only the coop budget can make the buffer Pending.
        for i in 0..500 {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            futs.push(svc.call(i));
        }
        let mut ok = 0;
        for f in futs {
            match f.await {
                Ok(_) => ok += 1,
                Err(e) if e.downcast_ref::<Overloaded>().is_some() => shed += 1,
                Err(e) if e.is::<tower::load_shed::error::Overloaded>() => shed += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        (ok, shed)
    }
    let echo = service_fn(|x: u32| async move { Ok::<_, weft_core::BoxError>(x) });

    let tower_stack = tower::ServiceBuilder::new()
        .load_shed()
        .buffer(10_000)
        .service(echo);
    let (_, tower_shed) = tokio::spawn(run(tower_stack)).await.unwrap();

    let weft_stack = LoadShed::new(tower::buffer::Buffer::new(echo, 10_000));
    let (ok, weft_shed) = tokio::spawn(run(weft_stack)).await.unwrap();

    assert!(
        tower_shed > 0,
        "the trap is real: tower's LoadShed shed {tower_shed} requests"
    );
    assert_eq!(
        weft_shed, 0,
        "weft shed {weft_shed} requests that had capacity"
    );
    assert_eq!(ok, 500);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_waits_on_tokio_time_and_is_shared() {
    let quota = Quota::per_second(nz(10)).allow_burst(nz(2));
    let layer = RateLimitLayer::new(quota);
    let echo = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
    let mut a = layer.layer(echo);
    let mut b = a.clone();
    let start = Instant::now();
    a.ready().await.unwrap().call(1).await.unwrap();
    b.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "burst of 2");
    // The third, through either clone, waits 100 ms: one budget.
    b.ready().await.unwrap().call(3).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    a.ready().await.unwrap().call(4).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(a.stats().throttled, 2);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_with_load_shed_refuses_instead_of_waiting() {
    let quota = Quota::per_second(nz(1));
    let echo = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
    let mut svc = tower::ServiceBuilder::new()
        .layer(LoadShedLayer::new())
        .layer(RateLimitLayer::new(quota))
        .service(echo);
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 1);
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(err.is::<Overloaded>());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limit_per_key_with_retry_after() {
    let limiter = KeyedRateLimiter::new(Quota::per_second(nz(2)).allow_burst(nz(1)));
    let layer = KeyedRateLimitLayer::new(limiter.clone(), |r: &(u32, u32)| r.0);
    let echo = service_fn(|r: (u32, u32)| async move { Ok::<_, std::convert::Infallible>(r.1) });
    let mut svc = layer.layer(echo);
    assert_eq!(svc.ready().await.unwrap().call((1, 10)).await.unwrap(), 10);
    let err = svc.ready().await.unwrap().call((1, 11)).await.unwrap_err();
    let rl = err.downcast_ref::<RateLimited>().expect("RateLimited");
    assert_eq!(rl.retry_after(), Duration::from_millis(500));
    assert_eq!(svc.ready().await.unwrap().call((2, 20)).await.unwrap(), 20);
    tokio::time::sleep(rl.retry_after()).await;
    assert_eq!(svc.ready().await.unwrap().call((1, 12)).await.unwrap(), 12);
    assert_eq!(limiter.stats().rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn keyed_store_stays_bounded_without_anyone_calling_retain_recent() {
    let limiter = KeyedRateLimiter::new(Quota::per_second(nz(10)))
        .sweep_interval(Duration::from_secs(1))
        .max_keys(1_000_000);
    // 10,000 distinct keys, each seen once: the classic unbounded growth.
    for k in 0..10_000u32 {
        limiter.check(&k).unwrap();
    }
    assert_eq!(limiter.stats().keys, 10_000);
    // Later traffic from a few keys; the idle ones are swept automatically.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..300u32 {
        let _ = limiter.check(&(1_000_000 + i % 3));
    }
    let s = limiter.stats();
    assert!(s.keys <= 3, "idle keys were not evicted: {s:?}");
    assert!(s.evicted >= 10_000, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn keyed_cap_refuses_new_keys_while_all_are_active() {
    let limiter = KeyedRateLimiter::new(Quota::per_minute(nz(1))).max_keys(100);
    for k in 0..100u32 {
        limiter.check(&k).unwrap();
    }
    match limiter.check(&1000) {
        Err(KeyedRefusal::TooManyKeys(e)) => assert_eq!(e.max_keys(), 100),
        other => panic!("expected TooManyKeys, got {other:?}"),
    }
    // Known keys are still served (and limited) as before.
    assert!(matches!(
        limiter.check(&5),
        Err(KeyedRefusal::RateLimited(_))
    ));
    // Once the old keys go idle they are evicted and newcomers get in.
    tokio::time::sleep(Duration::from_secs(121)).await;
    limiter.check(&1000).unwrap();
    assert!(limiter.stats().keys <= 2);
    assert_eq!(limiter.stats().refused_new_keys, 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_readiness_with_a_mock() {
    let (svc, mut h) = mock::pair::<u32, u32>();
    h.allow(100);
    let quota = Quota::per_second(nz(2)).allow_burst(nz(1));
    let mut s = mock::Spawn::new(RateLimitLayer::new(quota).layer(svc));
    assert_ready_ok!(s.poll_ready());
    let f = s.call(1);
    // The budget is spent: not ready, and woken by the timer 500 ms later.
    assert_pending!(s.poll_ready());
    tokio::time::advance(Duration::from_millis(499)).await;
    assert!(!s.is_woken());
    assert_pending!(s.poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(s.is_woken());
    assert_ready_ok!(s.poll_ready());
    let (req, tx) = h.next_request().await.unwrap();
    assert_eq!(req, 1);
    tx.send_response(1);
    assert_eq!(f.await.unwrap(), 1);
    // A clone starts without a grant.
    let mut c = mock::Spawn::new(s.get_ref().clone());
    assert_pending!(c.poll_ready());
}

//! Adaptive concurrency limits: unit behaviour with tower-test mocks, and the
//! paused-time simulation of the issue.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;
use weft_exec::{
    AdaptiveLimitLayer, Aimd, Algorithm, ConcurrencyLimitLayer, LoadShed, Overloaded, Vegas,
};

#[tokio::test(start_paused = true)]
async fn aimd_grows_on_success_shrinks_on_error_and_ignores_cancellation() {
    support::init();
    let (svc, mut h) = mock::pair::<u32, u32>();
    h.allow(100);
    // One sample per window, so that each response moves the limit.
    let layer = AdaptiveLimitLayer::new(Aimd::new().initial(2)).window_samples(1);
    let mut s = mock::Spawn::new(layer.layer(svc));
    assert_eq!(s.get_ref().stats().limit, 2);

    // Two in flight: the limit (2) is reached.
    assert_ready_ok!(s.poll_ready());
    let f1 = s.call(1);
    assert_ready_ok!(s.poll_ready());
    let f2 = s.call(2);
    assert_pending!(s.poll_ready());

    // A cancellation frees the slot but is not a sample.
    drop(f2);
    assert!(s.is_woken());
    assert_eq!(s.get_ref().stats().samples, 0);
    assert_eq!(s.get_ref().stats().limit, 2);

    // Success while the limit was in use: +1.
    let (_, tx) = h.next_request().await.unwrap();
    tx.send_response(10);
    f1.await.unwrap();
    assert_eq!(s.get_ref().stats().limit, 3);

    // An error: ×0.9, floored.
    assert_ready_ok!(s.poll_ready());
    let f3 = s.call(3);
    let _ = h.next_request().await.unwrap(); // request 2 (sent before cancel)
    let (_, tx) = h.next_request().await.unwrap();
    tx.send_error("downstream failed");
    assert!(f3.await.is_err());
    assert_eq!(s.get_ref().stats().limit, 2);
}

#[tokio::test]
async fn adaptive_limit_reservation_released_on_drop() {
    let (svc, mut h) = mock::pair::<(), ()>();
    h.allow(10);
    let layer = AdaptiveLimitLayer::new(Aimd::new().initial(1));
    let mut a = mock::Spawn::new(layer.layer(svc.clone()));
    let mut b = mock::Spawn::new(layer.layer(svc));
    assert_ready_ok!(a.poll_ready());
    assert_pending!(b.poll_ready(), "one shared limit of 1");
    drop(a);
    assert!(b.is_woken());
    assert_ready_ok!(b.poll_ready());
}

/// The downstream of the simulation: `capacity` requests are served in
/// `base` each; beyond that they queue, so latency grows with the load
/// (`base × in_flight / capacity`).
fn downstream(
    base: Duration,
    capacity: usize,
) -> impl Service<(), Response = (), Error = Overloaded, Future: Send> + Clone + Send {
    let in_flight = Arc::new(AtomicUsize::new(0));
    service_fn(move |()| {
        let in_flight = in_flight.clone();
        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let d = base.mul_f64((n as f64 / capacity as f64).max(1.0));
        async move {
            sleep(d).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

struct Outcome {
    mean_limit: f64,
    p99: Duration,
    served: usize,
}

/// `clients` closed-loop clients hammer `svc` (a LoadShed stack) for
/// `secs`; rejected ones back off `backoff`. Measures, over the second half,
/// the mean of `limit()` (sampled every 10 ms) and the p99 latency of
/// served requests.
async fn simulate<S>(
    svc: S,
    limit: impl Fn() -> usize + Send + 'static,
    clients: usize,
    secs: u64,
    backoff: Duration,
) -> Outcome
where
    S: Service<(), Response = (), Error = weft_core::BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let half = start + Duration::from_secs(secs / 2);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                let r = svc.ready().await.unwrap().call(()).await;
                match r {
                    Ok(()) if t >= half => lat.push(t.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        assert!(e.is::<Overloaded>(), "{e}");
                        sleep(backoff).await;
                    }
                }
            }
            lat
        }));
    }
    let sampler = tokio::spawn(async move {
        sleep(Duration::from_secs(secs / 2)).await;
        let mut xs = Vec::new();
        while Instant::now() < end {
            xs.push(limit() as f64);
            sleep(Duration::from_millis(10)).await;
        }
        xs.iter().sum::<f64>() / xs.len() as f64
    });
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_unstable();
    Outcome {
        mean_limit: sampler.await.unwrap(),
        p99: lat[lat.len() * 99 / 100],
        served: lat.len(),
    }
}

const BASE: Duration = Duration::from_millis(10);

/// The simulation: latency rises once more than C requests are in
/// flight. Vegas (default parameters, max raised above C) must settle within
/// 10% of C and keep p99 within 2x the unloaded latency; a fixed limit of 4C
/// does not.
#[tokio::test(start_paused = true)]
async fn simulation_vegas_settles_near_capacity_where_fixed_4c_does_not() {
    const C: usize = 200;
    let clients = 5 * C;

    let layer = AdaptiveLimitLayer::new(Vegas::new().max(10 * C));
    let svc = LoadShed::new(layer.layer(downstream(BASE, C)));
    let l = layer.clone();
    let vegas = simulate(
        svc,
        move || l.limit(),
        clients,
        4,
        Duration::from_millis(20),
    )
    .await;
    eprintln!(
        "vegas: mean limit {:.1} (C = {C}), p99 {:?}, served {}",
        vegas.mean_limit, vegas.p99, vegas.served
    );
    assert!(
        (vegas.mean_limit - C as f64).abs() <= 0.1 * C as f64,
        "vegas limit {:.1} not within 10% of {C}",
        vegas.mean_limit
    );
    assert!(
        vegas.p99 <= 2 * BASE,
        "vegas p99 {:?} > 2x {BASE:?}",
        vegas.p99
    );

    let fixed = LoadShed::new(ConcurrencyLimitLayer::new(4 * C).layer(downstream(BASE, C)));
    let f = simulate(fixed, || 4 * C, clients, 4, Duration::from_millis(20)).await;
    eprintln!("fixed 4C: p99 {:?}, served {}", f.p99, f.served);
    assert!(
        f.p99 > 2 * BASE,
        "a fixed 4C limit should not keep p99 within 2x: {:?}",
        f.p99
    );
}

/// AIMD with a latency threshold just above the unloaded latency also
/// settles near C.
#[tokio::test(start_paused = true)]
async fn simulation_aimd_with_latency_threshold() {
    const C: usize = 100;
    let aimd = Aimd::new()
        .max(10 * C)
        .latency_threshold(BASE.mul_f64(1.05));
    let layer = AdaptiveLimitLayer::new(aimd);
    let svc = LoadShed::new(layer.layer(downstream(BASE, C)));
    let l = layer.clone();
    let o = simulate(svc, move || l.limit(), 5 * C, 4, Duration::from_millis(20)).await;
    eprintln!(
        "aimd: mean limit {:.1} (C = {C}), p99 {:?}",
        o.mean_limit, o.p99
    );
    assert!(
        (o.mean_limit - C as f64).abs() <= 0.1 * C as f64,
        "aimd limit {:.1} not within 10% of {C}",
        o.mean_limit
    );
    assert!(o.p99 <= 2 * BASE, "aimd p99 {:?}", o.p99);
}

#[test]
fn algorithms_respect_min_and_max() {
    let ms = Duration::from_millis;
    let mut a = Aimd::new().min(5).max(6).initial(100);
    assert_eq!(a.initial_limit(), 6);
    assert_eq!(a.update(6, weft_exec::Sample::new(ms(1), 6, false)), 6);
    assert_eq!(a.update(5, weft_exec::Sample::new(ms(1), 5, true)), 5);
    let mut v = Vegas::new().min(3).max(50);
    v.update(10, weft_exec::Sample::new(ms(10), 10, false));
    assert_eq!(v.update(3, weft_exec::Sample::new(ms(100), 3, true)), 3);
    assert!(v.update(50, weft_exec::Sample::new(ms(10), 50, false)) <= 50);
}

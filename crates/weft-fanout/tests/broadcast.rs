//! broadcast: all / first success / quorum, losers cancelled as soon as
//! decided, readiness, build errors, and a property test of first-success.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::{Tracker, settle_tasks};
use tokio::time::{Instant, sleep};
use tokio_test::{assert_pending, assert_ready};
use tower::{Service, ServiceExt, service_fn};
use weft_core::{BoxError, Panicked};
use weft_fanout::broadcast::{All, Broadcast, BuildError, FirstSuccess, Quorum, QuorumNotReached};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A replica answering `Ok(id)` or `Err("replica id failed")` after `delay`.
fn replica(
    id: usize,
    delay: Duration,
    ok: bool,
    t: &Tracker,
) -> impl Service<
    u32,
    Response = usize,
    Error = BoxError,
    Future = impl Future<Output = Result<usize, BoxError>> + Send,
> + Clone {
    let t = t.clone();
    service_fn(move |_req: u32| {
        let g = t.guard();
        async move {
            sleep(delay).await;
            g.done();
            if ok {
                Ok(id)
            } else {
                Err(BoxError::from(format!("replica {id} failed")))
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn all_returns_every_answer_in_replica_order() {
    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(30), true, &t),
        replica(1, ms(10), true, &t),
        replica(2, ms(20), true, &t),
    ];
    let mut svc = Broadcast::new(replicas, All::new()).unwrap();
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(7).await.unwrap();
    assert_eq!(out, [0, 1, 2]);
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(svc.stats().succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn all_fails_on_the_first_error_and_cancels_the_rest() {
    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(100), true, &t),
        replica(1, ms(5), false, &t),
        replica(2, ms(100), true, &t),
    ];
    let mut svc = Broadcast::new(replicas, All::new()).unwrap();
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(7).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "replica 1 failed",
        "the replica's own error passes through"
    );
    assert_eq!(start.elapsed(), ms(5));
    assert_eq!(t.live(), 0);
    assert_eq!(t.completed(), 1);
    assert_eq!(svc.stats().losers_cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn first_success_waits_past_fast_errors_and_cancels_losers_at_once() {
    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(1), false, &t),
        replica(1, ms(2), false, &t),
        replica(2, ms(40), true, &t),
        replica(3, ms(900), true, &t),
    ];
    let mut svc = Broadcast::new(replicas, FirstSuccess).unwrap();
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(1));
    assert_pending!(fut.poll());
    sleep(ms(5)).await;
    // Both fast errors are in, but a success is still possible.
    assert_pending!(fut.poll());
    sleep(ms(35)).await;
    let out = assert_ready!(fut.poll());
    assert_eq!(out.unwrap(), 2);
    // The loser was cancelled when the outcome was decided, not when the
    // response future is dropped.
    assert_eq!(t.live(), 0, "loser dropped as soon as decided");
    assert_eq!(t.completed(), 3);
    drop(fut);
    assert_eq!(svc.stats().losers_cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn first_success_returns_the_last_error_only_when_all_failed() {
    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(30), false, &t),
        replica(1, ms(10), false, &t),
        replica(2, ms(20), false, &t),
    ];
    let mut svc = Broadcast::new(replicas, FirstSuccess).unwrap();
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "replica 0 failed",
        "the last error to arrive"
    );
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(svc.stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn quorum_succeeds_with_k_answers_and_fails_as_soon_as_impossible() {
    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(10), true, &t),
        replica(1, ms(50), true, &t),
        replica(2, ms(20), true, &t),
    ];
    let mut svc = Broadcast::new(replicas, Quorum::new(2)).unwrap();
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(out, [0, 2], "first two answers, in arrival order");
    assert_eq!(start.elapsed(), ms(20));
    assert_eq!(t.live(), 0);

    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(10), false, &t),
        replica(1, ms(500), true, &t),
        replica(2, ms(20), false, &t),
    ];
    let mut svc = Broadcast::new(replicas, Quorum::new(2)).unwrap();
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let q = err
        .downcast_ref::<QuorumNotReached>()
        .expect("QuorumNotReached");
    assert_eq!((q.needed, q.succeeded, q.failed), (2, 0, 2));
    assert_eq!(q.last.to_string(), "replica 2 failed");
    assert_eq!(start.elapsed(), ms(20), "decided once 2 of 3 failed");
    assert_eq!(t.live(), 0, "the slow replica was cancelled");
}

/// A replica that panics after `delay` (in its future) or at once (in
/// `call`, before it returns a future), answering `Ok(id)` otherwise.
fn panicking_replica(
    id: usize,
    delay: Duration,
    panics: Option<&'static str>,
) -> impl Service<
    u32,
    Response = usize,
    Error = BoxError,
    Future = impl Future<Output = Result<usize, BoxError>> + Send,
> + Clone {
    service_fn(move |_req: u32| {
        assert_ne!(panics, Some("call"), "replica {id} broke in call");
        async move {
            sleep(delay).await;
            assert_ne!(panics, Some("future"), "replica {id} broke in its future");
            Ok(id)
        }
    })
}

/// Guards DESIGN contract 3 for broadcast: a replica whose future panics is
/// a failed replica, not a panic of the whole call. Under `FirstSuccess` it
/// does not beat a later success (it used to unwind out of the response
/// future), and the panic is counted.
#[tokio::test(start_paused = true)]
async fn a_panicking_replica_does_not_beat_a_success() {
    let replica = |panics: bool| {
        service_fn(move |x: u32| async move {
            tokio::time::sleep(Duration::from_millis(if panics { 1 } else { 10 })).await;
            if panics {
                panic!("replica bug");
            }
            Ok::<_, BoxError>(x)
        })
    };
    let mut svc = Broadcast::new(vec![replica(true), replica(false)], FirstSuccess).unwrap();
    let call = svc.ready().await.unwrap().call(7);
    let start = Instant::now();
    let r = tokio::spawn(call).await;
    let answer = r.expect("the panic escaped the broadcast");
    assert_eq!(answer.unwrap(), 7);
    assert_eq!(
        start.elapsed(),
        ms(10),
        "the success decided, not the panic"
    );
    let s = svc.stats();
    assert_eq!((s.calls, s.succeeded, s.failed, s.panicked), (1, 1, 0, 1));
}

/// Guards the other strategies and the other place a replica can panic:
/// a panic in a replica's `call` (before it has a future) fails that
/// replica only; the others are still called. `Quorum` counts it as a
/// failure, `All` fails with an error holding `weft_core::Panicked`, and
/// `FirstSuccess` over only panicking replicas returns the last panic as
/// its error.
#[tokio::test(start_paused = true)]
async fn panicking_replicas_are_failed_replicas_for_every_strategy() {
    // Quorum of 2 of 3: replica 0 panics in `call`, 1 and 2 answer.
    let replicas = vec![
        panicking_replica(0, ms(5), Some("call")),
        panicking_replica(1, ms(10), None),
        panicking_replica(2, ms(20), None),
    ];
    let mut svc = Broadcast::new(replicas, Quorum::new(2)).unwrap();
    svc.ready().await.unwrap();
    let out = tokio::spawn(svc.call(1))
        .await
        .expect("the call's panic escaped");
    assert_eq!(out.unwrap(), [1, 2]);
    assert_eq!(svc.stats().panicked, 1);

    // Quorum of 3 of 3: a panic makes it impossible at once.
    let replicas = vec![
        panicking_replica(0, ms(50), None),
        panicking_replica(1, ms(5), Some("future")),
        panicking_replica(2, ms(50), None),
    ];
    let mut svc = Broadcast::new(replicas, Quorum::new(3)).unwrap();
    svc.ready().await.unwrap();
    let start = Instant::now();
    let err = tokio::spawn(svc.call(1))
        .await
        .expect("the replica's panic escaped")
        .unwrap_err();
    let q = err
        .downcast_ref::<QuorumNotReached>()
        .expect("QuorumNotReached");
    assert_eq!((q.succeeded, q.failed), (0, 1));
    let panic = q.last.downcast_ref::<Panicked>().expect("Panicked");
    assert!(
        panic.message().contains("replica 1 broke in its future"),
        "{panic}"
    );
    assert_eq!(start.elapsed(), ms(5));

    // All: the panic is the first error, and decides.
    let replicas = vec![
        panicking_replica(0, ms(50), None),
        panicking_replica(1, ms(5), Some("future")),
    ];
    let mut svc = Broadcast::new(replicas, All::new()).unwrap();
    svc.ready().await.unwrap();
    let err = tokio::spawn(svc.call(1))
        .await
        .expect("the replica's panic escaped")
        .unwrap_err();
    assert!(err.downcast_ref::<Panicked>().is_some(), "{err}");
    let s = svc.stats();
    assert_eq!((s.failed, s.panicked, s.losers_cancelled), (1, 1, 1));

    // FirstSuccess with nothing but panics: the last one is the error.
    let replicas = vec![
        panicking_replica(0, ms(10), Some("future")),
        panicking_replica(1, ms(5), Some("call")),
    ];
    let mut svc = Broadcast::new(replicas, FirstSuccess).unwrap();
    svc.ready().await.unwrap();
    let err = tokio::spawn(svc.call(1))
        .await
        .expect("the call's panic escaped")
        .unwrap_err();
    let panic = err.downcast_ref::<Panicked>().expect("Panicked");
    assert!(
        panic.message().contains("replica 0 broke in its future"),
        "{panic}"
    );
    assert_eq!(svc.stats().panicked, 2);
}

#[tokio::test]
async fn build_errors_say_what_to_pass() {
    let none: Vec<tower::util::BoxCloneService<u32, u32, BoxError>> = Vec::new();
    assert_eq!(
        Broadcast::new(none, FirstSuccess).unwrap_err(),
        BuildError::NoServices
    );
    let t = Tracker::default();
    let err =
        Broadcast::new(vec![replica(0, ms(1), true, &t)], Quorum::<usize>::new(2)).unwrap_err();
    assert_eq!(
        err,
        BuildError::QuorumTooLarge {
            needed: 2,
            services: 1
        }
    );
    assert!(err.to_string().contains("pass at most 1"), "{err}");
    assert!(
        BuildError::NoServices
            .to_string()
            .contains("pass one or more"),
        "{}",
        BuildError::NoServices
    );
}

#[tokio::test(start_paused = true)]
async fn a_quorum_of_zero_is_refused_when_built() {
    let t = Tracker::default();
    let replicas = vec![replica(0, ms(1), true, &t), replica(1, ms(1), true, &t)];
    let err = Broadcast::new(replicas.clone(), Quorum::<usize>::new(0)).unwrap_err();
    assert_eq!(err, BuildError::ZeroQuorum);
    assert_eq!(
        err.to_string(),
        "quorum must be at least 1; pass 1 for \"any one replica\""
    );
    assert_eq!(t.live(), 0, "no replica was called");
    // What the message says to pass: a quorum of 1 is the first answer.
    let mut svc = Broadcast::new(replicas, Quorum::new(1)).unwrap();
    let answer = svc.ready().await.unwrap().call(7).await.unwrap();
    assert_eq!(answer.len(), 1);
}

#[tokio::test]
async fn ready_only_when_every_replica_is_ready() {
    let (a, mut ha) = tower_test::mock::pair::<u32, u32>();
    let (b, mut hb) = tower_test::mock::pair::<u32, u32>();
    ha.allow(0);
    hb.allow(1);
    let svc = Broadcast::new(vec![a, b], All::new()).unwrap();
    let mut svc = tower_test::mock::Spawn::new(svc);
    assert_pending!(svc.poll_ready());
    ha.allow(1);
    assert!(assert_ready!(svc.poll_ready()).is_ok());
    let mut fut = tokio_test::task::spawn(svc.call(5));
    let (req_a, send_a) = ha.next_request().await.unwrap();
    let (req_b, send_b) = hb.next_request().await.unwrap();
    assert_eq!((req_a, req_b), (5, 5));
    send_b.send_response(2);
    assert_pending!(fut.poll());
    send_a.send_response(1);
    assert_eq!(assert_ready!(fut.poll()).unwrap(), [1, 2]);
    // The reservation was used: not ready again until both allow another.
    assert_pending!(svc.poll_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_alive_after_a_broadcast_returns() {
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let t = Tracker::default();
    let replicas = vec![
        replica(0, ms(2), true, &t),
        replica(1, Duration::from_secs(3600), true, &t),
    ];
    let mut svc = Broadcast::new(replicas, FirstSuccess).unwrap();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 0);
    assert_eq!(t.live(), 0);
    assert_eq!(settle_tasks(baseline).await, baseline);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// First success never returns an error while a success is still
    /// possible: with any success among the replicas the answer is a
    /// success from the earliest-succeeding replica; with none, it is the
    /// error of the last replica to fail, at that replica's time.
    #[test]
    fn first_success_is_never_beaten_by_an_error(
        replicas in proptest::collection::vec((0u64..50, any::<bool>()), 1..7)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let t = Tracker::default();
            let svcs: Vec<_> = replicas.iter().enumerate().map(|(i, &(d, ok))| replica(i, ms(d), ok, &t)).collect();
            let mut svc = Broadcast::new(svcs, FirstSuccess).unwrap();
            let start = Instant::now();
            let out = svc.ready().await.unwrap().call(0).await;
            let elapsed = start.elapsed();
            let best_ok = replicas.iter().filter(|r| r.1).map(|r| r.0).min();
            match (best_ok, out) {
                (Some(d), Ok(i)) => {
                    prop_assert!(replicas[i].1, "answer from a failing replica");
                    prop_assert_eq!(replicas[i].0, d);
                    prop_assert_eq!(elapsed, ms(d));
                }
                (Some(_), Err(e)) => prop_assert!(false, "error {} while a success was possible", e),
                (None, Ok(i)) => prop_assert!(false, "success {} from nowhere", i),
                (None, Err(e)) => {
                    let last = replicas.iter().map(|r| r.0).max().unwrap();
                    prop_assert_eq!(elapsed, ms(last));
                    let msg = e.to_string();
                    let id: usize = msg.trim_start_matches("replica ").trim_end_matches(" failed").parse().unwrap();
                    prop_assert_eq!(replicas[id].0, last);
                }
            }
            prop_assert_eq!(t.live(), 0, "a replica call outlived the broadcast");
            Ok(())
        })?;
    }
}

/// Panics when dropped (unless already unwinding).
struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("replica state panicked when dropped");
        }
    }
}

/// A losing replica whose future panics when it is cancelled (dropped)
/// does not take the caller down: the panic is contained and counted, and
/// the winner's answer comes back.
#[tokio::test(start_paused = true)]
async fn a_loser_panicking_when_cancelled_is_contained() {
    let replica = |slow: bool| {
        service_fn(move |x: u32| async move {
            let _state = slow.then(|| PanicsOnDrop);
            sleep(ms(if slow { 100 } else { 10 })).await;
            Ok::<_, BoxError>(x)
        })
    };
    let mut svc = Broadcast::new(vec![replica(true), replica(false)], FirstSuccess).unwrap();
    let call = svc.ready().await.unwrap().call(7);
    let answer = tokio::spawn(call)
        .await
        .expect("the loser's drop panic escaped");
    assert_eq!(answer.unwrap(), 7);
    let s = svc.stats();
    assert_eq!((s.succeeded, s.losers_cancelled, s.panicked), (1, 1, 1));
}

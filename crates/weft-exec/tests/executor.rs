//! BoundedExecutor: bounds, overflow, timeouts, weights, priorities, panics,
//! shutdown.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use weft_core::{Drain, Overflow, PanicPolicy};
use weft_exec::{BoundedExecutor, BuildError, Priority, SpawnError, TaskError, TaskOptions};

fn exec(max: usize, q: usize, overflow: Overflow) -> BoundedExecutor {
    BoundedExecutor::builder()
        .max_running(max)
        .queue_capacity(q)
        .overflow(overflow)
        .build()
        .unwrap()
}

/// Tracks how many tasks run at once and the peak.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    async fn hold(&self, weight: usize, d: Duration) {
        let n = self.now.fetch_add(weight, Ordering::SeqCst) + weight;
        self.peak.fetch_max(n, Ordering::SeqCst);
        // Counted down also when the task is cut short (cancel, abort).
        struct Down<'a>(&'a AtomicUsize, usize);
        impl Drop for Down<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::SeqCst);
            }
        }
        let _down = Down(&self.now, weight);
        sleep(d).await;
    }
}

#[tokio::test(start_paused = true)]
async fn runs_at_most_n_and_queues_the_rest() {
    support::init();
    let e = exec(2, 10, Overflow::Block);
    let g = Arc::new(Gauge::default());
    let mut hs = Vec::new();
    for i in 0..6u64 {
        let g = g.clone();
        hs.push(
            e.spawn(async move {
                g.hold(1, Duration::from_millis(100)).await;
                i
            })
            .await
            .unwrap(),
        );
    }
    let s = e.stats();
    assert_eq!(s.queued + s.running, 6, "{s:?}");
    assert!(hs[0].started_at_once() && !hs[5].started_at_once());
    let start = Instant::now();
    let mut sum = 0;
    for h in hs {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, 15);
    assert_eq!(g.peak.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(300), "3 waves of 2");
    assert_eq!(e.stats().completed, 6);
}

#[tokio::test(start_paused = true)]
async fn try_spawn_hands_the_future_back_when_full() {
    let e = exec(1, 1, Overflow::Block);
    let _a = e.try_spawn(sleep(Duration::from_secs(1))).unwrap();
    let _b = e.try_spawn(sleep(Duration::from_secs(1))).unwrap();
    let err = e.try_spawn(async { 7 }).unwrap_err();
    assert!(matches!(err, SpawnError::Full(_)));
    assert_eq!(err.into_inner().await, 7, "the future comes back intact");
    assert_eq!(e.stats().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn overflow_policies() {
    // Reject
    let e = exec(1, 1, Overflow::Reject);
    let _r = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    let _q = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    assert!(matches!(e.spawn(async {}).await, Err(SpawnError::Full(_))));

    // DropNewest
    let e = exec(1, 1, Overflow::DropNewest);
    let _r = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    let _q = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    assert!(matches!(
        e.spawn(async {}).await,
        Err(SpawnError::Dropped(_))
    ));
    assert_eq!(e.stats().dropped, 1);

    // DropOldest: the evicted task's handle says so.
    let e = exec(1, 1, Overflow::DropOldest);
    let _r = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    let old = e.spawn(async { 1 }).await.unwrap();
    let new = e.spawn(async { 2 }).await.unwrap();
    assert_eq!(old.await, Err(TaskError::Evicted));
    assert_eq!(new.await, Ok(2));
    assert_eq!(e.stats().returned, 1);

    // WaitTimeout: the queued task counts against the capacity even once
    // the dispatcher has taken it as next to start.
    let e = exec(1, 1, Overflow::WaitTimeout(Duration::from_millis(50)));
    let _r = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    let _q = e.spawn(sleep(Duration::from_secs(1))).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(e.stats().queued, 1);
    let t = Instant::now();
    assert!(matches!(
        e.spawn(async {}).await,
        Err(SpawnError::Timeout(_))
    ));
    assert_eq!(t.elapsed(), Duration::from_millis(50));

    // Block waits for room.
    let e = exec(1, 1, Overflow::Block);
    let _r = e.spawn(sleep(Duration::from_millis(100))).await.unwrap();
    let _q = e.spawn(sleep(Duration::from_millis(100))).await.unwrap();
    tokio::task::yield_now().await;
    let t = Instant::now();
    let h = e.spawn(async { 3 }).await.unwrap();
    assert_eq!(
        t.elapsed(),
        Duration::from_millis(100),
        "waited for the queue to move"
    );
    assert_eq!(h.await, Ok(3));
}

/// `queue_capacity` is one bound over all three lanes and the task the
/// dispatcher holds: with Q = 2, two waiting tasks in different lanes fill
/// it, whatever lane the third asks for, under every policy.
#[tokio::test(start_paused = true)]
async fn queue_capacity_is_one_total_across_lanes() {
    let prio = |p| TaskOptions::new().priority(p);
    for overflow in [
        Overflow::Reject,
        Overflow::DropNewest,
        Overflow::Block,
        Overflow::WaitTimeout(Duration::from_millis(50)),
        Overflow::DropOldest,
    ] {
        let e = exec(1, 2, overflow);
        let _busy = e.spawn(sleep(Duration::from_secs(10))).await.unwrap();
        let high = e
            .spawn_with(prio(Priority::High), async { 'h' })
            .await
            .unwrap();
        // Let the dispatcher take the high task as next to start.
        tokio::task::yield_now().await;
        let low = e
            .spawn_with(prio(Priority::Low), async { 'l' })
            .await
            .unwrap();
        assert_eq!(e.stats().queued, 2, "{overflow:?}");
        assert_eq!(e.queue_capacity(), 2);
        for p in [Priority::High, Priority::Normal, Priority::Low] {
            if overflow == Overflow::DropOldest {
                continue;
            }
            let t = Instant::now();
            match overflow {
                Overflow::Reject => assert!(matches!(
                    e.spawn_with(prio(p), async { 'x' }).await,
                    Err(SpawnError::Full(_))
                )),
                Overflow::DropNewest => assert!(matches!(
                    e.spawn_with(prio(p), async { 'x' }).await,
                    Err(SpawnError::Dropped(_))
                )),
                Overflow::WaitTimeout(_) => {
                    assert!(matches!(
                        e.spawn_with(prio(p), async { 'x' }).await,
                        Err(SpawnError::Timeout(_))
                    ));
                    assert_eq!(t.elapsed(), Duration::from_millis(50));
                }
                _ => {
                    // Block: spawn would wait; it does not finish in 1 s.
                    let waited = tokio::time::timeout(
                        Duration::from_secs(1),
                        e.spawn_with(prio(p), async { 'x' }),
                    )
                    .await;
                    assert!(waited.is_err(), "Block must wait while Q tasks wait");
                }
            }
            // try_spawn never waits, whatever the policy.
            let t = Instant::now();
            let r = e.try_spawn_with(prio(p), async { 'x' });
            assert_eq!(t.elapsed(), Duration::ZERO);
            if overflow == Overflow::DropNewest {
                assert!(matches!(r, Err(SpawnError::Dropped(_))));
            } else {
                assert!(matches!(r, Err(SpawnError::Full(_))));
            }
            assert_eq!(e.stats().queued, 2, "{overflow:?} {p:?}");
        }
        if overflow == Overflow::DropOldest {
            // Full: a new high task evicts the low one (lowest lane first),
            // the held high task stays.
            let new = e
                .spawn_with(prio(Priority::High), async { 'n' })
                .await
                .unwrap();
            assert_eq!(e.stats().queued, 2);
            assert_eq!(low.await, Err(TaskError::Evicted));
            let s = e.stats();
            assert_eq!((s.returned, s.queued), (1, 2));
            assert_eq!(high.await, Ok('h'));
            assert_eq!(new.await, Ok('n'));
        } else {
            assert_eq!(high.await, Ok('h'));
            assert_eq!(low.await, Ok('l'));
        }
        let report = e.shutdown(Instant::now() + Duration::from_secs(60)).await;
        assert!(report.is_balanced(), "{overflow:?}: {report}");
    }
}

/// `DropOldest` evicts the oldest of the lowest non-empty lane; when every
/// lane is empty it evicts the task the dispatcher holds as next to start,
/// and the dispatcher moves on to the newcomer.
#[tokio::test(start_paused = true)]
async fn drop_oldest_evicts_lowest_lane_first_then_the_held_task() {
    let prio = |p| TaskOptions::new().priority(p);
    let e = exec(1, 3, Overflow::DropOldest);
    let _busy = e.spawn(sleep(Duration::from_millis(100))).await.unwrap();
    let a = e
        .spawn_with(prio(Priority::High), async { 'a' })
        .await
        .unwrap();
    tokio::task::yield_now().await; // a is held by the dispatcher
    let b = e
        .spawn_with(prio(Priority::Normal), async { 'b' })
        .await
        .unwrap();
    let c = e
        .spawn_with(prio(Priority::Low), async { 'c' })
        .await
        .unwrap();
    let d = e
        .spawn_with(prio(Priority::Low), async { 'd' })
        .await
        .unwrap();
    let f = e
        .spawn_with(prio(Priority::High), async { 'f' })
        .await
        .unwrap();
    let g = e
        .spawn_with(prio(Priority::High), async { 'g' })
        .await
        .unwrap();
    // c (oldest low), then d (low), then b (normal) were evicted.
    assert_eq!(c.await, Err(TaskError::Evicted));
    assert_eq!(d.await, Err(TaskError::Evicted));
    assert_eq!(b.await, Err(TaskError::Evicted));
    // Lanes hold f, g; a is held: one more evicts f (oldest high).
    let h = e
        .spawn_with(prio(Priority::High), async { 'h' })
        .await
        .unwrap();
    assert_eq!(f.await, Err(TaskError::Evicted));
    assert_eq!(e.stats().queued, 3);
    assert_eq!(a.await, Ok('a'));
    assert_eq!(g.await, Ok('g'));
    assert_eq!(h.await, Ok('h'));

    // Q = 1: the only waiting task is the held one; it is the victim.
    let e = exec(1, 1, Overflow::DropOldest);
    let _busy = e.spawn(sleep(Duration::from_millis(100))).await.unwrap();
    let held = e.spawn(async { 1 }).await.unwrap();
    tokio::task::yield_now().await;
    let t = Instant::now();
    let new = e.try_spawn(async { 2 }).unwrap();
    assert_eq!(held.await, Err(TaskError::Evicted));
    assert_eq!(e.stats().queued, 1);
    assert_eq!(new.await, Ok(2));
    assert_eq!(
        t.elapsed(),
        Duration::from_millis(100),
        "started when the slot freed"
    );
    let s = e.stats();
    assert_eq!((s.accepted, s.completed, s.returned), (3, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_and_run_timeout_are_separate() {
    let e = BoundedExecutor::builder()
        .max_running(1)
        .queue_timeout(Duration::from_millis(100))
        .run_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let long = e.spawn(sleep(Duration::from_secs(10))).await.unwrap();
    let waiting = e.spawn(async { 1 }).await.unwrap();
    assert_eq!(
        waiting.await,
        Err(TaskError::QueueTimeout(Duration::from_millis(100)))
    );
    let t = Instant::now();
    assert_eq!(
        long.await,
        Err(TaskError::TimedOut(Duration::from_millis(500)))
    );
    assert_eq!(t.elapsed(), Duration::from_millis(400));
    let s = e.stats();
    assert_eq!((s.queue_timed_out, s.timed_out), (1, 1));
    // After the timed-out task gave its slot back, work runs again.
    assert_eq!(e.spawn(async { 5 }).await.unwrap().await, Ok(5));
}

#[tokio::test(start_paused = true)]
async fn weighted_tasks_hold_k_permits() {
    let e = exec(4, 10, Overflow::Block);
    let g = Arc::new(Gauge::default());
    let mut hs = Vec::new();
    for w in [3u32, 2, 1, 4, 1] {
        let g = g.clone();
        hs.push(
            e.spawn_with(TaskOptions::new().weight(w), async move {
                g.hold(w as usize, Duration::from_millis(10)).await
            })
            .await
            .unwrap(),
        );
    }
    for h in hs {
        h.await.unwrap();
    }
    assert!(g.peak.load(Ordering::SeqCst) <= 4);
    let err = e
        .try_spawn_with(TaskOptions::new().weight(5), async {})
        .unwrap_err();
    assert!(matches!(err, SpawnError::TooHeavy(_)));
}

#[tokio::test(start_paused = true)]
async fn high_first_and_low_not_starved() {
    let e = BoundedExecutor::builder()
        .max_running(1)
        .queue_capacity(100)
        .fairness(4)
        .build()
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let _blocker = e.spawn(sleep(Duration::from_millis(1))).await.unwrap();
    let mut hs = Vec::new();
    for (p, tag) in [(Priority::Low, 'l'), (Priority::Normal, 'n')]
        .into_iter()
        .chain(std::iter::repeat_n((Priority::High, 'h'), 20))
    {
        let order = order.clone();
        hs.push(
            e.spawn_with(TaskOptions::new().priority(p), async move {
                order.lock().unwrap().push(tag);
                sleep(Duration::from_millis(1)).await;
            })
            .await
            .unwrap(),
        );
    }
    for h in hs {
        h.await.unwrap();
    }
    let order: String = order.lock().unwrap().iter().collect();
    assert!(order.starts_with("hhh"), "high first: {order}");
    let l = order.find('l').unwrap();
    let n = order.find('n').unwrap();
    assert!(
        l < 12 && n < 12,
        "lower lanes served while high kept coming: {order}"
    );
}

#[tokio::test(start_paused = true)]
async fn panics_are_contained_and_counted() {
    let e = exec(1, 4, Overflow::Block);
    let h = e.spawn(async { panic!("boom") }).await.unwrap();
    let q = e.spawn(async { panic!("queued boom") }).await.unwrap();
    match h.await {
        Err(TaskError::Panicked(p)) => assert_eq!(p.message(), "boom"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(q.await, Err(TaskError::Panicked(_))));
    assert_eq!(
        e.spawn(async { 1 }).await.unwrap().await,
        Ok(1),
        "slot was released"
    );
    assert_eq!(e.stats().panicked, 2);
}

/// A panic on a later poll (after the task returned `Pending`) is contained
/// too, on both paths, and the slot comes back.
#[tokio::test(start_paused = true)]
async fn panics_after_pending_are_contained() {
    let e = exec(1, 4, Overflow::Block);
    let late = |msg: &'static str| async move {
        sleep(Duration::from_millis(5)).await;
        panic!("{msg}");
    };
    let h = e.spawn(late("late boom")).await.unwrap();
    assert!(h.started_at_once());
    let q = e.spawn(late("late queued boom")).await.unwrap();
    assert!(!q.started_at_once());
    match h.await {
        Err(TaskError::Panicked(p)) => assert_eq!(p.message(), "late boom"),
        other => panic!("unexpected {other:?}"),
    }
    match q.await {
        Err(TaskError::Panicked(p)) => assert_eq!(p.message(), "late queued boom"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(e.stats().panicked, 2);
    assert_eq!(e.stats().permits_in_use, 0);
    let report = e.shutdown(Instant::now()).await;
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.failed, 2);
}

/// Aborting at the deadline stops a task that keeps waking itself (it is
/// polled again after the abort and must not run on) as well as one parked
/// on a timer.
/// `PanicPolicy::Propagate`: awaiting the handle of a task that panicked
/// panics with its message, on the fast path and through the queue; the
/// panic was counted where it happened, and other tasks are not affected.
#[tokio::test(start_paused = true)]
async fn propagate_policy_re_raises_where_the_result_is_awaited() {
    let e = BoundedExecutor::builder()
        .max_running(1)
        .panic_policy(PanicPolicy::Propagate)
        .build()
        .unwrap();
    let direct = e
        .spawn(async {
            sleep(Duration::from_millis(1)).await;
            panic!("boom 1")
        })
        .await
        .unwrap();
    let queued = e.spawn(async { panic!("boom 2") }).await.unwrap();
    let fine = e.spawn(async { 3 }).await.unwrap();
    assert!(direct.started_at_once() && !queued.started_at_once());
    for (h, message) in [(direct, "boom 1"), (queued, "boom 2")] {
        let err = tokio::spawn(h).await.expect_err("awaiting re-raises");
        let payload = err.into_panic();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some(message)
        );
    }
    assert_eq!(fine.await, Ok(3));
    let s = e.stats();
    assert_eq!((s.panicked, s.completed), (2, 1));
}

/// `PanicPolicy::Abort`: a panicking task aborts the process. The test runs
/// itself again in a child process, which must die of SIGABRT.
#[cfg(unix)]
#[test]
fn abort_policy_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "WEFT_EXEC_ABORT_POLICY_CHILD";
    if std::env::var_os(CHILD).is_some() {
        support::paused().block_on(async {
            let e = BoundedExecutor::builder()
                .panic_policy(PanicPolicy::Abort)
                .build()
                .unwrap();
            let h = e.spawn(async { panic!("fatal") }).await.unwrap();
            let _ = h.await;
        });
        // Not reached when the policy works.
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "abort_policy_aborts_the_process", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(6),
        "the child should die of SIGABRT: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(start_paused = true)]
async fn abort_stops_busy_and_parked_tasks() {
    let e = exec(2, 4, Overflow::Block);
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let busy = e
        .spawn(async move {
            loop {
                p.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    let parked = e.spawn(sleep(Duration::from_secs(3600))).await.unwrap();
    // A busy task keeps paused time from advancing: a deadline already
    // passed aborts at once.
    tokio::task::yield_now().await;
    let report = e.shutdown(Instant::now()).await;
    assert_eq!(busy.await, Err(TaskError::Aborted));
    assert_eq!(parked.await, Err(TaskError::Aborted));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.aborted, 2, "{report}");
    let after = polls.load(Ordering::SeqCst);
    assert!(after > 0);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(
        polls.load(Ordering::SeqCst),
        after,
        "aborted task kept running"
    );
    assert_eq!(e.stats().permits_in_use, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_then_aborts_with_a_balanced_report() {
    let e = exec(2, 10, Overflow::Block);
    let quick = e.spawn(sleep(Duration::from_millis(10))).await.unwrap();
    let stuck = e.spawn(sleep(Duration::from_secs(3600))).await.unwrap();
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(e.spawn(sleep(Duration::from_secs(3600))).await.unwrap());
    }
    let t = Instant::now();
    let report = e.drain(Instant::now() + Duration::from_secs(1)).await;
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.accepted, 5);
    assert_eq!(report.completed, 1);
    // `quick` done; `stuck` and the first queued task that took quick's
    // slot are aborted; the other two never started.
    assert_eq!(report.aborted, 2, "{report}");
    assert_eq!(report.returned, 2, "{report}");
    assert_eq!(report.unfinished.len(), 2);
    assert_eq!(quick.await, Ok(()));
    assert_eq!(stuck.await, Err(TaskError::Aborted));
    let outcomes: Vec<_> = futures::future::join_all(queued).await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|r| **r == Err(TaskError::NotStarted))
            .count(),
        2
    );
    assert!(matches!(
        e.spawn(async {}).await,
        Err(SpawnError::Closed(_))
    ));
    let again = e.shutdown(Instant::now()).await;
    assert_eq!(again.rejected_after_close, 1);
    assert_eq!(again.accepted, report.accepted);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_cooperative_tasks_then_aborts_the_rest() {
    let e = BoundedExecutor::builder()
        .max_running(3)
        .queue_capacity(4)
        .cancel_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let t = Instant::now();
    // Returns how long after `t` it was asked to stop.
    let cooperative = |token: CancellationToken| async move {
        tokio::select! {
            _ = token.cancelled() => Some(t.elapsed()),
            _ = sleep(Duration::from_secs(3600)) => None,
        }
    };
    let a = e.spawn(cooperative(e.cancellation_token())).await.unwrap();
    let b = e.spawn(cooperative(e.cancellation_token())).await.unwrap();
    let stubborn = e
        .spawn(async {
            sleep(Duration::from_secs(3600)).await;
            Some(Duration::ZERO)
        })
        .await
        .unwrap();
    // All three slots are taken: these wait (the first held by the
    // dispatcher, the second in its lane), and must never start.
    let held = e.spawn(async { Some(Duration::ZERO) }).await.unwrap();
    let in_lane = e.spawn(async { Some(Duration::ZERO) }).await.unwrap();
    assert!(!held.started_at_once() && !in_lane.started_at_once());
    let report = e.shutdown(t + Duration::from_secs(1)).await;
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    let asked = Some(Duration::from_millis(800));
    assert_eq!(a.await, Ok(asked));
    assert_eq!(b.await, Ok(asked));
    assert_eq!(held.await, Err(TaskError::NotStarted));
    assert_eq!(in_lane.await, Err(TaskError::NotStarted));
    assert_eq!(stubborn.await, Err(TaskError::Aborted));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(
        (
            report.accepted,
            report.completed,
            report.cancelled,
            report.aborted,
            report.returned
        ),
        (5, 0, 2, 1, 2),
        "{report}"
    );
    // Fast-path ids are even, in spawn order: the stubborn one is #4.
    assert_eq!(report.unfinished, vec!["task #4".to_owned()]);
    let s = e.stats();
    assert_eq!((s.cancelled, s.aborted, s.permits_in_use), (2, 1, 0));
}

/// What ends during the cancel phase: a task that returns is counted as
/// cancelled whether it watched the token or not (the executor cannot
/// tell); a run timeout stays a timeout and a panic a panic, as their
/// handles say.
#[tokio::test(start_paused = true)]
async fn in_the_cancel_phase_returns_count_as_cancelled_and_failures_as_failures() {
    let e = BoundedExecutor::builder()
        .max_running(4)
        .run_timeout(Duration::from_millis(900))
        .cancel_grace(Duration::from_millis(500))
        .build()
        .unwrap();
    let t = Instant::now();
    // Ignores the token, finishes at 600 ms: inside the grace period.
    let unaware = e
        .spawn(async {
            sleep(Duration::from_millis(600)).await;
            7
        })
        .await
        .unwrap();
    // Cut by its run timeout at 900 ms, in the grace period too.
    let slow = e
        .spawn(async {
            sleep(Duration::from_secs(60)).await;
            0
        })
        .await
        .unwrap();
    // Panics at 700 ms.
    let panics = e
        .spawn(async {
            sleep(Duration::from_millis(700)).await;
            panic!("boom while shutting down")
        })
        .await
        .unwrap();
    let report = e.shutdown(t + Duration::from_secs(1)).await;
    assert_eq!(unaware.await, Ok(7));
    assert_eq!(
        slow.await,
        Err(TaskError::TimedOut(Duration::from_millis(900)))
    );
    assert!(matches!(panics.await, Err(TaskError::Panicked(_))));
    assert!(report.is_balanced(), "{report}");
    assert_eq!(
        (
            report.completed,
            report.cancelled,
            report.failed,
            report.aborted
        ),
        (0, 1, 2, 0),
        "{report}"
    );
    // Idle at 900 ms: the shutdown did not wait for its deadline.
    assert_eq!(t.elapsed(), Duration::from_millis(900));
    let s = e.stats();
    assert_eq!((s.cancelled, s.timed_out, s.panicked), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn cancel_grace_is_at_most_half_the_time_left() {
    let e = BoundedExecutor::builder()
        .cancel_grace(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = e.cancellation_token();
    let t = Instant::now();
    let h = e
        .spawn(async move {
            token.cancelled().await;
            t.elapsed()
        })
        .await
        .unwrap();
    let report = e.shutdown(t + Duration::from_secs(2)).await;
    assert_eq!(h.await, Ok(Duration::from_secs(1)));
    assert_eq!((report.cancelled, report.aborted), (1, 0), "{report}");
    assert_eq!(t.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_user_cancelling_its_token_does_not_start_the_cancel_phase() {
    let e = exec(1, 4, Overflow::Block);
    let mine = e.cancellation_token();
    let m = mine.clone();
    let waits = e
        .spawn(async move {
            m.cancelled().await;
            1
        })
        .await
        .unwrap();
    let queued = e.spawn(async { 2 }).await.unwrap();
    mine.cancel();
    assert_eq!(waits.await, Ok(1));
    // Queued work still starts, and nothing is counted as cancelled.
    assert_eq!(queued.await, Ok(2));
    assert!(!e.cancellation_token().is_cancelled());
    let s = e.stats();
    assert_eq!((s.completed, s.cancelled), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn run_timeout_bounds_queued_tasks_and_timed_tasks_contain_panics() {
    let e = BoundedExecutor::builder()
        .max_running(1)
        .run_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let first = e.spawn(sleep(Duration::from_secs(10))).await.unwrap();
    // Both wait for the one slot; the timeout counts from each start.
    let queued = e.spawn(sleep(Duration::from_secs(10))).await.unwrap();
    let panics = e
        .spawn(async {
            sleep(Duration::from_millis(1)).await;
            panic!("boom in a timed task")
        })
        .await
        .unwrap();
    assert!(!queued.started_at_once() && !panics.started_at_once());
    let t = Instant::now();
    let cut = Err(TaskError::TimedOut(Duration::from_millis(500)));
    assert_eq!(first.await, cut);
    assert_eq!(queued.await, cut);
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    match panics.await {
        Err(TaskError::Panicked(p)) => assert!(p.message().contains("boom"), "{p:?}"),
        other => panic!("expected a contained panic, got {other:?}"),
    }
    let s = e.stats();
    assert_eq!((s.timed_out, s.panicked, s.permits_in_use), (2, 1, 0));
    // The slot is free again.
    assert_eq!(e.spawn(async { 3 }).await.unwrap().await, Ok(3));
}

/// Each task runs in a `task` span whose parent is the span the spawn was
/// called in, on the fast path and through the queue.
#[test]
fn tasks_run_in_their_own_span_under_the_callers() {
    use tracing::Instrument;
    use tracing_subscriber::registry::{LookupSpan, Registry};

    fn scope() -> Vec<String> {
        tracing::Span::current()
            .with_subscriber(|(id, dispatch)| {
                let registry = dispatch.downcast_ref::<Registry>()?;
                let span = registry.span(id)?;
                Some(span.scope().map(|s| s.name().to_owned()).collect())
            })
            .flatten()
            .unwrap_or_default()
    }
    tracing::subscriber::with_default(Registry::default(), || {
        let rt = support::paused();
        rt.block_on(async {
            let e = exec(1, 4, Overflow::Block);
            let (direct, queued) = async {
                let a = e
                    .spawn(async {
                        sleep(Duration::from_millis(1)).await;
                        scope()
                    })
                    .await
                    .unwrap();
                let b = e.spawn(async { scope() }).await.unwrap();
                (a, b)
            }
            .instrument(tracing::info_span!("request"))
            .await;
            assert!(direct.started_at_once() && !queued.started_at_once());
            assert_eq!(direct.await.unwrap(), ["task", "request"]);
            assert_eq!(queued.await.unwrap(), ["task", "request"]);
        });
    });
}

#[tokio::test(start_paused = true)]
async fn clean_shutdown_runs_queued_work() {
    let e = exec(1, 10, Overflow::Block);
    let hs: Vec<_> =
        futures::future::join_all((0..5).map(|_| e.spawn(sleep(Duration::from_millis(10)))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let report = e.shutdown(Instant::now() + Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.completed, 5);
    for h in hs {
        assert_eq!(h.await, Ok(()));
    }
}

#[test]
fn build_errors() {
    assert_eq!(
        BoundedExecutor::builder().build().unwrap_err(),
        BuildError::NoRuntime
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(
            BoundedExecutor::builder()
                .max_running(0)
                .build()
                .unwrap_err(),
            BuildError::ZeroRunning
        );
        assert!(
            BoundedExecutor::builder()
                .queue_capacity(0)
                .build()
                .is_err()
        );
        let too_many = tokio::sync::Semaphore::MAX_PERMITS + 1;
        assert_eq!(
            BoundedExecutor::builder()
                .queue_capacity(too_many)
                .build()
                .unwrap_err(),
            BuildError::QueueTooLarge(too_many)
        );
        assert_eq!(
            BoundedExecutor::builder()
                .max_running(too_many)
                .build()
                .unwrap_err(),
            BuildError::RunningTooLarge(too_many)
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Never more than N permits' worth running; never more than Q tasks
    /// waiting in total (all lanes plus the dispatcher's held task), checked
    /// after every spawn and every millisecond; every accepted task is
    /// accounted for exactly once: the handles' outcomes match the report
    /// and `accepted = completed + failed + cancelled + aborted + returned`,
    /// with or without a shutdown that cuts work off.
    #[test]
    fn never_more_than_n_running_or_q_waiting_and_never_loses_a_task(
        max in 1usize..5,
        cap in 1usize..6,
        overflow in prop_oneof![
            Just(Overflow::Block),
            Just(Overflow::Reject),
            Just(Overflow::DropOldest),
            Just(Overflow::DropNewest),
            Just(Overflow::WaitTimeout(Duration::from_millis(3))),
        ],
        queue_timeout in proptest::option::weighted(0.3, 1u64..30),
        shutdown_after in proptest::option::weighted(0.3, 0u64..40),
        tasks in proptest::collection::vec((1u32..4, 0u8..3, 0u64..20, any::<bool>(), prop_oneof![3 => Just(0u64), 1 => 1u64..6], any::<bool>()), 1..40),
    ) {
        let rt = support::paused();
        rt.block_on(async move {
            let mut b = BoundedExecutor::builder().max_running(max).queue_capacity(cap).overflow(overflow);
            if let Some(ms) = queue_timeout {
                b = b.queue_timeout(Duration::from_millis(ms));
            }
            let e = b.build().unwrap();
            let g = Arc::new(Gauge::default());
            // Samples the waiting count every millisecond while spawns run.
            let peak_waiting = Arc::new(AtomicUsize::new(0));
            let monitor = {
                let (e, peak) = (e.clone(), peak_waiting.clone());
                tokio::spawn(async move {
                    loop {
                        peak.fetch_max(e.stats().queued, Ordering::SeqCst);
                        sleep(Duration::from_millis(1)).await;
                    }
                })
            };
            let mut handles = Vec::new();
            let mut refused = 0u64;
            for (w, p, ms, use_try, gap, cooperative) in tasks {
                if gap > 0 {
                    sleep(Duration::from_millis(gap)).await;
                }
                let w = w.min(max as u32);
                let p = [Priority::High, Priority::Normal, Priority::Low][p as usize];
                let g2 = g.clone();
                // Cooperative tasks stop when the shutdown's cancel phase
                // begins; the others run on until done or aborted.
                let token = if cooperative { e.cancellation_token() } else { CancellationToken::new() };
                let fut = async move {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = g2.hold(w as usize, Duration::from_millis(ms)) => {}
                    }
                };
                let opts = TaskOptions::new().weight(w).priority(p);
                let r = if use_try { e.try_spawn_with(opts, fut) } else { e.spawn_with(opts, fut).await };
                match r {
                    Ok(h) => handles.push(h),
                    Err(_) => refused += 1,
                }
                let waiting = e.stats().queued;
                prop_assert!(waiting <= cap, "{} waiting, capacity {}", waiting, cap);
            }
            let accepted = handles.len() as u64;
            let early = match shutdown_after {
                Some(ms) => Some(e.shutdown(Instant::now() + Duration::from_millis(ms)).await),
                None => None,
            };
            let (mut ok, mut failed, mut aborted, mut returned) = (0u64, 0u64, 0u64, 0u64);
            for h in handles {
                match h.await {
                    Ok(()) => ok += 1,
                    Err(TaskError::Evicted | TaskError::NotStarted) => returned += 1,
                    Err(TaskError::QueueTimeout(_)) => failed += 1,
                    Err(TaskError::Aborted) => aborted += 1,
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            monitor.abort();
            prop_assert!(g.peak.load(Ordering::SeqCst) <= max);
            let peak = peak_waiting.load(Ordering::SeqCst);
            prop_assert!(peak <= cap, "sampled {} waiting, capacity {}", peak, cap);
            let s = e.stats();
            prop_assert_eq!(s.accepted, accepted);
            prop_assert_eq!(s.rejected + s.dropped, refused);
            prop_assert_eq!(s.queued, 0);
            let report = match early {
                Some(r) => r,
                None => e.shutdown(Instant::now()).await,
            };
            prop_assert_eq!(report.accepted, accepted);
            // A task that returned during the cancel phase is counted
            // cancelled; its handle still has its output.
            prop_assert_eq!(report.completed + report.cancelled, ok);
            prop_assert_eq!(report.failed, failed);
            prop_assert_eq!(report.aborted, aborted);
            prop_assert_eq!(report.returned, returned);
            if shutdown_after.is_none() {
                prop_assert_eq!(report.cancelled, 0);
            }
            prop_assert_eq!(
                report.accepted,
                report.completed + report.failed + report.cancelled + report.aborted + report.returned
            );
            prop_assert!(report.is_balanced(), "{}", report);
            if shutdown_after.is_none() {
                prop_assert_eq!(aborted, 0);
                prop_assert!(report.is_clean() || failed > 0, "{}", report);
            }
            Ok(())
        })?;
    }
}

/// Real threads: two producers race spawns (fast path and queue) against
/// finishing tasks; the bound holds and every task is accounted for.
#[test]
fn multi_thread_producers_never_exceed_the_bound() {
    let rt = support::two_workers();
    rt.block_on(async {
        let e = BoundedExecutor::builder()
            .max_running(8)
            .queue_capacity(16)
            .overflow(Overflow::Block)
            .build()
            .unwrap();
        let g = Arc::new(Gauge::default());
        let mut producers = Vec::new();
        for p in 0..2u32 {
            let e = e.clone();
            let g = g.clone();
            producers.push(tokio::spawn(async move {
                let mut hs = Vec::new();
                for i in 0..5_000u32 {
                    let w = 1 + (i + p) % 3;
                    let g = g.clone();
                    let opts = TaskOptions::new().weight(w).priority(
                        [Priority::High, Priority::Normal, Priority::Low][(i % 3) as usize],
                    );
                    let h = e
                        .spawn_with(opts, async move {
                            let n = g.now.fetch_add(w as usize, Ordering::SeqCst) + w as usize;
                            g.peak.fetch_max(n, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            g.now.fetch_sub(w as usize, Ordering::SeqCst);
                            1u64
                        })
                        .await
                        .unwrap_or_else(|_| panic!("Block never refuses while open"));
                    hs.push(h);
                }
                let mut n = 0;
                for h in hs {
                    n += h.await.unwrap();
                }
                n
            }));
        }
        let mut total = 0;
        for p in producers {
            total += p.await.unwrap();
        }
        assert_eq!(total, 10_000);
        assert!(
            g.peak.load(Ordering::SeqCst) <= 8,
            "peak {}",
            g.peak.load(Ordering::SeqCst)
        );
        let report = e.shutdown(Instant::now() + Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.completed, 10_000);
    });
}

/// Spawns racing a shutdown on real threads: every accepted task is
/// accounted for and the shutdown returns (a spawn that took its room
/// permit just before the close still gets its task dispatched or handed
/// back; the dispatcher does not exit under it).
#[test]
fn spawns_racing_a_shutdown_are_never_stranded() {
    let rt = support::two_workers();
    rt.block_on(async {
        for round in 0..50u64 {
            let e = BoundedExecutor::builder()
                .max_running(2)
                .queue_capacity(8)
                .overflow(Overflow::Reject)
                .build()
                .unwrap();
            let mut producers = Vec::new();
            for _ in 0..2 {
                let e = e.clone();
                producers.push(tokio::spawn(async move {
                    let mut hs = Vec::new();
                    loop {
                        match e.try_spawn(async { tokio::task::yield_now().await }) {
                            Ok(h) => hs.push(h),
                            Err(SpawnError::Closed(_)) => return hs,
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                }));
            }
            for _ in 0..round % 7 {
                tokio::task::yield_now().await;
            }
            let report = tokio::time::timeout(
                Duration::from_secs(30),
                e.shutdown(Instant::now() + Duration::from_secs(5)),
            )
            .await
            .expect("shutdown returned");
            let mut handles = Vec::new();
            for p in producers {
                handles.extend(p.await.unwrap());
            }
            let accepted = handles.len() as u64;
            for h in handles {
                let r = tokio::time::timeout(Duration::from_secs(30), h)
                    .await
                    .expect("every handle resolves");
                assert!(matches!(r, Ok(()) | Err(TaskError::NotStarted)), "{r:?}");
            }
            let again = e.shutdown(Instant::now()).await;
            assert_eq!(again.accepted, accepted, "round {round}: {again}");
            assert!(again.is_balanced(), "round {round}: {again}");
            assert!(report.accepted <= accepted);
        }
    });
}

/// A low-lane task whose queue deadline passes while the dispatcher waits
/// for a high-lane task never runs, even though a slot is free when it is
/// finally taken.
#[tokio::test(start_paused = true)]
async fn an_expired_task_never_runs() {
    let e = BoundedExecutor::builder()
        .max_running(3)
        .queue_capacity(10)
        .queue_timeout(Duration::from_millis(100))
        .fairness(0)
        .build()
        .unwrap();
    // Two of three permits busy for a long time: one stays free.
    let _busy = e
        .spawn_with(TaskOptions::new().weight(2), sleep(Duration::from_secs(10)))
        .await
        .unwrap();
    // Queued together: the dispatcher takes the high one first and waits
    // for its two permits until its deadline...
    let high = e
        .spawn_with(
            TaskOptions::new().priority(Priority::High).weight(2),
            async { 1 },
        )
        .await
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let low = e
        .spawn_with(TaskOptions::new().priority(Priority::Low), async move {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert!(matches!(high.await, Err(TaskError::QueueTimeout(_))));
    // ...so the low one is taken at its own deadline with a permit free: it
    // must time out, not run late.
    assert!(matches!(low.await, Err(TaskError::QueueTimeout(_))));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(e.stats().queue_timed_out, 2);
}

/// Real threads under `DropOldest`: two producers evict each other's
/// waiting tasks (from the lanes and from the dispatcher's hand) while
/// tasks start and finish; every accepted task either completes or is
/// evicted, once, and the report balances.
#[test]
fn multi_thread_drop_oldest_loses_and_duplicates_nothing() {
    let rt = support::two_workers();
    rt.block_on(async {
        let e = exec(2, 4, Overflow::DropOldest);
        let ran = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let (e, ran) = (e.clone(), ran.clone());
                tokio::spawn(async move {
                    let mut hs = Vec::new();
                    for i in 0..3_000u32 {
                        let ran = ran.clone();
                        let opts = TaskOptions::new().weight(1 + (i + p) % 2).priority(
                            [Priority::High, Priority::Normal, Priority::Low][(i % 3) as usize],
                        );
                        let fut = async move {
                            ran.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        };
                        let r = if i % 2 == 0 {
                            e.try_spawn_with(opts, fut)
                        } else {
                            e.spawn_with(opts, fut).await
                        };
                        hs.push(
                            r.unwrap_or_else(|_| panic!("DropOldest never refuses while open")),
                        );
                    }
                    let (mut ok, mut evicted) = (0u64, 0u64);
                    for h in hs {
                        match h.await {
                            Ok(()) => ok += 1,
                            Err(TaskError::Evicted) => evicted += 1,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                    (ok, evicted)
                })
            })
            .collect();
        let (mut ok, mut evicted) = (0, 0);
        for p in producers {
            let (o, v) = p.await.unwrap();
            ok += o;
            evicted += v;
        }
        assert_eq!(ok + evicted, 6_000);
        assert!(
            evicted > 0,
            "producers outpace two slots and four waiting places"
        );
        assert_eq!(
            ran.load(Ordering::SeqCst) as u64,
            ok,
            "evicted tasks never ran"
        );
        let report = e.shutdown(Instant::now() + Duration::from_secs(5)).await;
        assert!(report.is_balanced(), "{report}");
        assert_eq!(
            (report.completed, report.returned),
            (ok, evicted),
            "{report}"
        );
    });
}

/// Tasks start on the executor's own runtime, so a thread outside any
/// runtime (a sync callback, a blocking worker) can `try_spawn` too.
#[test]
fn try_spawn_from_a_thread_outside_the_runtime() {
    let rt = support::two_workers();
    let e = rt.block_on(async {
        BoundedExecutor::builder()
            .max_running(2)
            .queue_capacity(64)
            .build()
            .unwrap()
    });
    let handles: Vec<_> = std::thread::spawn({
        let e = e.clone();
        move || {
            (0..50u64)
                .map(|i| {
                    e.try_spawn(async move {
                        tokio::task::yield_now().await;
                        i
                    })
                    .unwrap_or_else(|_| panic!("room for all 50"))
                })
                .collect()
        }
    })
    .join()
    .unwrap();
    let sum = rt.block_on(async {
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..50).sum::<u64>());
    let report = rt.block_on(e.shutdown(Instant::now() + Duration::from_secs(5)));
    assert_eq!(report.completed, 50, "{report}");
    assert!(report.is_balanced(), "{report}");
}

/// The dispatcher waits for three permits while tasks on two worker
/// threads give them back one at a time: every heavy task still starts (a
/// lost wake-up would hang here), and the permits all come back.
#[test]
fn dispatcher_wakes_when_permits_return_one_at_a_time() {
    let rt = support::two_workers();
    rt.block_on(async {
        let e = BoundedExecutor::builder()
            .max_running(3)
            .queue_capacity(4_000)
            .build()
            .unwrap();
        let g = Arc::new(Gauge::default());
        let mut hs = Vec::new();
        for i in 0..3_000u32 {
            let w = if i % 4 == 0 { 3 } else { 1 };
            let g = g.clone();
            let h = e
                .spawn_with(TaskOptions::new().weight(w), async move {
                    let n = g.now.fetch_add(w as usize, Ordering::SeqCst) + w as usize;
                    g.peak.fetch_max(n, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    g.now.fetch_sub(w as usize, Ordering::SeqCst);
                    u64::from(w)
                })
                .await
                .unwrap_or_else(|_| panic!("room for all"));
            hs.push(h);
        }
        let mut total = 0;
        for h in hs {
            total += tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("a task never started: lost wake-up")
                .unwrap();
        }
        assert_eq!(total, 750 * 3 + 2_250);
        assert!(g.peak.load(Ordering::SeqCst) <= 3);
        let st = e.stats();
        assert_eq!(st.permits_in_use, 0, "{st:?}");
        assert_eq!(st.completed, 3_000);
    });
}

/// A runtime that shuts down drops the tasks still on it; each one gives its
/// permits back and is counted as aborted, so the counts still add up. On a
/// current-thread runtime the tasks are dropped before their first poll (the
/// spawning future never yields); on a multi-thread runtime, mostly after
/// it. Both with and without a run timeout, whose tasks are built
/// differently.
#[test]
fn tasks_dropped_by_a_dying_runtime_are_counted_and_give_permits_back() {
    for multi_thread in [false, true] {
        for run_timeout in [None, Some(Duration::from_secs(60))] {
            let rt = if multi_thread {
                support::two_workers()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            let e = rt.block_on(async {
                let mut b = BoundedExecutor::builder().max_running(4).queue_capacity(8);
                if let Some(d) = run_timeout {
                    b = b.run_timeout(d);
                }
                b.build().unwrap()
            });
            let handles = rt.block_on(async {
                let mut hs = Vec::new();
                for _ in 0..3 {
                    let h = e
                        .spawn(std::future::pending::<()>())
                        .await
                        .unwrap_or_else(|_| panic!("room"));
                    hs.push(h);
                }
                hs
            });
            assert_eq!(e.stats().permits_in_use, 3);
            drop(rt);
            let st = e.stats();
            let case = format!("multi_thread={multi_thread} run_timeout={run_timeout:?}");
            assert_eq!(st.accepted, 3, "{case}: {st:?}");
            assert_eq!(st.aborted, 3, "{case}: {st:?}");
            assert_eq!(st.permits_in_use, 0, "{case}: {st:?}");
            assert_eq!(st.running, 0, "{case}: {st:?}");
            drop(handles);
        }
    }
}

//! The job handle's result slot: every result is delivered exactly once to
//! its own handle, a dropped handle neither leaks the result nor panics the
//! worker, and panics, timeouts and shutdown still reach the handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use weft_pool::{JobError, ShutdownMode, WorkerPool};

/// A job's value: its id, and a count of live values shared by the test, so
/// a value produced twice or never freed shows up.
struct Token {
    id: usize,
    live: Arc<AtomicUsize>,
}

impl Token {
    fn new(id: usize, live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Token {
            id,
            live: live.clone(),
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Quick,
    Yield(u8),
    Panic,
}

#[derive(Debug, Clone, Copy)]
enum Await {
    /// Awaited by a task of its own (its polls race the worker's send on
    /// another thread).
    Spawned,
    /// Awaited later by the test.
    Later,
    /// Dropped right after submitting.
    Drop,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Quick),
        3 => (1u8..4).prop_map(Kind::Yield),
        1 => Just(Kind::Panic),
    ]
}

fn awaiting() -> impl Strategy<Value = Await> {
    prop_oneof![Just(Await::Spawned), Just(Await::Later), Just(Await::Drop)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// On a 2-thread runtime: each handle gets its own job's value (or
    /// `Panicked`) exactly once, handles dropped at any point do not disturb
    /// the pool, and after shutdown every value has been freed exactly once.
    #[test]
    fn each_result_reaches_its_handle_once_and_nothing_leaks(
        jobs in proptest::collection::vec((kind(), awaiting()), 1..120),
        workers in 1usize..4,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let live2 = live.clone();
        rt.block_on(async move {
            let live = live2;
            let pool = WorkerPool::builder()
                .workers(workers)
                .queue_capacity(16)
                .build()
                .unwrap();
            let mut spawned = Vec::new();
            let mut later = Vec::new();
            for (id, &(kind, awaiting)) in jobs.iter().enumerate() {
                let l = live.clone();
                let h = pool
                    .submit(async move {
                        match kind {
                            Kind::Quick => {}
                            Kind::Yield(n) => {
                                for _ in 0..n {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Kind::Panic => panic!("job {id} panics"),
                        }
                        Token::new(id, &l)
                    })
                    .await
                    .unwrap();
                match awaiting {
                    Await::Spawned => spawned.push((id, kind, tokio::spawn(h))),
                    Await::Later => later.push((id, kind, h)),
                    Await::Drop => drop(h),
                }
            }
            let mut got = Vec::new();
            for (id, kind, t) in spawned {
                got.push((id, kind, t.await.unwrap()));
            }
            for (id, kind, h) in later {
                got.push((id, kind, h.await));
            }
            for (id, kind, r) in &got {
                match (kind, r) {
                    (Kind::Panic, Err(JobError::Panicked(p))) => {
                        assert!(p.message().contains(&format!("job {id} panics")));
                    }
                    (Kind::Panic, other) => panic!("job {id}: expected Panicked, got {:?}", other.as_ref().map(|t| t.id)),
                    (_, Ok(t)) => assert_eq!(t.id, *id, "a handle got another job's value"),
                    (_, Err(e)) => panic!("job {id} failed: {e}"),
                }
            }
            let report = pool.shutdown(ShutdownMode::Drain(Duration::from_secs(10))).await;
            assert_eq!(report.accepted, jobs.len() as u64);
            // Alive now: exactly the values the test still holds.
            let held = got.iter().filter(|(_, _, r)| r.is_ok()).count();
            assert_eq!(live.load(Ordering::SeqCst), held);
            assert_eq!(held, got.iter().filter(|(_, k, _)| !matches!(k, Kind::Panic)).count());
            drop(got);
        });
        drop(rt);
        prop_assert_eq!(live.load(Ordering::SeqCst), 0, "a result was leaked or freed twice");
    }
}

/// Timeouts and panics reach the handle whether it is awaited before or
/// after the job ends, and a handle dropped while its job runs does not
/// panic anything.
#[tokio::test(start_paused = true)]
async fn timeouts_and_panics_reach_the_handle_before_or_after_they_happen() {
    let pool = WorkerPool::builder()
        .workers(3)
        .queue_capacity(8)
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let hang = pool.submit(std::future::pending::<u32>()).await.unwrap();
    let dropped = pool.submit(std::future::pending::<u32>()).await.unwrap();
    drop(dropped);
    let boom = pool
        .submit(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("late boom")
        })
        .await
        .unwrap();
    // Awaited before the timeout fires.
    assert_eq!(
        hang.await.unwrap_err(),
        JobError::TimedOut(Duration::from_millis(100))
    );
    // Awaited long after the panic happened.
    assert!(boom.is_finished());
    assert!(matches!(boom.await, Err(JobError::Panicked(p)) if p.message().contains("late boom")));
    let late = pool.submit(async { 5 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(late.is_finished());
    assert_eq!(late.await, Ok(5));
    let report = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert!(report.is_balanced());
    assert_eq!(pool.stats().timed_out, 2);
    assert_eq!(pool.stats().panicked, 1);
}

/// A job that never runs (handed back by a cancelling shutdown and dropped)
/// closes its handle with `Cancelled` and wakes a waiting caller.
#[tokio::test(start_paused = true)]
async fn a_job_that_never_runs_wakes_its_waiting_handle_with_cancelled() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(4)
        .build()
        .unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let first = pool
        .submit(async move { g.notified().await })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let queued = pool.submit(async { 1u32 }).await.unwrap();
    let waiter = tokio::spawn(queued);
    tokio::task::yield_now().await;
    let p = pool.clone();
    let shut = tokio::spawn(async move {
        p.shutdown_returning(ShutdownMode::Cancel(Duration::from_secs(1)))
            .await
    });
    tokio::task::yield_now().await;
    gate.notify_one();
    let (report, back) = shut.await.unwrap();
    assert_eq!(back.len(), 1);
    drop(back);
    assert_eq!(waiter.await.unwrap(), Err(JobError::Cancelled));
    assert_eq!(first.await, Ok(()));
    assert_eq!(report.accepted, 2);
}

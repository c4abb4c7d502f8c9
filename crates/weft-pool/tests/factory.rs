//! A failed worker is replaced (DESIGN contract 3): a worker whose state
//! factory panics retries with a backoff on tokio time, keeps its place in
//! the worker count, and still exits cleanly at shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;
use weft_pool::{BlockingPool, JobError, ShutdownMode, StatefulPool};

/// A factory that panics on the calls listed in `fail` (1-based) and
/// otherwise returns the call number as the state's id.
fn flaky(calls: Arc<AtomicU32>, fail: &'static [u32]) -> impl Fn() -> u32 + Send + Sync {
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if fail.contains(&n) {
            panic!("factory call {n} failed");
        }
        n
    }
}

async fn assert_no_task_alive(before: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..100 {
        if metrics.num_alive_tasks() <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "a worker outlived shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn a_factory_that_panics_twice_is_retried_and_every_worker_runs_jobs() {
    let calls = Arc::new(AtomicU32::new(0));
    let pool = StatefulPool::builder()
        .workers(2)
        .build_stateful(flaky(calls.clone(), &[1, 2]))
        .unwrap();
    // Two jobs that can only finish together: they need both workers.
    let barrier = Arc::new(Barrier::new(2));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let b = barrier.clone();
        handles.push(
            pool.submit(move |id: &mut u32| {
                Box::pin(async move {
                    tokio::time::timeout(Duration::from_secs(60), b.wait())
                        .await
                        .expect("both workers run a job at once");
                    *id
                })
            })
            .await
            .unwrap(),
        );
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids.sort();
    assert_eq!(
        ids,
        vec![3, 4],
        "each worker built its own state after the retries"
    );
    let s = pool.stats();
    assert_eq!(s.workers, 2);
    assert_eq!(s.factory_panics, 2);
    assert_eq!(s.succeeded, 2);
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert!(r.is_clean(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn a_rebuild_after_a_job_panic_is_retried_too() {
    let calls = Arc::new(AtomicU32::new(0));
    let pool = StatefulPool::builder()
        .workers(1)
        .build_stateful(flaky(calls.clone(), &[2]))
        .unwrap();
    let h = pool
        .submit(|_: &mut u32| Box::pin(async { panic!("job broke the state") }))
        .await
        .unwrap();
    assert!(matches!(h.await, Err(JobError::Panicked(_))));
    let t0 = tokio::time::Instant::now();
    let h = pool
        .submit(|id: &mut u32| Box::pin(async move { *id }))
        .await
        .unwrap();
    assert_eq!(h.await.unwrap(), 3, "the failed rebuild was retried");
    assert!(
        t0.elapsed() >= Duration::from_millis(10),
        "after the backoff"
    );
    let s = pool.stats();
    assert_eq!((s.workers, s.factory_panics, s.panicked), (1, 1, 1));
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert!(r.is_balanced(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn a_factory_that_always_panics_backs_off_and_shutdown_still_balances() {
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let pool = StatefulPool::builder()
        .workers(2)
        .build_stateful(|| -> u32 { panic!("no connection") })
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..3u32 {
        handles.push(
            pool.submit(move |_: &mut u32| Box::pin(async move { i }))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let s = pool.stats();
    assert_eq!(s.queued, 3, "no worker could take a job");
    assert_eq!(s.succeeded, 0);
    assert_eq!(s.workers, 2, "the workers keep their places");
    // Per worker in 10 s: attempts at 0, 10, 30, 70, 150, 310, 630 ms,
    // then one a second: about 16. A spinning retry would make millions.
    assert!(
        (20..=40).contains(&s.factory_panics),
        "backoff: {} factory panics in 10 s",
        s.factory_panics
    );
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(2)))
        .await;
    assert!(r.is_balanced(), "{r}");
    assert_eq!((r.accepted, r.returned, r.aborted), (3, 3, 0), "{r}");
    assert!(r.unfinished.is_empty(), "{r}");
    for h in handles {
        assert_eq!(h.await, Err(JobError::Cancelled));
    }
    assert_eq!(pool.stats().workers, 0);
    assert_no_task_alive(before).await;
}

#[tokio::test(start_paused = true)]
async fn a_blocking_worker_whose_factory_panics_is_replaced() {
    let calls = Arc::new(AtomicU32::new(0));
    let pool = BlockingPool::builder()
        .workers(2)
        .build_blocking_with(flaky(calls.clone(), &[1, 2]))
        .unwrap();
    // Two jobs that each wait (real time, only on failure) for the other:
    // they see each other only if both worker threads run.
    let met = Arc::new((Mutex::new(0u32), Condvar::new()));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let met = met.clone();
        handles.push(
            pool.submit(move |id: &mut u32| {
                let (n, cv) = &*met;
                let mut n = n.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let (n, _) = cv
                    .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 2)
                    .unwrap();
                (*id, *n)
            })
            .await
            .unwrap(),
        );
    }
    let mut ids = Vec::new();
    for h in handles {
        let (id, n) = h.await.unwrap();
        assert_eq!(n, 2, "both worker threads ran a job at once");
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, vec![3, 4]);
    let s = pool.stats();
    assert_eq!((s.workers, s.factory_panics), (2, 2));
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert!(r.is_clean(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn a_blocking_factory_that_always_panics_does_not_block_shutdown() {
    let pool = BlockingPool::builder()
        .workers(1)
        .build_blocking_with(|| -> u32 { panic!("no device") })
        .unwrap();
    let h = pool.submit(|id: &mut u32| *id).await.unwrap();
    // The worker thread starts in real time; wait (bounded) for its first try.
    for _ in 0..100_000 {
        if pool.stats().factory_panics >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = pool.stats();
    assert_eq!((s.queued, s.workers), (1, 1));
    assert!(s.factory_panics >= 2, "retried: {}", s.factory_panics);
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(2)))
        .await;
    assert!(r.is_balanced(), "{r}");
    assert_eq!((r.accepted, r.returned), (1, 1), "{r}");
    assert_eq!(h.await, Err(JobError::Cancelled));
    // Paused time can reach the deadline before the thread (real time) has
    // seen the cancellation; it leaves its loop right after.
    for _ in 0..100_000 {
        if pool.stats().workers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(pool.stats().workers, 0, "the worker thread left its loop");
}

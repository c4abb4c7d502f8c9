//! The async worker pool: submit forms, overflow, panics, timeouts, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use weft_core::{Drain, Overflow};
use weft_pool::{JobError, ShutdownMode, SubmitError, WorkerPool};

fn pool(workers: usize, cap: usize, overflow: Overflow) -> WorkerPool {
    WorkerPool::builder()
        .name("test")
        .workers(workers)
        .queue_capacity(cap)
        .overflow(overflow)
        .build()
        .unwrap()
}

#[tokio::test]
async fn submit_returns_the_value() {
    let p = pool(2, 8, Overflow::Block);
    let h = p.submit(async { 40 + 2 }).await.unwrap();
    assert_eq!(h.await, Ok(42));
    let s = p.stats();
    assert_eq!((s.submitted, s.succeeded, s.workers), (1, 1, 2));
}

#[tokio::test]
async fn zero_capacity_and_zero_workers_are_refused() {
    let e = WorkerPool::builder().queue_capacity(0).build().unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = WorkerPool::builder().workers(0).build().unwrap_err();
    assert_eq!(e, weft_pool::BuildError::ZeroWorkers);
    let e = WorkerPool::builder()
        .min_workers(4)
        .max_workers(2)
        .build()
        .unwrap_err();
    assert!(matches!(
        e,
        weft_pool::BuildError::MinAboveMax { min: 4, max: 2 }
    ));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    assert_eq!(
        WorkerPool::builder().build().unwrap_err(),
        weft_pool::BuildError::NoRuntime
    );
}

#[tokio::test(start_paused = true)]
async fn try_submit_hands_the_job_back_when_full() {
    let p = pool(1, 1, Overflow::Block);
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let running = p
        .submit(async move {
            g.notified().await;
            1
        })
        .await
        .unwrap();
    tokio::task::yield_now().await; // the worker takes it
    let queued = p.try_submit(async { 2 }).unwrap();
    let err = p.try_submit(async { 3 }).unwrap_err();
    assert!(matches!(err, SubmitError::Full(_)));
    assert_eq!(
        err.into_inner().await,
        3,
        "the refused job comes back intact"
    );
    assert_eq!(p.stats().rejected, 1);
    gate.notify_one();
    assert_eq!(running.await, Ok(1));
    assert_eq!(queued.await, Ok(2));
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_evicts_and_tells_the_handle() {
    let p = pool(1, 1, Overflow::DropOldest);
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let first = p
        .submit(async move {
            g.notified().await;
            1
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let old = p.submit(async { 2 }).await.unwrap();
    let new = p.submit(async { 3 }).await.unwrap();
    assert_eq!(old.await, Err(JobError::Evicted));
    gate.notify_one();
    assert_eq!(first.await, Ok(1));
    assert_eq!(new.await, Ok(3));
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert_eq!((r.accepted, r.completed, r.returned), (3, 2, 1));
    assert!(r.is_balanced(), "{r}");
    assert_eq!(p.stats().dropped, 1);
}

#[tokio::test(start_paused = true)]
async fn drop_newest_sheds_the_new_job() {
    let p = pool(1, 1, Overflow::DropNewest);
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let _first = p.submit(async move { g.notified().await }).await.unwrap();
    tokio::task::yield_now().await;
    let _q = p.submit(async {}).await.unwrap();
    assert!(matches!(
        p.submit(async {}).await,
        Err(SubmitError::Dropped(_))
    ));
    assert_eq!(p.stats().dropped, 1);
    gate.notify_one();
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_gives_up_with_the_job() {
    let p = pool(1, 1, Overflow::WaitTimeout(Duration::from_millis(50)));
    let _a = p.submit(sleep(Duration::from_secs(10))).await.unwrap();
    tokio::task::yield_now().await;
    let _b = p.submit(async {}).await.unwrap();
    let start = Instant::now();
    assert!(matches!(
        p.submit(async {}).await,
        Err(SubmitError::Timeout(_))
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn backpressure_blocks_the_producer() {
    let p = pool(1, 2, Overflow::Block);
    for _ in 0..3 {
        p.execute(sleep(Duration::from_secs(1))).await.unwrap();
    }
    // 1 running + 2 queued: the next submit must wait for room.
    let p2 = p.clone();
    let blocked = tokio::spawn(async move { p2.execute(async {}).await.is_ok() });
    sleep(Duration::from_millis(500)).await;
    assert!(
        !blocked.is_finished(),
        "submit must wait while the queue is full"
    );
    assert!(p.stats().queued <= 2, "memory stays bounded");
    sleep(Duration::from_millis(600)).await;
    assert!(blocked.await.unwrap());
}

#[tokio::test]
async fn dropped_submit_future_neither_loses_nor_duplicates() {
    let p = pool(1, 1, Overflow::Block);
    let runs = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    p.execute(async move { g.notified().await }).await.unwrap();
    tokio::task::yield_now().await;
    p.execute(async {}).await.unwrap(); // fills the queue
    let r = runs.clone();
    {
        let fut = p.submit(async move { r.fetch_add(1, Ordering::SeqCst) });
        // Poll once (it waits for room), then drop it.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), fut)
                .await
                .is_err()
        );
    }
    // A submit that completes runs exactly once.
    gate.notify_one();
    let r = runs.clone();
    p.submit(async move { r.fetch_add(1, Ordering::SeqCst) })
        .await
        .unwrap()
        .await
        .unwrap();
    let report = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the dropped submit's job never ran"
    );
    assert_eq!(
        report.accepted, 3,
        "the dropped submit was never accepted: {report}"
    );
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn a_panicking_job_fails_its_handle_and_the_pool_keeps_its_workers() {
    let p = pool(2, 8, Overflow::Block);
    let h = p.submit(async { panic!("bad input {}", 7) }).await.unwrap();
    match h.await {
        Err(JobError::Panicked(e)) => assert_eq!(e.message(), "bad input 7"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(p.submit(async { 5 }).await.unwrap().await, Ok(5));
    let s = p.stats();
    assert_eq!((s.panicked, s.failed, s.succeeded, s.workers), (1, 1, 1, 2));
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    assert_eq!((r.completed, r.failed), (1, 1));
    assert!(r.is_clean());
}

#[tokio::test(start_paused = true)]
async fn per_job_timeout() {
    let p = WorkerPool::builder()
        .workers(1)
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let slow = p.submit(sleep(Duration::from_secs(5))).await.unwrap();
    let fast = p.submit(async { 1 }).await.unwrap();
    let start = Instant::now();
    assert_eq!(
        slow.await,
        Err(JobError::TimedOut(Duration::from_millis(100)))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(fast.await, Ok(1));
    assert_eq!(p.stats().timed_out, 1);
}

#[tokio::test]
async fn batches_run_in_order_with_per_job_panics() {
    let p = pool(2, 4, Overflow::Block);
    let h = p
        .submit_batch((0..10u32).map(|i| async move {
            if i == 3 {
                panic!("three");
            }
            i * 2
        }))
        .await
        .unwrap();
    assert_eq!(h.len(), 10);
    let out = h.await;
    assert_eq!(out.len(), 10);
    for (i, r) in out.iter().enumerate() {
        if i == 3 {
            assert!(matches!(r, Err(JobError::Panicked(_))));
        } else {
            assert_eq!(r, &Ok(i as u32 * 2));
        }
    }
    p.execute_batch((0..5).map(|_| async {})).await.unwrap();
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    assert_eq!((r.accepted, r.completed, r.failed), (15, 14, 1));
    assert!(r.is_clean(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn submit_after_shutdown_is_closed_with_the_job() {
    let p = pool(1, 4, Overflow::Block);
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert!(r.is_clean());
    let err = p.submit(async { 9 }).await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner().await, 9);
    assert!(p.try_execute(async {}).unwrap_err().is_closed());
    let again = p
        .shutdown(ShutdownMode::Cancel(Duration::from_secs(1)))
        .await;
    assert_eq!(
        again.rejected_after_close, 0,
        "the first report is returned again"
    );
    assert_eq!(p.stats().rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn drain_finishes_everything_queued() {
    let p = pool(2, 100, Overflow::Block);
    let done = Arc::new(AtomicU64::new(0));
    for _ in 0..20 {
        let d = done.clone();
        p.execute(async move {
            sleep(Duration::from_millis(10)).await;
            d.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    }
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(10)))
        .await;
    assert_eq!(done.load(Ordering::SeqCst), 20);
    assert_eq!((r.accepted, r.completed), (20, 20));
    assert!(r.is_clean(), "{r}");
    assert_eq!(p.stats().workers, 0);
}

#[tokio::test(start_paused = true)]
async fn cancel_returns_queued_jobs_and_finishes_running_ones() {
    let p = pool(1, 10, Overflow::Block);
    let running = p
        .submit(async {
            sleep(Duration::from_millis(100)).await;
            "ran"
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let queued: Vec<_> =
        futures::future::join_all((0..3).map(|i| p.submit(async move { i }))).await;
    let (r, back) = p
        .shutdown_returning(ShutdownMode::Cancel(Duration::from_secs(5)))
        .await;
    assert_eq!(running.await, Ok("ran"));
    assert_eq!((r.accepted, r.completed, r.returned), (4, 1, 3));
    assert!(r.is_clean(), "{r}");
    assert_eq!(back.len(), 3);
    // Run one returned job elsewhere: its original handle gets the value.
    let mut back = back.into_iter();
    back.next().unwrap().run().await;
    drop(back);
    let mut handles = queued.into_iter().map(Result::unwrap);
    assert_eq!(handles.next().unwrap().await, Ok(0));
    assert_eq!(handles.next().unwrap().await, Err(JobError::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cancels_then_aborts() {
    let p = WorkerPool::builder()
        .workers(2)
        .cancel_grace(Duration::from_millis(100))
        .build()
        .unwrap();
    let token = p.cancellation_token();
    // One job stops when asked; the other ignores the token.
    let polite = p
        .submit(async move {
            token.cancelled().await;
            "stopped"
        })
        .await
        .unwrap();
    let stubborn = p.submit(sleep(Duration::from_secs(3600))).await.unwrap();
    tokio::task::yield_now().await;
    let start = Instant::now();
    let r = p.drain(Instant::now() + Duration::from_secs(1)).await;
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(polite.await, Ok("stopped"));
    assert_eq!(stubborn.await, Err(JobError::Cancelled));
    assert_eq!((r.accepted, r.cancelled, r.aborted), (2, 1, 1));
    assert!(r.is_balanced(), "{r}");
    assert_eq!(r.unfinished.len(), 1, "{r}");
    assert_eq!(p.stats().workers, 0);
}

#[tokio::test]
async fn dropping_every_clone_closes_admission_and_finishes_queued_jobs() {
    let p = pool(1, 8, Overflow::Block);
    let h = p.submit(async { 1 }).await.unwrap();
    drop(p);
    assert_eq!(h.await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_alive_after_shutdown() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let p = pool(4, 64, Overflow::Block);
    for i in 0..100u64 {
        p.execute(async move { i }).await.unwrap();
    }
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(10)))
        .await;
    assert!(r.is_clean());
    // Aborted/finished tasks are reaped by the runtime shortly after.
    for _ in 0..100 {
        if metrics.num_alive_tasks() <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(metrics.num_alive_tasks(), before);
}

#[tokio::test(start_paused = true)]
async fn resize_while_jobs_run() {
    let p = pool(2, 100, Overflow::Block);
    for _ in 0..20 {
        p.execute(sleep(Duration::from_millis(10))).await.unwrap();
    }
    assert_eq!(p.resize(5), 5);
    assert_eq!(p.stats().workers, 5);
    p.resize(1);
    sleep(Duration::from_millis(100)).await;
    assert_eq!(p.stats().workers, 1);
    let r = p
        .shutdown(ShutdownMode::Drain(Duration::from_secs(10)))
        .await;
    assert_eq!(r.completed, 20);
    assert!(r.is_clean(), "{r}");
}

/// A guard that panics if it is dropped before its job finished (a "drop
/// bomb": a transaction that must be committed or rolled back). Dropping a
/// timed-out job drops it, so its panic comes from the drop, not the poll.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("guard dropped before the job finished");
        }
    }
}

/// Guards the panic boundary around a job's drop: a timed-out job whose
/// drop panics gets `TimedOut` (counted once), and the worker survives and
/// runs the next job (it used to unwind the worker, never replaced: a pool
/// with no workers).
#[tokio::test(start_paused = true)]
async fn a_job_that_panics_when_dropped_at_its_timeout_does_not_kill_the_worker() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(8)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let h = pool
        .submit(async {
            let _guard = Bomb;
            std::future::pending::<()>().await
        })
        .await
        .unwrap();
    assert!(matches!(h.await, Err(JobError::TimedOut(_))));
    let next = pool.submit(async { 7 }).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), next).await;
    assert_eq!(
        pool.stats().workers,
        1,
        "the pool's only worker died and was not replaced"
    );
    assert_eq!(r.expect("the next job never ran"), Ok(7));
    let s = pool.stats();
    assert_eq!((s.timed_out, s.panicked, s.succeeded), (1, 0, 1), "{s:?}");
    let report = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert!(report.is_clean(), "{report}");
}

/// A value whose drop panics: the output of a job nobody reads.
struct PanicsOnDrop(u32);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("output {} dropped unread", self.0);
        }
    }
}

/// Guards the panic boundary around an unread output: a fire-and-forget
/// job (single or batched) whose output panics when the worker drops it is
/// counted as that job's panic, and the worker survives.
#[tokio::test(start_paused = true)]
async fn an_unread_output_that_panics_when_dropped_is_the_jobs_panic() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(8)
        .build()
        .unwrap();
    pool.execute(async { PanicsOnDrop(1) }).await.unwrap();
    // A handle dropped before the job ran: its output is dropped unread too.
    drop(pool.submit(async { PanicsOnDrop(2) }).await.unwrap());
    pool.execute_batch((3..5).map(|i| async move { PanicsOnDrop(i) }))
        .await
        .unwrap();
    let next = pool.submit(async { 7 }).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), next).await;
    assert_eq!(r.expect("the next job never ran"), Ok(7));
    let s = pool.stats();
    assert_eq!((s.workers, s.panicked, s.succeeded), (1, 4, 1), "{s:?}");
    let report = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert_eq!(report.accepted, 5);
    assert!(report.is_balanced(), "{report}");
}

/// Guards the same boundary in a batch: a batched job whose drop panics at
/// its timeout gets `TimedOut` in its slot, the rest of the batch runs, and
/// the worker survives.
#[tokio::test(start_paused = true)]
async fn a_batched_job_that_panics_when_dropped_at_its_timeout_does_not_kill_the_worker() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(8)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let jobs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>> = vec![
        Box::pin(async {
            let _guard = Bomb;
            std::future::pending::<u32>().await
        }),
        Box::pin(async { 2 }),
    ];
    let b = pool.submit_batch(jobs).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), b)
        .await
        .expect("the batch never finished");
    assert!(matches!(r[0], Err(JobError::TimedOut(_))), "{r:?}");
    assert_eq!(r[1], Ok(2));
    let next = pool.submit(async { 7 }).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), next).await;
    assert_eq!(r.expect("the next job never ran"), Ok(7));
    let s = pool.stats();
    assert_eq!((s.workers, s.timed_out, s.panicked), (1, 1, 0), "{s:?}");
}

/// Guards against an overflow when the shutdown deadline is computed:
/// `Drain(Duration::MAX)` (wait as long as it takes) used to panic with
/// "overflow when adding duration to instant".
#[tokio::test(start_paused = true)]
async fn shutdown_with_duration_max_does_not_panic() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    assert_eq!(pool.submit(async { 1 }).await.unwrap().await, Ok(1));
    let p = pool.clone();
    let r = tokio::spawn(async move { p.shutdown(ShutdownMode::Drain(Duration::MAX)).await }).await;
    let report = r.expect("shutdown(Drain(Duration::MAX)) panicked");
    assert!(report.is_clean(), "{report}");
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let (report, back) = pool
        .shutdown_returning(ShutdownMode::Cancel(Duration::MAX))
        .await;
    assert!(report.is_clean() && back.is_empty(), "{report}");
}

/// A runtime dropped while an unrelated panic unwinds (a failing test, a
/// panicking `main`) drops the pool's workers with `thread::panicking()`
/// true: that is not a worker panic, so no replacement is started on the
/// dying runtime, and a later shutdown finds no worker left to wait for.
#[test]
fn a_runtime_dropped_during_an_unrelated_panic_starts_no_replacements() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let pool = WorkerPool::builder().workers(2).build().unwrap();
        assert_eq!(pool.submit(async { 1 }).await.unwrap().await, Ok(1));
        pool
    });
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _rt = rt;
        panic!("an unrelated failure");
    }));
    assert!(unwound.is_err());
    assert_eq!(pool.stats().workers, 0, "{:?}", pool.stats());
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let report = rt2.block_on(pool.shutdown(ShutdownMode::Drain(Duration::from_secs(30))));
    assert!(report.is_balanced(), "{report}");
    assert!(report.unfinished.is_empty(), "{report}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

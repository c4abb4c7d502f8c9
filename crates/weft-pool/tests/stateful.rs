//! Stateful workers (async and blocking) and the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use weft_core::{Overflow, ShutdownReport};
use weft_pool::{BlockingPool, BuildError, JobError, ShutdownMode, StatefulPool, SubmitError};

#[derive(Debug)]
struct Conn {
    id: u32,
    uses: u32,
}

#[tokio::test]
async fn each_worker_owns_a_state_rebuilt_after_a_panic() {
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let pool = StatefulPool::builder()
        .workers(1)
        .build_stateful(move || Conn {
            id: b.fetch_add(1, Ordering::SeqCst),
            uses: 0,
        })
        .unwrap();
    for _ in 0..3 {
        pool.submit(|c: &mut Conn| Box::pin(async move { c.uses += 1 }))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let h = pool
        .submit(|c: &mut Conn| Box::pin(async move { (c.id, c.uses) }))
        .await
        .unwrap();
    assert_eq!(h.await.unwrap(), (0, 3), "one state, reused across jobs");
    let h = pool
        .submit(|c: &mut Conn| {
            Box::pin(async move {
                c.uses = 99;
                panic!("connection broke");
            })
        })
        .await
        .unwrap();
    assert!(matches!(h.await, Err(JobError::Panicked(_))));
    let h = pool
        .submit(|c: &mut Conn| Box::pin(async move { (c.id, c.uses) }))
        .await
        .unwrap();
    assert_eq!(
        h.await.unwrap(),
        (1, 0),
        "the state was rebuilt after the panic"
    );
    assert_eq!(pool.stats().workers, 1);
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert_eq!((r.completed, r.failed), (5, 1));
    assert!(r.is_clean(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn stateful_jobs_time_out() {
    let pool = StatefulPool::builder()
        .workers(1)
        .timeout(Duration::from_millis(10))
        .build_stateful(|| 0u32)
        .unwrap();
    let h = pool
        .submit(|_: &mut u32| {
            Box::pin(async move { tokio::time::sleep(Duration::from_secs(1)).await })
        })
        .await
        .unwrap();
    assert_eq!(h.await, Err(JobError::TimedOut(Duration::from_millis(10))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn blocking_jobs_run_on_dedicated_threads_and_never_starve_tokio() {
    let pool = BlockingPool::builder()
        .name("cpu")
        .workers(2)
        .build_blocking()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Two jobs that block their threads until told to stop.
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let mut hs = Vec::new();
    for _ in 0..2 {
        let rx = rx.clone();
        hs.push(
            pool.submit(move |_: &mut ()| {
                let _ = rx.lock().unwrap().recv();
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .unwrap(),
        );
    }
    // tokio's only worker thread is still free to run this:
    let t = tokio::spawn(async { 7 }).await.unwrap();
    assert_eq!(t, 7);
    tx.send(()).unwrap();
    tx.send(()).unwrap();
    for h in hs {
        let name = h.await.unwrap().unwrap();
        assert!(name.starts_with("cpu-"), "{name}");
    }
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    assert!(r.is_clean(), "{r}");
    assert_eq!(pool.stats().workers, 0);
}

#[tokio::test]
async fn blocking_state_is_rebuilt_after_a_panic_and_batches_work() {
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let pool = BlockingPool::builder()
        .workers(1)
        .build_blocking_with(move || (n2.fetch_add(1, Ordering::SeqCst), Vec::<u32>::new()))
        .unwrap();
    let out = pool
        .submit_batch((0..4u32).map(|i| {
            move |st: &mut (u32, Vec<u32>)| {
                if i == 2 {
                    panic!("bad");
                }
                st.1.push(i);
                (st.0, st.1.len())
            }
        }))
        .await
        .unwrap()
        .await;
    assert_eq!(out[0], Ok((0, 1)));
    assert_eq!(out[1], Ok((0, 2)));
    assert!(matches!(out[2], Err(JobError::Panicked(_))));
    assert_eq!(
        out[3],
        Ok((0, 3)),
        "the batch finishes on the state it started with"
    );
    let h = pool
        .submit(|st: &mut (u32, Vec<u32>)| (st.0, st.1.len()))
        .await
        .unwrap();
    assert_eq!(
        h.await.unwrap(),
        (1, 0),
        "rebuilt after the batch with a panic"
    );
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    assert_eq!((r.accepted, r.completed, r.failed), (5, 4, 1));
}

#[tokio::test]
async fn blocking_pools_refuse_a_timeout() {
    let e = BlockingPool::builder()
        .timeout(Duration::from_secs(1))
        .build_blocking()
        .unwrap_err();
    assert_eq!(e, BuildError::TimeoutOnBlocking);
}

#[tokio::test]
async fn blocking_try_submit_returns_the_closure() {
    let pool = BlockingPool::builder().workers(1).build_blocking().unwrap();
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    let err = pool.try_submit(|_: &mut ()| 5).unwrap_err();
    assert!(err.is_closed());
    assert_eq!((err.into_inner())(&mut ()), 5);
}

// ---- StatefulPool::submit_batch ----

type Job<St, T> = Box<dyn for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send>;

/// A batched job that appends `i` to its worker's log and reports what it saw.
fn log_job(i: u32) -> Job<(u32, Vec<u32>), (u32, Vec<u32>)> {
    Box::new(move |st: &mut (u32, Vec<u32>)| {
        Box::pin(async move {
            st.1.push(i);
            (st.0, st.1.clone())
        })
    })
}

fn numbered() -> (
    Arc<AtomicU32>,
    impl Fn() -> (u32, Vec<u32>) + Send + Sync + 'static,
) {
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    (built, move || {
        (b.fetch_add(1, Ordering::SeqCst), Vec::new())
    })
}

/// accepted = completed + failed (incl. panicked and timed out) + cancelled
/// + aborted + returned.
fn balanced(r: &ShutdownReport) {
    assert_eq!(
        r.accepted,
        r.completed + r.failed + r.cancelled + r.aborted + r.returned,
        "{r}"
    );
}

#[tokio::test]
async fn stateful_batch_results_come_back_in_order_on_one_workers_state() {
    let (_, factory) = numbered();
    let pool = StatefulPool::builder()
        .workers(2)
        .build_stateful(factory)
        .unwrap();
    let h = pool.submit_batch((0..5).map(log_job)).await.unwrap();
    assert_eq!(h.len(), 5);
    let out: Vec<_> = h.await.into_iter().map(Result::unwrap).collect();
    let id = out[0].0;
    for (i, (sid, log)) in out.iter().enumerate() {
        assert_eq!(*sid, id, "every job of a batch runs on one worker's state");
        assert_eq!(log, &(0..=i as u32).collect::<Vec<_>>(), "in order");
    }
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert_eq!((r.accepted, r.completed), (5, 5));
    assert!(r.is_clean(), "{r}");
    balanced(&r);
}

#[tokio::test]
async fn a_panic_in_a_stateful_batch_fails_that_job_and_the_state_is_rebuilt() {
    let (built, factory) = numbered();
    let pool = StatefulPool::builder()
        .workers(1)
        .build_stateful(factory)
        .unwrap();
    let jobs: Vec<Job<_, _>> = vec![
        log_job(0),
        log_job(1),
        Box::new(|st: &mut (u32, Vec<u32>)| {
            Box::pin(async move {
                st.1.push(99);
                panic!("connection broke");
            })
        }),
        log_job(3),
    ];
    let out = pool.submit_batch(jobs).await.unwrap().await;
    assert_eq!(out[0], Ok((0, vec![0])));
    assert_eq!(out[1], Ok((0, vec![0, 1])));
    assert!(matches!(out[2], Err(JobError::Panicked(_))), "{:?}", out[2]);
    assert_eq!(
        out[3],
        Ok((0, vec![0, 1, 99, 3])),
        "as in BlockingPool, the batch finishes on the state it started with"
    );
    let h = pool.submit(log_job(7)).await.unwrap();
    assert_eq!(
        h.await.unwrap(),
        (1, vec![7]),
        "rebuilt once the batch with a panic is done"
    );
    assert_eq!(built.load(Ordering::SeqCst), 2);
    let st = pool.stats();
    assert_eq!((st.submitted, st.succeeded, st.panicked), (5, 4, 1));
    assert_eq!(st.failed, 1, "failed includes panicked");
    assert_eq!(st.workers, 1);
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    assert_eq!((r.accepted, r.completed, r.failed), (5, 4, 1));
    balanced(&r);
}

#[tokio::test(start_paused = true)]
async fn a_stateful_batch_times_out_each_job_on_its_own() {
    let (built, factory) = numbered();
    let pool = StatefulPool::builder()
        .workers(1)
        .timeout(Duration::from_millis(10))
        .build_stateful(factory)
        .unwrap();
    let jobs: Vec<Job<_, _>> = vec![
        // Each job gets the whole timeout: three 8 ms jobs all finish.
        Box::new(|st: &mut (u32, Vec<u32>)| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(8)).await;
                st.1.push(0);
                (st.0, st.1.clone())
            })
        }),
        Box::new(|st: &mut (u32, Vec<u32>)| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                (st.0, st.1.clone())
            })
        }),
        Box::new(|st: &mut (u32, Vec<u32>)| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(8)).await;
                st.1.push(2);
                (st.0, st.1.clone())
            })
        }),
    ];
    let out = pool.submit_batch(jobs).await.unwrap().await;
    assert_eq!(out[0], Ok((0, vec![0])));
    assert_eq!(out[1], Err(JobError::TimedOut(Duration::from_millis(10))));
    assert_eq!(out[2], Ok((0, vec![0, 2])));
    let h = pool.submit(log_job(5)).await.unwrap();
    assert_eq!(h.await.unwrap(), (1, vec![5]), "rebuilt after a timeout");
    assert_eq!(built.load(Ordering::SeqCst), 2);
    let st = pool.stats();
    assert_eq!((st.succeeded, st.timed_out, st.failed), (3, 1, 1));
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    balanced(&r);
}

/// Submits a job that holds the only worker for `d`, and waits until the
/// worker has taken it.
async fn occupy(pool: &StatefulPool<(u32, Vec<u32>)>, d: Duration) {
    pool.execute(move |_: &mut (u32, Vec<u32>)| Box::pin(tokio::time::sleep(d)))
        .await
        .unwrap();
    while pool.stats().queued > 0 || pool.stats().running == 0 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_stateful_batch_hands_its_jobs_back() {
    let (_, factory) = numbered();
    let pool = StatefulPool::builder()
        .workers(1)
        .queue_capacity(1)
        .overflow(Overflow::Reject)
        .build_stateful(factory)
        .unwrap();
    occupy(&pool, Duration::from_secs(1)).await;
    let filler = pool.try_submit(log_job(9)).unwrap();
    let err = pool.submit_batch((0..3).map(log_job)).await.unwrap_err();
    assert!(matches!(err, SubmitError::Full(_)), "{err:?}");
    let jobs = err.into_inner();
    assert_eq!(jobs.len(), 3, "the whole batch comes back");
    // The jobs that came back still run, here, in order.
    let mut st = (7, Vec::new());
    for job in jobs {
        job(&mut st).await;
    }
    assert_eq!(st.1, [0, 1, 2]);
    assert_eq!(pool.stats().rejected, 3, "counted per job");
    assert_eq!(filler.await.unwrap(), (0, vec![9]));

    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    let err = pool.submit_batch((0..2).map(log_job)).await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner().len(), 2);
    let err = pool.execute_batch((0..2).map(log_job)).await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner().len(), 2);
    assert_eq!((r.accepted, r.completed), (2, 2));
    balanced(&r);
    let st = pool.stats();
    assert_eq!(st.rejected, 7);
}

#[tokio::test(start_paused = true)]
async fn a_stateful_batch_queued_at_a_cancelling_shutdown_is_returned() {
    let (_, factory) = numbered();
    let pool = StatefulPool::builder()
        .workers(1)
        .build_stateful(factory)
        .unwrap();
    occupy(&pool, Duration::from_millis(100)).await;
    let h = pool.submit_batch((0..3).map(log_job)).await.unwrap();
    pool.execute_batch((3..5).map(log_job)).await.unwrap();
    assert_eq!(pool.stats().queued, 2, "two batches, two queue items");
    let r = pool
        .shutdown(ShutdownMode::Cancel(Duration::from_secs(10)))
        .await;
    assert_eq!(h.await, vec![Err(JobError::Cancelled); 3]);
    assert_eq!((r.accepted, r.completed, r.returned), (6, 1, 5));
    assert_eq!(pool.stats().returned, 5);
    balanced(&r);
}

#[tokio::test(start_paused = true)]
async fn a_stateful_batch_cut_off_at_the_deadline_counts_its_unrun_jobs_as_aborted() {
    let (_, factory) = numbered();
    let pool = StatefulPool::builder()
        .workers(1)
        .build_stateful(factory)
        .unwrap();
    let jobs: Vec<Job<_, _>> = vec![
        log_job(0),
        // Ignores the cancellation token: aborted at the deadline.
        Box::new(|st: &mut (u32, Vec<u32>)| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                (st.0, st.1.clone())
            })
        }),
        log_job(2),
    ];
    let h = pool.submit_batch(jobs).await.unwrap();
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
        .await;
    let out = h.await;
    assert_eq!(out[0], Ok((0, vec![0])));
    assert_eq!(
        &out[1..],
        &[Err(JobError::Cancelled), Err(JobError::Cancelled)]
    );
    assert_eq!((r.accepted, r.completed, r.aborted), (3, 1, 2), "{r}");
    balanced(&r);
}

// ---- panics when a job is dropped ----

/// A guard that panics if it is dropped before its job finished.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("guard dropped before the job finished");
        }
    }
}

/// A value whose drop panics: the output of a job nobody reads.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("output dropped unread");
        }
    }
}

/// The state the worker hands the next job (the pool's one worker must
/// still be alive: the job has a minute of paused time to run).
async fn next_state(pool: &StatefulPool<u32>) -> u32 {
    let next = pool
        .submit(|id: &mut u32| Box::pin(async move { *id }))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), next)
        .await
        .expect("the next job never ran")
        .unwrap()
}

/// Guards the panic boundary around the drop of a stateful job: a job whose
/// future panics when it is dropped at its timeout gets `TimedOut` (counted
/// once), the worker survives and its state is rebuilt.
#[tokio::test(start_paused = true)]
async fn a_stateful_job_that_panics_when_dropped_at_its_timeout_does_not_kill_the_worker() {
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let pool = StatefulPool::builder()
        .workers(1)
        .timeout(Duration::from_secs(1))
        .build_stateful(move || b.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    let h = pool
        .submit(|_: &mut u32| {
            Box::pin(async move {
                let _guard = Bomb;
                std::future::pending::<u32>().await
            })
        })
        .await
        .unwrap();
    assert_eq!(h.await, Err(JobError::TimedOut(Duration::from_secs(1))));
    assert_eq!(next_state(&pool).await, 1, "state rebuilt");
    let s = pool.stats();
    assert_eq!((s.workers, s.timed_out, s.panicked), (1, 1, 0), "{s:?}");
}

/// Guards the panic boundary around a stateful job's unread output: it
/// counts as that job's panic, the worker survives and rebuilds its state.
#[tokio::test(start_paused = true)]
async fn a_stateful_jobs_unread_output_that_panics_when_dropped_is_the_jobs_panic() {
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let pool = StatefulPool::builder()
        .workers(1)
        .build_stateful(move || b.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    pool.execute(|_: &mut u32| Box::pin(async { PanicsOnDrop }))
        .await
        .unwrap();
    assert_eq!(next_state(&pool).await, 1, "state rebuilt");
    let s = pool.stats();
    assert_eq!((s.workers, s.panicked, s.succeeded), (1, 1, 1), "{s:?}");
}

/// Guards the panic boundary around a blocking job's unread output: it
/// counts as that job's panic, and the worker thread survives and rebuilds
/// its state.
#[tokio::test]
async fn a_blocking_jobs_unread_output_that_panics_when_dropped_is_the_jobs_panic() {
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let pool = BlockingPool::builder()
        .workers(1)
        .build_blocking_with(move || b.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    pool.execute(|_: &mut u32| PanicsOnDrop).await.unwrap();
    let next = pool.submit(|id: &mut u32| *id).await.unwrap();
    // Real time (the worker is a thread); only waits if the worker died.
    let r = tokio::time::timeout(Duration::from_secs(10), next).await;
    assert_eq!(r.expect("the next job never ran"), Ok(1), "state rebuilt");
    let s = pool.stats();
    assert_eq!((s.workers, s.panicked, s.succeeded), (1, 1, 1), "{s:?}");
    let r = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    balanced(&r);
}

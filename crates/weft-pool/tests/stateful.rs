//! Stateful workers (async and blocking) and the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weft_pool::{BlockingPool, BuildError, JobError, ShutdownMode, StatefulPool};

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

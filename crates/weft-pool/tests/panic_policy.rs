//! `Builder::panic_policy`: what a panicking job does beyond being caught,
//! counted and logged, on every kind of pool and through the tower service.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use weft_core::{BoxError, Overflow, PanicPolicy};
use weft_pool::service::PoolLayer;
use weft_pool::{JobError, ShutdownMode, WorkerPool};

/// Awaits `fut` in a task of its own and returns the message it panicked
/// with (it must panic).
async fn panic_message<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> String {
    let err = tokio::spawn(fut)
        .await
        .err()
        .expect("awaiting the handle should have panicked");
    let payload = err.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .expect("a panic message")
}

/// A job that never finishes and panics when dropped.
struct DropBomb;

impl Future for DropBomb {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("bomb dropped");
    }
}

/// An output that panics when dropped.
struct OutputBomb;

impl Drop for OutputBomb {
    fn drop(&mut self) {
        panic!("output dropped");
    }
}

/// A pool of one worker kept busy (for an hour of paused time) and one job
/// queued behind it whose future panics when dropped.
async fn busy_pool_with_a_bomb_queued(policy: PanicPolicy, overflow: Overflow) -> WorkerPool {
    let pool = builder(policy)
        .queue_capacity(1)
        .overflow(overflow)
        .build()
        .unwrap();
    pool.execute(tokio::time::sleep(Duration::from_secs(3600)))
        .await
        .unwrap();
    // Let the worker take the sleeper, so the bomb waits in the queue.
    tokio::task::yield_now().await;
    pool.execute(DropBomb).await.unwrap();
    pool
}

fn builder(policy: PanicPolicy) -> weft_pool::Builder {
    WorkerPool::builder().workers(1).panic_policy(policy)
}

#[tokio::test]
async fn propagate_panics_where_a_job_handle_is_awaited_and_the_worker_carries_on() {
    let pool = builder(PanicPolicy::Propagate).build().unwrap();
    let h = pool.submit(async { panic!("boom") }).await.unwrap();
    assert_eq!(panic_message(h).await, "boom");
    // Counted once, where it happened; the worker runs the next job.
    assert_eq!(pool.submit(async { 7 }).await.unwrap().await, Ok(7));
    let s = pool.stats();
    assert_eq!((s.panicked, s.succeeded), (1, 1));
    // A job's own error is its output, not a panic: it comes back.
    let h = pool.submit(async { Err::<u8, _>("no") }).await.unwrap();
    assert_eq!(h.await, Ok(Err("no")));
}

#[tokio::test]
async fn propagate_panics_a_batch_handle_with_its_first_panic() {
    let pool = builder(PanicPolicy::Propagate).build().unwrap();
    let jobs: Vec<BoxFuture<'static, u32>> = vec![
        Box::pin(async { 1 }),
        Box::pin(async { panic!("first") }),
        Box::pin(async { panic!("second") }),
    ];
    let h = pool.submit_batch(jobs).await.unwrap();
    assert_eq!(panic_message(h).await, "first");
    let s = pool.stats();
    assert_eq!((s.succeeded, s.panicked), (1, 2));
    // A batch without a panic resolves as usual.
    let jobs: Vec<BoxFuture<'static, u32>> = vec![Box::pin(async { 1 }), Box::pin(async { 2 })];
    let out = pool.submit_batch(jobs).await.unwrap().await;
    assert_eq!(out, vec![Ok(1), Ok(2)]);
}

#[tokio::test]
async fn propagate_applies_to_blocking_and_stateful_pools() {
    let blocking = builder(PanicPolicy::Propagate).build_blocking().unwrap();
    let h = blocking
        .submit(|_: &mut ()| -> u8 { panic!("blocking boom") })
        .await
        .unwrap();
    assert_eq!(panic_message(h).await, "blocking boom");
    assert_eq!(blocking.submit(|_: &mut ()| 3).await.unwrap().await, Ok(3));
    assert_eq!(blocking.stats().panicked, 1);

    let stateful = builder(PanicPolicy::Propagate)
        .build_stateful(|| 0u32)
        .unwrap();
    let h = stateful
        .submit(|_: &mut u32| -> BoxFuture<'_, u8> { Box::pin(async { panic!("stateful boom") }) })
        .await
        .unwrap();
    assert_eq!(panic_message(h).await, "stateful boom");
    let h = stateful
        .submit(|n: &mut u32| -> BoxFuture<'_, u32> {
            Box::pin(async move {
                *n += 1;
                *n
            })
        })
        .await
        .unwrap();
    assert_eq!(h.await, Ok(1), "the worker carries on");
    assert_eq!(stateful.stats().panicked, 1);
}

#[tokio::test]
async fn propagate_panics_through_the_tower_service() {
    let pool = builder(PanicPolicy::Propagate).build().unwrap();
    let mut svc = PoolLayer::new(pool.clone()).layer(service_fn(|x: i32| async move {
        if x < 0 {
            panic!("negative input");
        }
        Ok::<_, BoxError>(x)
    }));
    let fut = svc.ready().await.unwrap().call(-1);
    assert_eq!(panic_message(fut).await, "negative input");
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(pool.stats().panicked, 1);
}

#[tokio::test]
async fn report_is_the_default_and_hands_back_the_panic_as_an_error() {
    for pool in [
        WorkerPool::builder().workers(1).build().unwrap(),
        builder(PanicPolicy::Report).build().unwrap(),
    ] {
        let h = pool.submit(async { panic!("boom") }).await.unwrap();
        match h.await {
            Err(JobError::Panicked(p)) => assert_eq!(p.message(), "boom"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(pool.stats().panicked, 1);
    }
}

/// `execute` has no handle: under `Propagate` its panic is reported (counted
/// and logged), and nothing panics anywhere else.
#[tokio::test]
async fn propagate_reports_a_job_nobody_awaits() {
    let pool = builder(PanicPolicy::Propagate).build().unwrap();
    pool.execute(async { panic!("unseen") }).await.unwrap();
    let dropped = pool
        .submit(async { panic!("dropped handle") })
        .await
        .unwrap();
    drop(dropped);
    // The single worker runs jobs in order: this one ends after both.
    assert_eq!(pool.submit(async { 1 }).await.unwrap().await, Ok(1));
    let s = pool.stats();
    assert_eq!((s.panicked, s.succeeded), (2, 1));
}

/// A job that never ran and panics when dropped (handed back by a
/// cancelling shutdown, or evicted) is dropped inside a boundary: neither
/// the caller of `shutdown` nor the evicting submitter sees the panic.
#[tokio::test(start_paused = true)]
async fn a_never_run_job_panicking_when_dropped_reaches_neither_shutdown_nor_submitter() {
    let pool = busy_pool_with_a_bomb_queued(PanicPolicy::Report, Overflow::Block).await;
    let report = tokio::spawn(async move {
        pool.shutdown(ShutdownMode::Cancel(Duration::from_secs(1)))
            .await
    })
    .await
    .expect("shutdown must not panic");
    assert_eq!((report.returned, report.aborted), (1, 1), "{report:?}");
    assert!(report.is_balanced(), "{report:?}");

    let pool = busy_pool_with_a_bomb_queued(PanicPolicy::Report, Overflow::DropOldest).await;
    let evicting = pool.clone();
    tokio::spawn(async move { evicting.execute(async {}).await })
        .await
        .expect("the evicting submit must not panic")
        .unwrap();
    assert_eq!(pool.stats().dropped, 1);
}

/// `PanicPolicy::Abort`: a panicking job aborts the process, whether it
/// panics while polled, while its output is dropped, or while it is dropped
/// unrun (handed back by a shutdown, or evicted). The test runs itself
/// again in child processes, which must die of SIGABRT.
#[cfg(unix)]
#[test]
fn abort_policy_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD: &str = "WEFT_POOL_ABORT_POLICY_CHILD";
    if let Some(kind) = std::env::var_os(CHILD) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            match kind.to_str() {
                Some("poll") => {
                    let pool = builder(PanicPolicy::Abort).build().unwrap();
                    let h = pool.submit(async { panic!("fatal") }).await.unwrap();
                    let _ = h.await;
                }
                Some("blocking") => {
                    let pool = builder(PanicPolicy::Abort).build_blocking().unwrap();
                    let h = pool
                        .submit(|_: &mut ()| -> u8 { panic!("fatal") })
                        .await
                        .unwrap();
                    let _ = h.await;
                }
                Some("output_drop") => {
                    let pool = builder(PanicPolicy::Abort).build().unwrap();
                    pool.execute(async { OutputBomb }).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some("returned_drop") => {
                    let pool =
                        busy_pool_with_a_bomb_queued(PanicPolicy::Abort, Overflow::Block).await;
                    pool.shutdown(ShutdownMode::Cancel(Duration::from_secs(1)))
                        .await;
                }
                Some("evicted_drop") => {
                    let pool =
                        busy_pool_with_a_bomb_queued(PanicPolicy::Abort, Overflow::DropOldest)
                            .await;
                    pool.execute(async {}).await.unwrap();
                }
                other => unreachable!("{other:?}"),
            }
        });
        // Not reached when the policy works.
        std::process::exit(0);
    }
    let mut wrong = Vec::new();
    for kind in [
        "poll",
        "blocking",
        "output_drop",
        "returned_drop",
        "evicted_drop",
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "abort_policy_aborts_the_process", "--nocapture"])
            .env(CHILD, kind)
            .output()
            .unwrap();
        if out.status.signal() != Some(6) {
            wrong.push(format!(
                "{kind}: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "children that did not die of SIGABRT:\n{}",
        wrong.join("\n")
    );
}

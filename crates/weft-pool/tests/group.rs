//! TaskGroup: limits, error policies, order, panics, drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::sleep;
use weft_pool::group::{ErrorPolicy, Order, TaskError, TaskGroup};

#[tokio::test(start_paused = true)]
async fn results_in_submission_or_completion_order() {
    let g = TaskGroup::<u64, ()>::new();
    for d in [30u64, 10, 20] {
        g.spawn(move |_| async move {
            sleep(Duration::from_millis(d)).await;
            Ok(d)
        });
    }
    assert_eq!(g.join().await, Ok(vec![30, 10, 20]));

    let g = TaskGroup::<u64, ()>::new().with_order(Order::Completion);
    for d in [30u64, 10, 20] {
        g.spawn(move |_| async move {
            sleep(Duration::from_millis(d)).await;
            Ok(d)
        });
    }
    assert_eq!(g.join().await, Ok(vec![10, 20, 30]));
}

#[tokio::test(start_paused = true)]
async fn the_limit_bounds_concurrency() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let g = TaskGroup::<(), ()>::new().with_limit(3);
    for _ in 0..10 {
        let (r, p) = (running.clone(), peak.clone());
        g.spawn(move |_| async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            sleep(Duration::from_millis(10)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
    }
    assert_eq!(g.join().await.unwrap().len(), 10);
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn first_error_cancels_the_rest() {
    let g = TaskGroup::<u32, &'static str>::new().with_limit(2);
    g.spawn(|_| async {
        sleep(Duration::from_millis(5)).await;
        Err("boom")
    });
    g.spawn(|cancel| async move {
        tokio::select! {
            _ = cancel.cancelled() => Ok(0),
            _ = sleep(Duration::from_secs(60)) => Ok(1),
        }
    });
    g.spawn(|_| async { Ok(2) }); // waits for a slot; skipped once cancelled
    let start = tokio::time::Instant::now();
    let all = g.join_all().await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the sibling stopped early"
    );
    assert_eq!(
        all,
        vec![
            Err(TaskError::Failed("boom")),
            Ok(0),
            Err(TaskError::Cancelled)
        ]
    );
    assert!(g.token().is_cancelled());
}

#[tokio::test]
async fn join_returns_the_real_failure_not_a_cancellation() {
    let g = TaskGroup::<u32, &'static str>::new().with_limit(1);
    g.spawn(|_| async { Err("first") });
    g.spawn(|_| async { Ok(1) });
    assert_eq!(g.join().await, Err(TaskError::Failed("first")));
}

#[tokio::test]
async fn collect_all_runs_everything_and_reports_panics() {
    let g = TaskGroup::<u32, String>::new().with_policy(ErrorPolicy::CollectAll);
    g.spawn(|_| async { Err("a".to_string()) });
    g.spawn(|_| async { panic!("b") });
    g.spawn(|_| async { Ok(3) });
    let all = g.join_all().await;
    assert_eq!(all[0], Err(TaskError::Failed("a".into())));
    assert!(matches!(&all[1], Err(TaskError::Panicked(p)) if p.message() == "b"));
    assert_eq!(all[2], Ok(3));
    assert!(!g.token().is_cancelled());
}

#[tokio::test]
async fn spawning_through_a_shared_reference() {
    let g = Arc::new(TaskGroup::<u32, ()>::new());
    let g2 = g.clone();
    g.spawn(move |_| async move {
        g2.spawn(|_| async { Ok(2) });
        Ok(1)
    });
    // join waits for the task spawned by a task, too.
    let mut v = g.join().await.unwrap();
    v.sort();
    assert_eq!(v, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_cancels_and_aborts() {
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let g = TaskGroup::<(), ()>::new();
    let token = g.token();
    for _ in 0..3 {
        let f = Flag(dropped.clone());
        g.spawn(move |_| async move {
            let _f = f;
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
    }
    tokio::task::yield_now().await;
    drop(g);
    assert!(token.is_cancelled());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 3, "every task was aborted");
}

/// Guards the panic boundary of a task: a closure that panics before it
/// returns its future is reported as `Panicked` (it used to escape the
/// boundary, kill the task without a result, and hang `join`).
#[tokio::test(start_paused = true)]
async fn a_task_closure_that_panics_before_returning_its_future_is_contained() {
    let g = TaskGroup::<u32, String>::new();
    g.spawn(|_| async { Ok(1) });
    g.spawn(|_| -> std::future::Ready<Result<u32, String>> { panic!("bad setup") });
    let r = tokio::time::timeout(Duration::from_secs(60), g.join())
        .await
        .expect("join() waits forever: the panic escaped and no result was sent");
    assert!(matches!(r, Err(TaskError::Panicked(_))), "{r:?}");
}

/// Guards joining twice: each join returns the tasks spawned since the
/// previous one (the second join used to wait for every task ever spawned
/// to report again, forever).
#[tokio::test(start_paused = true)]
async fn join_after_join_returns() {
    let g = TaskGroup::<u32, ()>::new();
    g.spawn(|_| async { Ok(1) });
    assert_eq!(g.join().await, Ok(vec![1]));
    g.spawn(|_| async { Ok(2) });
    let r = tokio::time::timeout(Duration::from_secs(60), g.join()).await;
    assert_eq!(
        r.expect("the second join() waits forever"),
        Ok(vec![2]),
        "the second join returns only the task spawned since the first"
    );
    g.spawn(|_| async { Ok(3) });
    g.spawn(|_| async { Err(()) });
    let r = tokio::time::timeout(Duration::from_secs(60), g.join_all()).await;
    assert_eq!(
        r.expect("join_all() after join() waits forever"),
        vec![Ok(3), Err(TaskError::Failed(()))]
    );
    let r = tokio::time::timeout(Duration::from_secs(60), g.join_all()).await;
    assert_eq!(r.expect("an empty join_all() waits"), vec![]);
}

/// Guards that results are not lost when a join is dropped half-way: the
/// results it had already received are returned by the next join.
#[tokio::test(start_paused = true)]
async fn a_join_dropped_half_way_loses_no_result() {
    let g = TaskGroup::<u64, ()>::new();
    for d in [10u64, 1000] {
        g.spawn(move |_| async move {
            sleep(Duration::from_millis(d)).await;
            Ok(d)
        });
    }
    // Gives up after the first task has reported, before the second.
    let r = tokio::time::timeout(Duration::from_millis(100), g.join()).await;
    assert!(r.is_err());
    let r = tokio::time::timeout(Duration::from_secs(60), g.join()).await;
    assert_eq!(r.expect("the next join waits forever"), Ok(vec![10, 1000]));
}

/// Guards the result of a task dropped before it finished (its runtime shut
/// down): it comes back as `TaskError::Aborted`, so a join awaited elsewhere
/// returns instead of waiting for a result that cannot come.
#[test]
fn a_task_dropped_with_its_runtime_is_reported_aborted() {
    let g = TaskGroup::<u32, ()>::new().with_policy(ErrorPolicy::CollectAll);
    let tasks = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tasks.block_on(async {
        g.spawn(|_| std::future::pending());
        g.spawn(|_| async { Ok(1) });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    drop(tasks);
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let r =
        other.block_on(async { tokio::time::timeout(Duration::from_secs(60), g.join_all()).await });
    assert_eq!(
        r.expect("join_all() waits forever for the dropped task"),
        vec![Err(TaskError::Aborted), Ok(1)]
    );
}

#[test]
fn a_limit_of_zero_is_refused_with_what_to_pass() {
    let payload = std::panic::catch_unwind(|| TaskGroup::<u8, ()>::new().with_limit(0))
        .expect_err("a limit of 0 must be refused");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap();
    assert!(msg.contains("at least 1"), "{msg}");
}

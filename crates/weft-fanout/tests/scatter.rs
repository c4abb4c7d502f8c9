//! scatter: ordering, concurrency limit, error policies, spawned mode,
//! panics, cancellation and no leaked tasks.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{Tracker, settle_tasks};
use tokio::time::{Instant, sleep};
use weft_fanout::{ItemError, Order, ScatterError, deadline, scatter};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn input_order_and_completion_order() {
    support::init();
    // Item i takes (10 - i) ms: completion order is the reverse.
    let f = |i: u64| async move {
        sleep(ms(10 - i)).await;
        Ok::<_, ()>(i)
    };
    let start = Instant::now();
    let ordered = scatter(0..10, 10, f).unwrap().try_collect().await.unwrap();
    assert_eq!(ordered, (0..10).collect::<Vec<_>>());
    assert_eq!(start.elapsed(), ms(10), "all ten ran concurrently");

    let done = scatter(0..10, 10, f)
        .unwrap()
        .completion_order()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(done, (0..10).rev().collect::<Vec<_>>());
    let per_item = scatter(0..10, 10, f)
        .unwrap()
        .order(Order::Completion)
        .results()
        .await;
    assert_eq!(per_item[0].as_ref().unwrap(), &9);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_respected() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let out = scatter(0..50u64, 7, |i| {
        let in_flight = in_flight.clone();
        let max_seen = max_seen.clone();
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max_seen.fetch_max(now, Ordering::SeqCst);
            sleep(ms(10)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(i)
        }
    })
    .unwrap()
    .try_collect()
    .await
    .unwrap();
    assert_eq!(out.len(), 50);
    assert_eq!(max_seen.load(Ordering::SeqCst), 7);
    // ceil(50 / 7) = 8 waves of 10 ms.
    assert_eq!(start.elapsed(), ms(80));
}

#[tokio::test(start_paused = true)]
async fn first_error_cancels_the_rest() {
    let t = Tracker::default();
    let start = Instant::now();
    let err = scatter(0..20u64, 5, |i| {
        let g = t.guard();
        async move {
            if i == 2 {
                sleep(ms(5)).await;
                return Err(format!("item {i} broke"));
            }
            sleep(ms(100)).await;
            g.done();
            Ok(i)
        }
    })
    .unwrap()
    .try_collect()
    .await
    .unwrap_err();
    assert_eq!(err.index(), 2);
    assert_eq!(err.to_string(), "item 2 failed: item 2 broke");
    assert_eq!(
        start.elapsed(),
        ms(5),
        "decided by the error, not the slow items"
    );
    assert_eq!(t.started(), 5, "no item started after the error");
    assert_eq!(t.completed(), 0);
    assert_eq!(t.live(), 0, "every started item was dropped");
}

#[tokio::test(start_paused = true)]
async fn collect_all_runs_everything_and_reports_every_error() {
    let failures = scatter(0..10u64, 3, |i| async move {
        sleep(ms(i)).await;
        if i % 3 == 0 { Err(i) } else { Ok(i * 10) }
    })
    .unwrap()
    .collect_all()
    .await
    .unwrap_err();
    let failed: Vec<usize> = failures.failed.iter().map(|e| e.index()).collect();
    assert_eq!(failed, [0, 3, 6, 9]);
    let ok: Vec<(usize, u64)> = failures.succeeded.clone();
    assert_eq!(ok, [(1, 10), (2, 20), (4, 40), (5, 50), (7, 70), (8, 80)]);
    assert_eq!(
        failures.to_string(),
        "4 of 10 items failed; first: item 0 failed: 0"
    );

    let all = scatter(0..4u64, 2, |i| async move { Ok::<_, ()>(i) })
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(all.unwrap(), [0, 1, 2, 3]);
}

/// Guards `Failures::failed` being "in the scatter's Order": with the
/// default `Order::Input` the failures come by input index even when they
/// finish in reverse (they used to come in completion order), and a panic
/// made while building an item's future takes its index's place too.
#[tokio::test(start_paused = true)]
async fn collect_all_failures_come_in_input_order() {
    let err = scatter(0..3u64, 3, |i| async move {
        sleep(Duration::from_millis(30 - 10 * i)).await;
        Err::<u64, _>(i)
    })
    .unwrap()
    .collect_all()
    .await
    .unwrap_err();
    let order: Vec<usize> = err.failed.iter().map(|e| e.index()).collect();
    assert_eq!(order, [0, 1, 2]);

    // Mixed with successes and a panic in `f` itself (reported at once,
    // before the others finish): still by index.
    let err = scatter(0..5u64, 5, |i| {
        assert_ne!(i, 4, "no future for four");
        async move {
            sleep(ms(50 - 10 * i)).await;
            if i % 2 == 0 { Err(i) } else { Ok(i) }
        }
    })
    .unwrap()
    .collect_all()
    .await
    .unwrap_err();
    let order: Vec<usize> = err.failed.iter().map(|e| e.index()).collect();
    assert_eq!(order, [0, 2, 4]);
    assert!(matches!(err.failed[2], ItemError::Panicked { .. }));
    assert_eq!(err.succeeded, [(1, 1), (3, 3)]);
}

/// Guards the other half of the same contract: after `completion_order()`
/// (or `.order(Order::Completion)`), failures and successes come as the
/// items finished.
#[tokio::test(start_paused = true)]
async fn collect_all_failures_come_in_completion_order_when_asked() {
    let err = scatter(0..4u64, 4, |i| async move {
        sleep(ms(40 - 10 * i)).await;
        if i == 2 { Ok(i) } else { Err(i) }
    })
    .unwrap()
    .order(Order::Completion)
    .collect_all()
    .await
    .unwrap_err();
    let order: Vec<usize> = err.failed.iter().map(|e| e.index()).collect();
    assert_eq!(order, [3, 1, 0]);
    assert_eq!(err.succeeded, [(2, 2)]);
}

#[tokio::test]
async fn per_item_results_contain_panics() {
    let results = scatter(0..4u32, 4, |i| async move {
        if i == 1 {
            panic!("item one exploded");
        }
        if i == 2 {
            return Err("two failed");
        }
        Ok(i)
    })
    .unwrap()
    .results()
    .await;
    assert_eq!(results.len(), 4);
    assert_eq!(*results[0].as_ref().unwrap(), 0);
    match &results[1] {
        Err(ItemError::Panicked { index: 1, panic }) => {
            assert_eq!(panic.message(), "item one exploded")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        results[2],
        Err(ItemError::Failed {
            index: 2,
            error: "two failed"
        })
    ));
    assert_eq!(*results[3].as_ref().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_runs_in_parallel_and_contains_panics() {
    let threads = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let results = scatter(0..64u64, 8, |i| {
        let threads = threads.clone();
        async move {
            threads.lock().unwrap().insert(std::thread::current().id());
            // Block the worker a little so both workers get items.
            std::thread::sleep(Duration::from_millis(2));
            if i == 13 {
                panic!("thirteen");
            }
            Ok::<_, ()>(i)
        }
    })
    .unwrap()
    .spawned()
    .results()
    .await;
    assert_eq!(results.len(), 64);
    assert!(matches!(
        &results[13],
        Err(ItemError::Panicked { index: 13, .. })
    ));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 63);
    assert!(
        threads.lock().unwrap().len() >= 2,
        "items ran on more than one thread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_fail_fast_leaves_no_task_alive() {
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let t = Tracker::default();
    let err = scatter(0..100u64, 10, |i| {
        let g = t.guard();
        async move {
            if i == 4 {
                tokio::time::sleep(ms(5)).await;
                return Err("bad");
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            g.done();
            Ok(i)
        }
    })
    .unwrap()
    .spawned()
    .try_collect()
    .await
    .unwrap_err();
    assert_eq!(err.index(), 4);
    // The aborted tasks were awaited before try_collect returned.
    assert_eq!(t.live(), 0, "every spawned item was dropped");
    assert_eq!(settle_tasks(baseline).await, baseline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_spawned_scatter_aborts_its_tasks() {
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let t = Tracker::default();
    let gather = scatter(0..100u64, 10, |i| {
        let g = t.guard();
        async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            g.done();
            Ok::<_, ()>(i)
        }
    })
    .unwrap()
    .spawned()
    .try_collect();
    // The caller gives up after 20 ms.
    assert!(tokio::time::timeout(ms(20), gather).await.is_err());
    assert_eq!(
        settle_tasks(baseline).await,
        baseline,
        "no task outlives the caller"
    );
    assert_eq!(t.started(), 10);
    assert_eq!(t.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn spawned_items_inherit_the_deadline() {
    let out = deadline::within(ms(100), async {
        scatter(
            0..3u64,
            3,
            |_| async move { Ok::<_, ()>(deadline::remaining()) },
        )
        .unwrap()
        .spawned()
        .try_collect()
        .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out, vec![Some(ms(100)); 3]);
}

#[tokio::test]
async fn zero_concurrency_is_refused_when_built_and_nothing_runs() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let err = scatter(0..10, 0, move |i: i32| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, ()>(i) }
    })
    .unwrap_err();
    assert_eq!(err, ScatterError::ZeroConcurrency);
    assert_eq!(
        err.to_string(),
        "scatter concurrency must be at least 1; pass 1 to run the items one at a time"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no item was started");
    // It is a plain error: `?` turns it into a BoxError.
    let boxed: weft_core::BoxError = err.into();
    assert!(boxed.downcast_ref::<ScatterError>().is_some());
    // What the message says to pass works: one at a time, in input order.
    let one = scatter(0..10, 1, |i: i32| async move { Ok::<_, ()>(i) })
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(one, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_panic_while_making_the_future_is_that_items_error() {
    let results = scatter(0..3u32, 2, |i| {
        assert_ne!(i, 1, "cannot even start item one");
        async move { Ok::<_, ()>(i) }
    })
    .unwrap()
    .results()
    .await;
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[1], Err(ItemError::Panicked { index: 1, panic }) if panic.message().contains("cannot even start"))
    );
    assert_eq!(*results[2].as_ref().unwrap(), 2);

    let err = scatter(0..100u32, 2, |i| {
        assert_ne!(i, 5, "five");
        async move { Ok::<_, ()>(i) }
    })
    .unwrap()
    .try_collect()
    .await
    .unwrap_err();
    assert_eq!(err.index(), 5);
}

/// A user future that panics when it is dropped.
struct PanicOnDrop<F>(F);

impl<F: std::future::Future + Unpin> std::future::Future for PanicOnDrop<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<F> Drop for PanicOnDrop<F> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("user future drop");
        }
    }
}

/// An in-task item whose future panics when dropped after it finished is
/// that item's panic (`ItemError::Panicked`), not a panic out of
/// `results()`; the other items keep their outputs.
#[tokio::test(start_paused = true)]
async fn a_finished_items_drop_panic_is_that_items_panic() {
    let out = tokio::spawn(async {
        scatter(0..2u32, 2, |i| {
            let f: std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, ()>> + Send>> =
                if i == 1 {
                    Box::pin(PanicOnDrop(std::future::ready(Ok(i))))
                } else {
                    Box::pin(async move { Ok(i) })
                };
            f
        })
        .unwrap()
        .results()
        .await
    })
    .await
    .expect("results() must not panic");
    assert!(matches!(out[0], Ok(0)), "{:?}", out[0]);
    assert!(
        matches!(&out[1], Err(ItemError::Panicked { index: 1, .. })),
        "{:?}",
        out[1]
    );
}

/// Items cancelled because another failed (`try_collect`) are dropped inside
/// their boundary: a panic in that drop does not replace the first error.
#[tokio::test(start_paused = true)]
async fn a_cancelled_items_drop_panic_does_not_escape_try_collect() {
    let r = tokio::spawn(async {
        scatter(0..2u32, 2, |i| {
            let guard = PanicOnDrop(std::future::ready(()));
            Box::pin(async move {
                let guard = guard;
                if i == 0 {
                    std::mem::forget(guard);
                    Err::<u32, &str>("boom")
                } else {
                    sleep(Duration::from_secs(10)).await;
                    drop(guard);
                    Ok(i)
                }
            })
        })
        .unwrap()
        .try_collect()
        .await
    })
    .await
    .expect("try_collect() must not panic");
    assert!(
        matches!(r, Err(ItemError::Failed { index: 0, .. })),
        "{r:?}"
    );
}

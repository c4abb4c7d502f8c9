//! `Drain`: stop the source, drain the stages, cancel at the deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use weft_core::Drain;
use weft_pipeline::{Batch, Pipeline, PipelineError, Stage};

#[tokio::test(start_paused = true)]
async fn drain_stops_the_source_and_finishes_accepted_work() {
    let out = Arc::new(AtomicU64::new(0));
    let o = out.clone();
    let running = Pipeline::from_iter(0u64..)
        .named("endless")
        .then(Stage::new("work").workers(4).capacity(16), |x| async move {
            sleep(Duration::from_millis(5)).await;
            x
        })
        .batch("group", Batch::size(10))
        .for_each(move |b| {
            o.fetch_add(b.len() as u64, Ordering::SeqCst);
        })
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(200)).await;
    assert!(!running.is_finished());
    let live = running.stats();
    assert!(live.items_in > 0);
    let drained: &dyn Drain = &running;
    let report = drained
        .drain(Instant::now() + Duration::from_secs(10))
        .await;
    assert_eq!(report.name, "endless");
    assert!(report.is_clean(), "{report}");
    assert!(report.accepted > 0);
    assert_eq!(report.completed, report.accepted);
    // Every accepted item reached the sink, the last partial batch included.
    assert_eq!(out.load(Ordering::SeqCst), report.accepted);
    // Draining again reports the same totals.
    let again = running.drain(Instant::now()).await;
    assert_eq!(again.accepted, report.accepted);
    // The run itself ended normally: the source was asked to stop.
    let ((), r) = running.join().await.unwrap();
    assert_eq!(r.items_in, report.accepted);
    assert_eq!(
        r.stages[2].received, report.accepted,
        "the batch stage saw every item"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_cancels_what_is_left_at_the_deadline() {
    let running = Pipeline::from_iter(0u64..1_000)
        .then(Stage::new("stuck").workers(2), |x| async move {
            sleep(Duration::from_secs(3600)).await;
            x
        })
        .collect()
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(10)).await;
    let start = Instant::now();
    let report = running.drain(start + Duration::from_secs(1)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "returned at the deadline"
    );
    assert!(report.is_balanced(), "{report}");
    assert!(report.cancelled > 0, "{report}");
    assert!(!report.is_clean() || report.cancelled > 0);
    let err = running.join().await.unwrap_err();
    let PipelineError::Cancelled { report } = err else {
        panic!("unexpected {err:?}")
    };
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.items_out, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_future_cancels_the_pipeline() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let run = Pipeline::from_iter(0u64..)
        .then("slow", move |x| {
            s.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(Duration::from_millis(1)).await;
                x
            }
        })
        .run();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), run)
            .await
            .is_err()
    );
    let at_drop = seen.load(Ordering::SeqCst);
    assert!(at_drop > 0);
    sleep(Duration::from_secs(1)).await;
    assert!(
        seen.load(Ordering::SeqCst) <= at_drop + 1,
        "the stage kept running after run() was dropped"
    );
}

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

/// Guards the hand-off of a stage's output: a `map` feeding an async stage
/// (chunk 1) is cut off by the drain deadline while it is blocked handing
/// its output over one item at a time. The rest of its output vector must
/// be counted as cancelled, not vanish (it showed up as "filtered" in the
/// report and as "completed" in the drain report, though nothing reached
/// the sink).
#[tokio::test(start_paused = true)]
async fn items_cut_off_mid_hand_off_are_counted_cancelled_not_completed() {
    let sunk = Arc::new(AtomicU64::new(0));
    let s = sunk.clone();
    let running = Pipeline::from_iter(0u64..10_000)
        .map("parse", |x| x) // no filter anywhere
        .then("stuck", |x| async move {
            sleep(Duration::from_secs(3600)).await;
            x
        })
        .for_each(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        })
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(10)).await;
    let drained = running.drain(Instant::now() + Duration::from_secs(1)).await;
    let err = running.join().await.unwrap_err();
    let r = err.report().unwrap();
    assert_eq!(sunk.load(Ordering::SeqCst), 0);
    assert_eq!(r.filtered, 0, "nothing was filtered, yet:\n{r}");
    assert!(r.is_balanced(), "{r}");
    assert_eq!(
        drained.completed, 0,
        "nothing reached the sink, yet the drain report says: {drained:?}"
    );
    assert!(drained.is_balanced(), "{drained}");
}

/// A pipeline reading a channel into which 50 items were sent (accepted),
/// through a slow stage (10 ms an item, capacity 1), 15 ms into its run.
async fn slow_receiver_pipeline() -> (
    tokio::sync::mpsc::Sender<u64>,
    weft_pipeline::Running<Vec<u64>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    for i in 0..50u64 {
        tx.send(i).await.unwrap();
    }
    let running = Pipeline::from_receiver(rx)
        .then(Stage::new("slow").capacity(1), |x| async move {
            sleep(Duration::from_millis(10)).await;
            x
        })
        .collect()
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(15)).await;
    (tx, running)
}

/// Guards `from_receiver` under drain: items the caller already sent into
/// the channel (the send succeeded, so they were accepted) but the source
/// had not pulled yet are processed before the pipeline finishes, not
/// dropped with the receiver.
#[tokio::test(start_paused = true)]
async fn drain_of_a_receiver_source_keeps_buffered_items() {
    let (tx, running) = slow_receiver_pipeline().await;
    let report = running
        .drain(Instant::now() + Duration::from_secs(60))
        .await;
    let (out, _) = running.join().await.unwrap();
    assert_eq!(
        out.len() + report.returned as usize,
        50,
        "items sent successfully were dropped by drain: {report:?}"
    );
    assert!(report.is_clean(), "{report}");
    // Admission is closed: a send after the drain is refused.
    assert!(tx.send(50).await.is_err());
}

/// Guards `from_receiver` when the drain deadline passes: what is still in
/// the channel is counted as cancelled, so the reports balance.
#[tokio::test(start_paused = true)]
async fn a_receiver_source_cut_off_at_the_deadline_counts_the_rest() {
    let (tx, running) = slow_receiver_pipeline().await;
    let drained = running
        .drain(Instant::now() + Duration::from_millis(100))
        .await;
    assert_eq!(drained.accepted, 50, "{drained}");
    assert!(drained.is_balanced(), "{drained}");
    assert!(drained.cancelled > 0, "{drained}");
    let err = running.join().await.unwrap_err();
    let r = err.report().unwrap();
    assert_eq!(r.items_in, 50, "{r}");
    assert!(r.is_balanced(), "{r}");
    drop(tx);
}

/// Guards `join` and `shutdown` when the runtime that ran the driver is
/// gone (shut down with the pipeline unfinished): they return an error and
/// a report instead of panicking.
#[test]
fn join_after_the_runtime_is_gone_returns_an_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (running, other) = rt.block_on(async {
        let make = || {
            Pipeline::from_iter(0u64..)
                .then("w", |x| async move {
                    sleep(Duration::from_secs(1)).await;
                    x
                })
                .collect()
                .spawn()
                .unwrap()
        };
        (make(), make())
    });
    drop(rt);
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt2.block_on(running.join());
    assert!(
        matches!(r, Err(PipelineError::Cancelled { .. })),
        "unexpected {r:?}"
    );
    let report = rt2.block_on(other.shutdown(Instant::now() + Duration::from_secs(1)));
    assert_eq!(report.items_out, 0);
    let drained = rt2.block_on(other.drain(Instant::now() + Duration::from_secs(1)));
    assert!(drained.is_balanced(), "{drained}");
}

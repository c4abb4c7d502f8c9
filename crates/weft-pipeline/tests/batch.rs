//! Batching by size, weight and time (paused time), and flushing.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, advance, sleep};
use weft_pipeline::{Batch, Pipeline, PipelineError, Stage, TimeRule};

#[tokio::test]
async fn by_size_flushes_the_partial_batch_on_completion() {
    let (batches, report) = Pipeline::from_iter(0..10u32)
        .batch("b", Batch::size(4))
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(
        batches,
        vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
    );
    let b = &report.stages[1];
    assert_eq!((b.received, b.completed, b.emitted), (10, 10, 3));
}

#[tokio::test]
async fn empty_input_emits_no_batch() {
    let (batches, _) = Pipeline::from_iter(std::iter::empty::<u8>())
        .batch("b", Batch::size(4).max_age(Duration::from_millis(1)))
        .collect()
        .run()
        .await
        .unwrap();
    assert!(batches.is_empty());
}

#[tokio::test]
async fn by_weight_never_exceeds_the_limit_and_heavy_items_travel_alone() {
    let words = ["a", "bb", "ccc", "dddd", "eeeeeeeeee", "f", "gg"].map(String::from);
    let (batches, _) = Pipeline::from_iter(words)
        .batch(
            "b",
            Batch::size(100).max_weight(5, |s: &String| s.len() as u64),
        )
        .collect()
        .run()
        .await
        .unwrap();
    let lens: Vec<Vec<usize>> = batches
        .iter()
        .map(|b| b.iter().map(String::len).collect())
        .collect();
    assert_eq!(
        lens,
        vec![vec![1, 2], vec![3], vec![4], vec![10], vec![1, 2]]
    );
}

/// Sends `(delay_before, item)` pairs into a channel-sourced batch stage and
/// records when each batch came out.
async fn timed(rule: TimeRule, plan: Vec<(u64, u32)>) -> Vec<(u64, Vec<u32>)> {
    let (tx, rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let running = Pipeline::from_receiver(rx)
        .batch("b", Batch::size(100).time_rule(rule))
        .send_to(out_tx)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let feeder = tokio::spawn(async move {
        for (delay, item) in plan {
            sleep(Duration::from_millis(delay)).await;
            tx.send(item).await.unwrap();
        }
        sleep(Duration::from_millis(1_000)).await;
    });
    let mut got = Vec::new();
    while let Some(b) = out_rx.recv().await {
        got.push((start.elapsed().as_millis() as u64, b));
    }
    feeder.await.unwrap();
    running.join().await.unwrap();
    got
}

#[tokio::test(start_paused = true)]
async fn max_age_bounds_the_first_items_wait() {
    // Items at 0, 30, 60, 90 ms; batches close 50 ms after their first item.
    let got = timed(
        TimeRule::MaxAge(Duration::from_millis(50)),
        vec![(0, 1), (30, 2), (30, 3), (30, 4)],
    )
    .await;
    assert_eq!(got, vec![(50, vec![1, 2]), (110, vec![3, 4])]);
}

#[tokio::test(start_paused = true)]
async fn idle_gap_closes_when_the_input_pauses() {
    // A steady trickle every 30 ms stays together under a 50 ms idle gap,
    // however long it lasts; the pause closes it.
    let got = timed(
        TimeRule::IdleGap(Duration::from_millis(50)),
        vec![(0, 1), (30, 2), (30, 3), (30, 4), (200, 5)],
    )
    .await;
    assert_eq!(got, vec![(140, vec![1, 2, 3, 4]), (340, vec![5])]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_the_partial_batch() {
    let (tx, rx) = mpsc::channel::<u32>(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let running = Pipeline::from_receiver(rx)
        .batch("b", Batch::size(100).max_age(Duration::from_secs(3600)))
        .send_to(out_tx)
        .spawn()
        .unwrap();
    for i in 0..3 {
        tx.send(i).await.unwrap();
    }
    advance(Duration::from_millis(10)).await;
    // The sender is still open: only the shutdown ends the source.
    let report = running
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(out_rx.recv().await, Some(vec![0, 1, 2]));
    assert_eq!(out_rx.recv().await, None);
    assert_eq!(report.items_in, 3);
    assert_eq!(report.cancelled, 0);
    drop(tx);
}

/// Guards `max_age` when the batch stage is held up: blocked handing
/// earlier batches to a slow downstream, it is past the open batch's
/// deadline by the time it reads its input again. The overdue batch must
/// close before it takes items that came after it was due (the timer alone
/// did not do it: the input is read first, so under constant input a
/// `max_age` batch closed only by size).
#[tokio::test(start_paused = true)]
async fn max_age_closes_an_overdue_batch_before_it_takes_more() {
    let (tx, rx) = mpsc::channel(1_000);
    let feeder = tokio::spawn(async move {
        // Six full batches fill the slow downstream; item 600 opens a
        // batch that is due at 50 ms.
        for i in 0..=600u32 {
            tx.send(i).await.unwrap();
        }
        // Sent 50 ms after that batch was due.
        sleep(Duration::from_millis(100)).await;
        for i in 1_000..1_005u32 {
            tx.send(i).await.unwrap();
        }
    });
    let (batches, report) = Pipeline::from_receiver(rx)
        .batch("b", Batch::size(100).max_age(Duration::from_millis(50)))
        .map(Stage::new("pass").capacity(2), |b| b)
        .then(Stage::new("slow").capacity(1), |b: Vec<u32>| async move {
            sleep(Duration::from_millis(500)).await;
            b
        })
        .collect()
        .run()
        .await
        .unwrap();
    feeder.await.unwrap();
    assert_eq!(report.items_in, 606);
    let overdue = batches.iter().find(|b| b.contains(&600)).unwrap();
    assert_eq!(
        overdue,
        &vec![600],
        "the overdue batch took items sent after it was due"
    );
    assert_eq!(batches.last(), Some(&(1_000..1_005).collect::<Vec<_>>()));
    assert_eq!(batches.len(), 8);
}

/// Guards the weigh function's unwind boundary: a panic in it fails the
/// batch stage (named in the error), and the items the batcher held are
/// counted (as cancelled), not lost with the task.
#[tokio::test(start_paused = true)]
async fn a_panicking_weigh_fn_is_contained_and_counted() {
    let r = Pipeline::from_iter(0u64..10)
        .batch(
            "group",
            Batch::size(100).max_weight(100, |x: &u64| {
                if *x == 5 {
                    panic!("cannot weigh 5")
                }
                1
            }),
        )
        .collect()
        .run()
        .await;
    let Err(PipelineError::Failed {
        stage,
        error,
        report,
    }) = r
    else {
        panic!("unexpected {r:?}")
    };
    let group = &report.stages[1];
    assert!(
        group.received == group.completed + group.failed + group.cancelled,
        "the batch stage's items vanished: {group:?}"
    );
    assert_eq!(stage, "group", "the failing stage is named");
    assert!(error.is_panic(), "{error}");
    assert_eq!((group.failed, group.panicked), (1, 1), "{group:?}");
}

mod props {
    use proptest::prelude::*;
    use weft_pipeline::{Batch, Pipeline};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Batches concatenate back to the input, are never empty, and keep
        /// to the size and weight limits (an over-weight item alone).
        #[test]
        fn batches_partition_the_input(
            items in proptest::collection::vec(1u64..20, 0..300),
            size in 1usize..40,
            max_weight in 1u64..60,
            weighted in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let input = items.clone();
            let mut cfg = Batch::size(size);
            if weighted {
                cfg = cfg.max_weight(max_weight, |w: &u64| *w);
            }
            let (batches, report) = rt
                .block_on(Pipeline::from_iter(input).batch("b", cfg).collect().run())
                .unwrap();
            let flat: Vec<u64> = batches.iter().flatten().copied().collect();
            prop_assert_eq!(&flat, &items);
            for b in &batches {
                prop_assert!(!b.is_empty());
                prop_assert!(b.len() <= size);
                let w: u64 = b.iter().sum();
                if weighted {
                    prop_assert!(w <= max_weight || b.len() == 1, "batch {:?} over {}", b, max_weight);
                }
            }
            prop_assert_eq!(report.stages[1].emitted, batches.len() as u64);
            if !weighted {
                // Size only: every batch but the last is full.
                for b in batches.iter().rev().skip(1) {
                    prop_assert_eq!(b.len(), size);
                }
            }
        }
    }
}

//! Error policies: fail fast, skip, retry with a classifier, dead letters,
//! panics, and overflow shedding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use weft_core::{BoxError, Outcome, Overflow};
use weft_pipeline::{
    DeadLetter, OnError, OverflowKind, Pipeline, PipelineError, Retry, Stage, StageError,
};

#[derive(Debug, thiserror::Error)]
#[error("bad input {0}")]
struct Bad(u32);

#[derive(Debug, thiserror::Error)]
#[error("temporarily unavailable")]
struct Unavailable;

#[tokio::test]
async fn skip_counts_and_goes_on() {
    let (out, report) = Pipeline::from_iter(0..100u32)
        .try_map(Stage::new("parse").skip_errors(), |x| {
            if x % 10 == 0 { Err(Bad(x)) } else { Ok(x) }
        })
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 90);
    assert_eq!(report.failed, 10);
    assert_eq!(report.stages[1].failed, 10);
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test]
async fn dead_letters_get_the_item_and_the_error() {
    let letters: Arc<Mutex<Vec<DeadLetter<String>>>> = Arc::default();
    let l = letters.clone();
    let rows = ["1", "two", "3", "", "5"].map(String::from);
    let (out, report) = Pipeline::from_iter(rows)
        .try_map(
            Stage::new("parse").dead_letter(move |d| l.lock().unwrap().push(d)),
            |s: String| s.parse::<u32>(),
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, vec![1, 3, 5]);
    assert_eq!(report.dead_lettered, 2);
    assert!(report.is_balanced());
    let letters = letters.lock().unwrap();
    let items: Vec<_> = letters.iter().map(|d| d.item.as_str()).collect();
    assert_eq!(items, ["two", ""]);
    assert_eq!(letters[0].stage, "parse");
    assert!(
        letters[0]
            .error
            .as_failed()
            .unwrap()
            .downcast_ref::<std::num::ParseIntError>()
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn retry_with_backoff_then_success() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let start = Instant::now();
    let (out, report) = Pipeline::from_iter([7u32])
        .try_then(
            Stage::new("flaky").retry(Retry::attempts(3).backoff(Duration::from_millis(100))),
            move |x| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err(Unavailable) } else { Ok(x) } }
            },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, vec![7]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(report.stages[1].retried, 2);
    assert_eq!(report.stages[1].completed, 1);
    // 100 ms, then 200 ms (doubling).
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn retry_classifier_decides_what_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let letters: Arc<Mutex<Vec<DeadLetter<u32>>>> = Arc::default();
    let l = letters.clone();
    // Only `Unavailable` is worth retrying; `Bad` input never will be.
    let classify = |r: &Result<(), BoxError>| match r {
        Err(e) if e.downcast_ref::<Unavailable>().is_some() => Outcome::Failure,
        Err(_) => Outcome::Ignored,
        Ok(()) => Outcome::Success,
    };
    let (out, report) = Pipeline::from_iter(0..4u32)
        .try_map(
            Stage::new("classified")
                .retry(
                    Retry::attempts(4)
                        .backoff(Duration::from_millis(1))
                        .classify(classify),
                )
                .dead_letter(move |d| l.lock().unwrap().push(d)),
            move |x| -> Result<u32, BoxError> {
                c.fetch_add(1, Ordering::SeqCst);
                match x {
                    1 => Err(Box::new(Bad(x))),
                    2 => Err(Box::new(Unavailable)),
                    _ => Ok(x),
                }
            },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, vec![0, 3]);
    // 0 and 3 once, 1 once (not retried), 2 four times.
    assert_eq!(calls.load(Ordering::SeqCst), 1 + 1 + 4 + 1);
    assert_eq!(report.stages[1].retried, 3);
    assert_eq!(report.dead_lettered, 2);
    let items: Vec<_> = letters.lock().unwrap().iter().map(|d| d.item).collect();
    assert_eq!(items, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_upstream_and_downstream() {
    let upstream_seen = Arc::new(AtomicUsize::new(0));
    let u = upstream_seen.clone();
    let err = Pipeline::from_iter(0u64..)
        .inspect("upstream", move |_| {
            u.fetch_add(1, Ordering::Relaxed);
        })
        .try_map(Stage::new("strict").workers(2), |x| {
            if x == 5_000 {
                Err(Bad(x as u32))
            } else {
                Ok(x)
            }
        })
        .then(Stage::new("slow-downstream").workers(2), |x| async move {
            sleep(Duration::from_millis(1)).await;
            x
        })
        .run()
        .await
        .unwrap_err();
    let PipelineError::Failed {
        stage,
        error,
        report,
    } = err
    else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(stage, "strict");
    assert!(error.as_failed().unwrap().downcast_ref::<Bad>().is_some());
    // The infinite source stopped: the run ended at all.
    assert!(report.items_in < 20_000, "{report}");
    assert!(report.is_balanced(), "{report}");
    assert!(report.cancelled > 0, "{report}");
    assert_eq!(report.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn downstream_fault_reaches_a_blocked_upstream() {
    // The upstream is blocked on a full queue when the sink fails: it must
    // be woken and stop, not deadlock.
    let err = Pipeline::from_iter(0u64..)
        .map(Stage::new("fast").capacity(4), |x| x)
        .then(Stage::new("sink-side").capacity(4), |x| async move {
            sleep(Duration::from_millis(10)).await;
            x
        })
        .for_each(|x| assert!(x < 20, "sink gives up"))
        .run();
    let err = tokio::time::timeout(Duration::from_secs(60), err)
        .await
        .expect("no deadlock")
        .unwrap_err();
    let PipelineError::Failed {
        stage,
        error,
        report,
    } = err
    else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(stage, "sink");
    assert!(error.is_panic());
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test]
async fn panics_are_contained_and_follow_the_policy() {
    let (out, report) = Pipeline::from_iter(0..10u32)
        .map(Stage::new("fragile").skip_errors(), |x| {
            if x == 4 {
                panic!("cannot handle {x}");
            }
            x
        })
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(report.stages[1].panicked, 1);
    assert_eq!(report.failed, 1);

    let letters: Arc<Mutex<Vec<DeadLetter<u32>>>> = Arc::default();
    let l = letters.clone();
    let (_, report) = Pipeline::from_iter(0..10u32)
        .then(
            Stage::new("fragile-async").dead_letter(move |d| l.lock().unwrap().push(d)),
            |x| async move {
                if x % 3 == 0 {
                    panic!("async {x}");
                }
                x
            },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(report.dead_lettered, 4);
    {
        let letters = letters.lock().unwrap();
        assert!(
            matches!(&letters[1].error, StageError::Panicked(p) if p.message() == "async 3"),
            "{:?}",
            letters[1]
        );
    }

    let err = Pipeline::from_iter(0..10u32)
        .map("default-policy", |x| {
            assert!(x < 5);
            x
        })
        .run()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PipelineError::Failed {
            error: StageError::Panicked(_),
            ..
        }
    ));
}

/// Guards the Retry classifier's unwind boundary: a panicking classifier
/// is the item's panic (the stage's policy applies; here, skip), so the
/// stage's items are all counted and the run goes on.
#[tokio::test(start_paused = true)]
async fn a_panicking_classifier_is_contained_and_counted() {
    let (out, report) = Pipeline::from_iter(0u64..10)
        .try_map(
            Stage::new("parse").skip_errors().retry(
                Retry::attempts(3)
                    .classify(|_: &Result<(), BoxError>| -> Outcome { panic!("classifier bug") }),
            ),
            |x: u64| if x == 3 { Err("bad") } else { Ok(x) },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
    let parse = &report.stages[1];
    assert_eq!(
        (
            parse.received,
            parse.completed,
            parse.failed,
            parse.panicked
        ),
        (10, 9, 1, 1),
        "{parse:?}"
    );
    assert!(report.is_balanced(), "{report}");

    // Under fail fast the run fails, naming the stage, and still balances.
    let err = Pipeline::from_iter(0u64..10)
        .try_map(
            Stage::new("parse").retry(
                Retry::attempts(3)
                    .classify(|_: &Result<(), BoxError>| -> Outcome { panic!("classifier bug") }),
            ),
            |x: u64| if x == 3 { Err("bad") } else { Ok(x) },
        )
        .collect()
        .run()
        .await
        .unwrap_err();
    let report = err.report().unwrap();
    // Every item a stage emitted is finished or cancelled by the next one
    // (`cancelled` includes the items queued in front of it).
    for pair in report.stages.windows(2) {
        let (up, s) = (&pair[0], &pair[1]);
        assert_eq!(
            up.emitted,
            s.completed + s.failed + s.dead_lettered + s.dropped + s.cancelled,
            "items vanished between {:?} and {:?}:\n{report}",
            up.name,
            s.name
        );
    }
    assert!(report.is_balanced(), "{report}");
    let PipelineError::Failed { stage, error, .. } = err else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(stage, "parse");
    assert!(error.is_panic(), "{error}");
}

/// Guards the backstop behind the stages' own unwind boundaries: a panic
/// that escapes a task (here in the source's iterator, which no boundary
/// wraps) fails the run under the name of the stage the task belongs to,
/// not an anonymous "pipeline".
#[tokio::test(start_paused = true)]
async fn a_panic_that_escapes_a_task_names_its_stage() {
    let err = Pipeline::from_iter((0..1_000u32).inspect(|&x| {
        assert!(x < 300, "the iterator broke at {x}");
    }))
    .map("double", |x| x * 2)
    .collect()
    .run()
    .await
    .unwrap_err();
    let PipelineError::Failed {
        stage,
        error,
        report,
    } = err
    else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(stage, "source");
    assert!(
        matches!(&error, StageError::Panicked(p) if p.message() == "the iterator broke at 300"),
        "{error}"
    );
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn overflow_policies_shed_and_count() {
    for (overflow, kind) in [
        (Overflow::Reject, OverflowKind::Rejected),
        (Overflow::DropNewest, OverflowKind::DroppedNewest),
        (Overflow::DropOldest, OverflowKind::DroppedOldest),
        (
            Overflow::WaitTimeout(Duration::from_millis(5)),
            OverflowKind::TimedOut,
        ),
    ] {
        let letters: Arc<Mutex<Vec<DeadLetter<u32>>>> = Arc::default();
        let l = letters.clone();
        let (out, report) = Pipeline::from_iter(0..200u32)
            .then(
                Stage::new("slow")
                    .capacity(8)
                    .overflow(overflow)
                    .dead_letter(move |d| l.lock().unwrap().push(d)),
                |x| async move {
                    sleep(Duration::from_millis(10)).await;
                    x
                },
            )
            .collect()
            .run()
            .await
            .unwrap();
        let letters = letters.lock().unwrap();
        assert!(report.dropped > 0, "{overflow:?}: {report}");
        assert_eq!(letters.len() as u64, report.dropped, "{overflow:?}");
        assert!(
            letters
                .iter()
                .all(|d| matches!(d.error, StageError::Overflow(k) if k == kind))
        );
        assert_eq!(out.len() as u64 + report.dropped, 200, "{overflow:?}");
        assert!(report.is_balanced(), "{overflow:?}: {report}");
        let mut all: Vec<u32> = out
            .iter()
            .copied()
            .chain(letters.iter().map(|d| d.item))
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..200).collect::<Vec<_>>(),
            "{overflow:?}: an item was lost or duplicated"
        );
        if overflow == Overflow::DropOldest {
            assert_eq!(*out.last().unwrap(), 199, "the newest item survives");
        }
    }
}

#[tokio::test]
async fn fail_fast_default_with_policy_object() {
    let err = Pipeline::from_iter(0..10u32)
        .try_map(Stage::new("strict").on_error(OnError::FailFast), |x| {
            if x == 3 { Err(Bad(x)) } else { Ok(x) }
        })
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("strict"), "{err}");
    assert!(err.report().unwrap().is_balanced());
}

#[tokio::test(start_paused = true)]
async fn sync_stage_retries_in_the_middle_of_a_chunk() {
    // Item 5 fails twice then works; the items around it in the same chunk
    // are processed once each and the order is kept.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let (out, report) = Pipeline::from_iter(0..10u32)
        .try_map(
            Stage::new("flaky").retry(Retry::attempts(3).backoff(Duration::from_millis(1))),
            move |x| {
                if x == 5 && c.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Unavailable)
                } else {
                    Ok(x * 10)
                }
            },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, (0..10).map(|x| x * 10).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let s = &report.stages[1];
    assert_eq!(
        (s.received, s.completed, s.retried, s.failed),
        (10, 10, 2, 0)
    );
}

//! partition: stable key routing, per-key order, every item once, panics
//! contained, nothing left running after the output is dropped.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, stream};
use support::settle_tasks;
use weft_fanout::partition::{PartitionError, Partitioner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_once_and_per_key_order_kept() {
    let p = Partitioner::new(4, 8).unwrap();
    let input = stream::iter((0..2000u32).map(|i| (i % 13, i)));
    let out: Vec<_> = p
        .run(
            input,
            |(k, _)| *k,
            |(k, i)| async move {
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                (k, i, std::thread::current().id())
            },
        )
        .collect()
        .await;
    assert_eq!(out.len(), 2000);
    let mut per_key: HashMap<u32, Vec<u32>> = HashMap::new();
    for r in out {
        let (k, i, _) = r.unwrap();
        per_key.entry(k).or_default().push(i);
    }
    let mut all: Vec<u32> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..2000).collect::<Vec<_>>(),
        "every item exactly once"
    );
    for (k, items) in per_key {
        assert!(
            items.windows(2).all(|w| w[0] < w[1]),
            "key {k} out of order"
        );
    }
}

#[test]
fn routing_is_stable_and_spreads_keys() {
    let p = Partitioner::new(8, 1).unwrap();
    let q = Partitioner::new(8, 100).unwrap();
    let mut used = [0usize; 8];
    for k in 0..1000u64 {
        assert_eq!(p.worker_for(&k), q.worker_for(&k));
        assert_eq!(p.worker_for(&k), p.worker_for(&k));
        used[p.worker_for(&k)] += 1;
    }
    assert!(
        used.iter().all(|&n| n > 60),
        "keys spread over workers: {used:?}"
    );
    assert_eq!(
        p.worker_for("user-42"),
        p.worker_for(&String::from("user-42"))
    );
}

#[tokio::test]
async fn a_panicking_handler_loses_only_its_item() {
    let p = Partitioner::new(2, 4).unwrap();
    let out: Vec<_> = p
        .run(
            stream::iter(0..10u32),
            |i| *i,
            |i| async move {
                assert_ne!(i, 3, "three is cursed");
                i
            },
        )
        .collect()
        .await;
    assert_eq!(out.len(), 10);
    let panics: Vec<_> = out.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(panics.len(), 1);
    assert!(panics[0].message().contains("three is cursed"));
}

/// Guards against a handler closure that panics while *making* its future
/// (before any `async` block runs): that panic is the item's too, so it
/// becomes that item's `Err(Panicked)` and the worker carries on. It used to
/// kill the worker, which closed its queue, stopped the router, and ended
/// the output normally with most of the input never handled.
#[tokio::test]
async fn a_handler_panicking_before_its_future_loses_only_its_item() {
    let p = Partitioner::new(2, 4).unwrap();
    let mut out = p.run(
        stream::iter(0..100u32),
        |i| *i,
        |i| {
            assert_ne!(i, 3, "three is cursed");
            async move { i }
        },
    );
    let mut items = Vec::new();
    while let Some(r) = out.next().await {
        items.push(r);
    }
    assert_eq!(items.len(), 100, "only {} of 100 outputs", items.len());
    let panics: Vec<_> = items.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(panics.len(), 1);
    assert!(panics[0].message().contains("three is cursed"));
    let mut ok: Vec<u32> = items.into_iter().filter_map(Result::ok).collect();
    ok.sort_unstable();
    assert_eq!(ok, (0..100).filter(|i| *i != 3).collect::<Vec<_>>());
    let s = out.stats();
    assert_eq!((s.completed, s.panicked), (99, 1));
    assert_eq!(s.routed.iter().sum::<u64>(), 100);
}

/// Guards against a panicking key function ending the output stream as if
/// the input had ended: the item whose key could not be computed becomes an
/// `Err(Panicked)` (counted as panicked), and every other item is still
/// routed and handled.
#[tokio::test]
async fn a_panicking_key_fn_is_reported_not_a_silent_end() {
    let p = Partitioner::new(2, 4).unwrap();
    let mut out = p.run(
        stream::iter(0..100u32),
        |i| {
            assert_ne!(*i, 50, "no key for fifty");
            *i
        },
        |i| async move { i },
    );
    let mut items = Vec::new();
    while let Some(r) = out.next().await {
        items.push(r);
    }
    let errors: Vec<_> = items.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error item, got {} items in all",
        items.len()
    );
    assert!(
        errors[0].message().contains("no key for fifty"),
        "{}",
        errors[0]
    );
    let mut ok: Vec<u32> = items.into_iter().filter_map(Result::ok).collect();
    ok.sort_unstable();
    assert_eq!(ok, (0..100).filter(|i| *i != 50).collect::<Vec<_>>());
    let s = out.stats();
    assert_eq!((s.completed, s.panicked, s.key_panicked), (99, 0, 1));
    assert_eq!(
        s.routed.iter().sum::<u64>(),
        99,
        "the keyless item went to no worker"
    );
}

/// Guards the backstop: when the input stream itself panics (under the
/// router task), the output reports it as an `Err(Panicked)` before it ends,
/// rather than ending as if the input had simply run out. Checked on both
/// runtimes, since the end of the channel and the end of the task race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_input_stream_is_reported_before_the_end() {
    for _ in 0..20 {
        let p = Partitioner::new(3, 2).unwrap();
        let input = stream::iter(0..20u32).map(|i| {
            assert_ne!(i, 10, "input broke at ten");
            i
        });
        let out: Vec<_> = p.run(input, |i| *i, |i| async move { i }).collect().await;
        assert_eq!(out.len(), 11, "ten items, then the input's panic");
        let errors: Vec<_> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message().contains("input broke at ten"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_output_stops_every_task() {
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let p = Partitioner::new(3, 2).unwrap();
    let mut out = p.run(
        stream::iter(0..u64::MAX),
        |i| *i,
        |i| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            i
        },
    );
    assert!(out.next().await.is_some());
    assert!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            >= baseline + 4
    );
    drop(out);
    assert_eq!(settle_tasks(baseline).await, baseline);
}

#[test]
fn zero_workers_or_capacity_is_refused() {
    assert_eq!(
        Partitioner::new(0, 1).unwrap_err(),
        PartitionError::ZeroWorkers
    );
    assert_eq!(
        Partitioner::new(1, 0).unwrap_err(),
        PartitionError::ZeroCapacity
    );
    for err in [PartitionError::ZeroWorkers, PartitionError::ZeroCapacity] {
        assert!(err.to_string().contains("pass 1 or more"), "{err}");
    }
}

//! Stage kinds, ordering, per-key order, backpressure, sources and sinks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::sleep;
use weft_pipeline::{BuildError, Pipeline, PipelineError, Stage, StageKind};

#[tokio::test]
async fn every_sync_stage_kind() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let (out, report) = Pipeline::from_iter(0..100u32)
        .map("double", |x| x * 2)
        .filter("no-tens", |x| x % 10 != 0)
        .filter_map("halve-small", |x| (x < 100).then_some(x / 2))
        .flat_map("twice", |x| [x, x])
        .inspect("count", move |_| {
            s.fetch_add(1, Ordering::Relaxed);
        })
        .try_map("checked", u8::try_from)
        .collect()
        .run()
        .await
        .unwrap();
    let expect: Vec<u8> = (0..100u32)
        .map(|x| x * 2)
        .filter(|x| x % 10 != 0)
        .filter_map(|x| (x < 100).then_some(x / 2))
        .flat_map(|x| [x, x])
        .map(|x| x as u8)
        .collect();
    assert_eq!(out, expect);
    assert_eq!(seen.load(Ordering::Relaxed), expect.len());
    assert_eq!(report.items_in, 100);
    assert_eq!(report.items_out, expect.len() as u64);
    let names: Vec<_> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "source",
            "double",
            "no-tens",
            "halve-small",
            "twice",
            "count",
            "checked",
            "sink"
        ]
    );
    assert_eq!(report.stages[0].kind, StageKind::Source);
    assert_eq!(report.stages[2].received, 100);
    assert_eq!(report.stages[2].emitted, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_parallel_stage_keeps_order_and_runs_in_parallel() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let (out, report) = Pipeline::from_iter(0..2_000u64)
        .map(Stage::new("spin").workers(4).chunk(16), move |x| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            // Uneven work, so that workers finish out of order.
            let mut v = x;
            for _ in 0..(x % 7) * 2_000 {
                v = std::hint::black_box(v.wrapping_mul(31).wrapping_add(7));
            }
            r.fetch_sub(1, Ordering::SeqCst);
            std::hint::black_box(v);
            x
        })
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, (0..2_000).collect::<Vec<_>>());
    assert!(report.is_balanced(), "{report}");
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "4 workers on 4 threads never overlapped"
    );
}

#[tokio::test(start_paused = true)]
async fn ordered_async_stage_keeps_order_unordered_does_not() {
    let delay = |x: u64| Duration::from_millis((x * 37) % 10);
    let (ordered, _) = Pipeline::from_iter(0..50u64)
        .then(Stage::new("slow").workers(8), move |x| async move {
            sleep(delay(x)).await;
            x
        })
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(ordered, (0..50).collect::<Vec<_>>());
    let (mut unordered, _) = Pipeline::from_iter(0..50u64)
        .then(
            Stage::new("slow").workers(8).unordered(),
            move |x| async move {
                sleep(delay(x)).await;
                x
            },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_ne!(
        unordered,
        (0..50).collect::<Vec<_>>(),
        "no reordering at all"
    );
    unordered.sort_unstable();
    assert_eq!(unordered, (0..50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn async_workers_give_concurrency() {
    let start = tokio::time::Instant::now();
    let (_, report) = Pipeline::from_iter(0..40u32)
        .then(Stage::new("io").workers(8), |x| async move {
            sleep(Duration::from_millis(100)).await;
            x
        })
        .collect()
        .run()
        .await
        .unwrap();
    // 40 items of 100 ms on 8 workers: 5 rounds.
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    let io = &report.stages[1];
    assert_eq!(io.busy, Duration::from_millis(4_000));
    assert_eq!(report.bottleneck().unwrap().name, "io");
}

#[tokio::test(start_paused = true)]
async fn keyed_stage_keeps_per_key_order_and_runs_keys_in_parallel() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let items: Vec<(u32, u32)> = (0..200u32).map(|i| (i % 7, i)).collect();
    let (out, report) = Pipeline::from_iter(items)
        .then_by_key(
            "per-account",
            4,
            |(key, _)| *key,
            move |(key, seq)| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    sleep(Duration::from_millis(((seq * 13) % 5) as u64 + 1)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    (key, seq)
                }
            },
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 200);
    let mut last: HashMap<u32, u32> = HashMap::new();
    for (key, seq) in out {
        if let Some(prev) = last.insert(key, seq) {
            assert!(prev < seq, "key {key}: {seq} after {prev}");
        }
    }
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "keys never ran in parallel"
    );
    assert!(peak.load(Ordering::SeqCst) <= 4);
    assert!(report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn slow_sink_bounds_what_is_in_flight() {
    let produced = Arc::new(AtomicI64::new(0));
    let consumed = Arc::new(AtomicI64::new(0));
    let max_gap = Arc::new(AtomicI64::new(0));
    let (p, c, g) = (produced.clone(), consumed.clone(), max_gap.clone());
    let source = (0..5_000u64).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let p2 = produced.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let running = Pipeline::from_iter(source)
        .map(Stage::new("a").capacity(64), |x| x + 1)
        .map(Stage::new("b").capacity(64), |x| x * 2)
        .send_to(tx)
        .spawn()
        .unwrap();
    let mut n = 0;
    while let Some(_x) = rx.recv().await {
        n += 1;
        let done = c.fetch_add(1, Ordering::SeqCst) + 1;
        g.fetch_max(p2.load(Ordering::SeqCst) - done, Ordering::SeqCst);
        sleep(Duration::from_millis(1)).await;
    }
    let (_, report) = running.join().await.unwrap();
    assert_eq!(n, 5_000);
    assert!(report.is_balanced());
    // 2 stage queues of 64 + the sink queue (1024) + chunks held by the
    // tasks (source, 2 stages, sink: at most 128 each) + the channel of 1.
    let bound = 64 + 64 + 1024 + 4 * 128 + 1;
    let gap = max_gap.load(Ordering::SeqCst);
    assert!(gap <= bound, "{gap} items in flight, bound {bound}");
    assert!(gap > 0);
    // The source waited on the full queue: backpressure reached it.
    assert!(report.stages[0].blocked > Duration::ZERO, "{report}");
}

#[tokio::test]
async fn stream_and_channel_sources() {
    let (out, _) = Pipeline::from_stream(futures::stream::iter(0..10))
        .map("inc", |x| x + 1)
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, (1..11).collect::<Vec<_>>());

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..100 {
            tx.send(i).await.unwrap();
        }
    });
    let report = Pipeline::from_receiver(rx)
        .named("from-channel")
        .map("id", |x: i32| x)
        .run()
        .await
        .unwrap();
    assert_eq!(report.name, "from-channel");
    assert_eq!(report.items_in, 100);
    assert_eq!(report.items_out, 100);
}

#[tokio::test]
async fn tower_service_stage() {
    let svc = tower::service_fn(|x: u32| async move {
        if x == 3 {
            Err::<u32, _>("three is not allowed")
        } else {
            Ok(x * 10)
        }
    });
    let (out, report) = Pipeline::from_iter(0..6u32)
        .service(Stage::new("svc").workers(2).skip_errors(), svc)
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, vec![0, 10, 20, 40, 50]);
    assert_eq!(report.failed, 1);
    assert!(report.is_balanced());
}

#[tokio::test]
async fn sink_receiver_dropped_stops_everything() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let err = Pipeline::from_iter(0..)
        .map("inc", |x: u64| x + 1)
        .send_to(tx)
        .run()
        .await
        .unwrap_err();
    let PipelineError::SinkClosed { report } = err else {
        panic!("unexpected {err:?}")
    };
    assert!(report.is_balanced(), "{report}");
}

#[tokio::test]
async fn invalid_configuration_is_refused_before_anything_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let err = Pipeline::from_iter(0..10)
        .inspect("count", move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .map(Stage::new("zero").workers(0), |x: i32| x)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PipelineError::Build(BuildError::ZeroWorkers { ref stage }) if stage == "zero"
    ));
    assert!(err.to_string().contains("pass 1"), "{err}");
    let err = Pipeline::from_iter(0..10)
        .map(Stage::new("tiny").capacity(0), |x: i32| x)
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn large_expansions_are_split_into_chunks_in_order() {
    let (out, report) = Pipeline::from_iter(0..20u32)
        .flat_map(Stage::new("explode").workers(3), |x| {
            (0..300u32).map(move |i| x * 1_000 + i)
        })
        .map(Stage::new("small-chunks").chunk(7).workers(2), |x| x)
        .then(Stage::new("one-by-one").workers(3), |x| async move { x })
        .collect()
        .run()
        .await
        .unwrap();
    let expect: Vec<u32> = (0..20u32)
        .flat_map(|x| (0..300u32).map(move |i| x * 1_000 + i))
        .collect();
    assert_eq!(out, expect);
    assert_eq!(report.stages[1].emitted, 6_000);
    assert_eq!(report.items_out, 6_000);
}

#[tokio::test]
async fn a_panicking_key_function_follows_the_stage_policy() {
    let (out, report) = Pipeline::from_iter(0..20u32)
        .map(
            Stage::new("keyed")
                .workers(3)
                .partition_by(|x: &u32| {
                    assert!(*x != 7, "no key for 7");
                    *x % 3
                })
                .skip_errors(),
            |x| x,
        )
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 19);
    assert!(!out.contains(&7));
    let keyed = &report.stages[1];
    assert_eq!((keyed.panicked, keyed.failed, keyed.received), (1, 1, 20));
    assert!(report.is_balanced());
}

#[tokio::test(start_paused = true)]
async fn service_readiness_is_respected() {
    // A concurrency limit of 2 around a slow service: 8 workers, but never
    // more than 2 calls at once, because each call waits for `poll_ready`.
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let svc = tower::ServiceBuilder::new()
        .concurrency_limit(2)
        .service(tower::service_fn(move |x: u32| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                sleep(Duration::from_millis(10)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(x)
            }
        }));
    let start = tokio::time::Instant::now();
    let (out, _) = Pipeline::from_iter(0..20u32)
        .service(Stage::new("limited").workers(8), svc)
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out, (0..20).collect::<Vec<_>>());
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test]
async fn always_ready_sources_share_a_current_thread_runtime() {
    // Sources that never wait must not starve the stages on one thread.
    let (out, _) = Pipeline::from_stream(futures::stream::iter(0..100_000u64))
        .map(Stage::new("a").workers(2).unordered(), |x| x + 1)
        .filter("odd", |x| x % 2 == 1)
        .collect()
        .run()
        .await
        .unwrap();
    assert_eq!(out.len(), 50_000);
}

//! With the `metrics` feature, every pool kind (async single jobs and
//! batches, stateful, blocking single jobs and batches) records queue-wait and
//! run-time samples. A global recorder, because blocking workers are threads.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use weft_pool::{BlockingPool, ShutdownMode, StatefulPool, WorkerPool};

/// Per metric key: (samples or increments, largest sample).
type Seen = Arc<Mutex<HashMap<String, (f64, f64)>>>;

struct Cell(String, Seen);

impl Cell {
    fn add(&self, n: f64, v: f64) {
        let mut seen = self.1.lock().unwrap();
        let e = seen.entry(self.0.clone()).or_default();
        e.0 += n;
        e.1 = e.1.max(v);
    }
}

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.add(v as f64, 0.0);
    }
    fn absolute(&self, _: u64) {}
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}

impl HistogramFn for Cell {
    fn record(&self, v: f64) {
        self.add(1.0, v);
    }
}

struct Rec(Seen);

fn key_name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(key_name(key), self.0.clone())))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(key_name(key), self.0.clone())))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Cell(key_name(key), self.0.clone())))
    }
}

fn get(seen: &Seen, key: &str) -> (f64, f64) {
    let s = seen.lock().unwrap();
    *s.get(key)
        .unwrap_or_else(|| panic!("no samples for {key}: {s:?}"))
}

const WAIT: &str = "weft_pool_queue_wait_seconds";
const RUN: &str = "weft_pool_job_duration_seconds";
const DRAIN: ShutdownMode = ShutdownMode::Drain(Duration::from_secs(5));

#[tokio::test(start_paused = true)]
async fn every_pool_kind_records_queue_wait_and_run_time() {
    let seen: Seen = Arc::default();
    metrics::set_global_recorder(Rec(seen.clone())).expect("the only recorder in this binary");

    // WorkerPool: a single job holds the only worker 100 ms; the batch queued
    // behind it waits that long, and gives one wait sample for the batch and
    // one run-time sample per job.
    let pool = WorkerPool::builder().name("w").workers(1).build().unwrap();
    let first = pool
        .submit(tokio::time::sleep(Duration::from_millis(100)))
        .await
        .unwrap();
    let batch = pool
        .submit_batch((0..3).map(|i| async move { i }))
        .await
        .unwrap();
    pool.execute_batch((0..2).map(|_| async {})).await.unwrap();
    first.await.unwrap();
    assert_eq!(batch.await.len(), 3);
    assert!(pool.shutdown(DRAIN).await.is_clean());
    let (n, max) = get(&seen, &format!("{WAIT}{{name=w}}"));
    assert_eq!(n, 3.0, "one single job + two batches");
    assert!(max >= 0.1, "the batch waited behind the 100 ms job: {max}");
    assert_eq!(get(&seen, &format!("{RUN}{{name=w}}")).0, 6.0);

    // StatefulPool: same shape, one worker.
    let pool = StatefulPool::builder()
        .name("s")
        .workers(1)
        .build_stateful(|| 0u32)
        .unwrap();
    let first = pool
        .submit(|n: &mut u32| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                *n += 1;
            })
        })
        .await
        .unwrap();
    let second = pool
        .submit(|n: &mut u32| Box::pin(async move { *n }))
        .await
        .unwrap();
    pool.execute(|_: &mut u32| Box::pin(async {}))
        .await
        .unwrap();
    first.await.unwrap();
    assert_eq!(second.await.unwrap(), 1);
    assert!(pool.shutdown(DRAIN).await.is_clean());
    let (n, max) = get(&seen, &format!("{WAIT}{{name=s}}"));
    assert_eq!(n, 3.0);
    assert!(max >= 0.1, "a job waited behind the 100 ms job: {max}");
    assert_eq!(get(&seen, &format!("{RUN}{{name=s}}")).0, 3.0);

    // BlockingPool: single jobs and a batch, on dedicated threads.
    let pool = BlockingPool::builder()
        .name("b")
        .workers(1)
        .build_blocking()
        .unwrap();
    let one = pool.submit(|_: &mut ()| 1).await.unwrap();
    let batch = pool
        .submit_batch((0..4).map(|i| move |_: &mut ()| i))
        .await
        .unwrap();
    // Every job awaited before shutdown: paused time could otherwise reach
    // the drain deadline while the worker thread (real time) still runs one.
    let last = pool.submit(|_: &mut ()| ()).await.unwrap();
    assert_eq!(one.await.unwrap(), 1);
    assert_eq!(batch.await.len(), 4);
    last.await.unwrap();
    assert!(pool.shutdown(DRAIN).await.is_clean());
    assert_eq!(get(&seen, &format!("{WAIT}{{name=b}}")).0, 3.0);
    assert_eq!(get(&seen, &format!("{RUN}{{name=b}}")).0, 6.0);
}

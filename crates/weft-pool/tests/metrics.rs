//! With the `metrics` feature, job outcomes and durations reach the facade.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use weft_pool::{ShutdownMode, WorkerPool};

type Seen = Arc<Mutex<HashMap<String, f64>>>;

struct Cell(String, Seen);

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += v as f64;
    }
    fn absolute(&self, v: u64) {
        self.1.lock().unwrap().insert(self.0.clone(), v as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, v: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += v;
    }
    fn decrement(&self, v: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= v;
    }
    fn set(&self, v: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), v);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += 1.0;
    }
}

struct Rec(Seen);

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(name(key), self.0.clone())))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(name(key), self.0.clone())))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Cell(name(key), self.0.clone())))
    }
}

#[test]
fn outcomes_durations_and_gauges_are_emitted() {
    let seen: Seen = Arc::default();
    let rec = Rec(seen.clone());
    metrics::with_local_recorder(&rec, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = WorkerPool::builder().name("m").workers(1).build().unwrap();
            pool.submit(async { 1 }).await.unwrap().await.unwrap();
            let _ = pool.submit(async { panic!("x") }).await.unwrap().await;
            pool.submit_batch((0..3).map(|_| async {}))
                .await
                .unwrap()
                .await;
            let s = pool.stats();
            assert_eq!(s.succeeded, 4);
            pool.shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
                .await;
        });
    });
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.get("weft_pool_jobs_total{name=m,outcome=succeeded}"),
        Some(&4.0),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("weft_pool_jobs_total{name=m,outcome=panicked}"),
        Some(&1.0),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("weft_pool_job_duration_seconds{name=m}"),
        Some(&5.0),
        "{seen:?}"
    );
    // One queue-wait sample per queue item: two single jobs and one batch.
    assert_eq!(
        seen.get("weft_pool_queue_wait_seconds{name=m}"),
        Some(&3.0),
        "{seen:?}"
    );
    assert!(
        seen.contains_key("weft_pool_queue_depth{name=m}"),
        "{seen:?}"
    );
    assert!(seen.contains_key("weft_pool_workers{name=m}"), "{seen:?}");
}

/// Refusals at admission are emitted by outcome, to a recorder installed
/// after the pool was built (each metric's key is built with the pool, and
/// each event goes to the recorder current at that moment).
#[test]
fn refusals_reach_a_recorder_installed_after_the_pool_was_built() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (reject, drop_oldest) = rt.block_on(async {
        let build = |name: &str, overflow| {
            WorkerPool::builder()
                .name(name)
                .workers(1)
                .queue_capacity(1)
                .overflow(overflow)
                .build()
                .unwrap()
        };
        (
            build("rej", weft_core::Overflow::Reject),
            build("old", weft_core::Overflow::DropOldest),
        )
    });
    let seen: Seen = Arc::default();
    let rec = Rec(seen.clone());
    metrics::with_local_recorder(&rec, || {
        rt.block_on(async {
            // Nothing has run yet on this current-thread runtime: the
            // worker has not taken the first job, so the queue (1) is full.
            let _first = reject.try_submit(async {}).unwrap();
            assert!(reject.try_submit(async {}).is_err());
            assert!(reject.try_submit(async {}).is_err());
            let evicted = drop_oldest.try_submit(async {}).unwrap();
            let _kept = drop_oldest.try_submit(async {}).unwrap();
            assert!(evicted.await.is_err(), "the oldest job was evicted");
            reject
                .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
                .await;
            drop_oldest
                .shutdown(ShutdownMode::Drain(Duration::from_secs(1)))
                .await;
        });
    });
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.get("weft_pool_jobs_total{name=rej,outcome=rejected}"),
        Some(&2.0),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("weft_pool_jobs_total{name=old,outcome=evicted}"),
        Some(&1.0),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("weft_pool_jobs_total{name=rej,outcome=succeeded}"),
        Some(&1.0),
        "{seen:?}"
    );
}

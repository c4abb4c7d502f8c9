//! With the `metrics` feature, the names listed in docs/metrics.md are
//! emitted.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use weft_actor::supervisor::{Backoff, ChildSpec, SupervisorBuilder};
use weft_actor::{Actor, Builder, Context};
use weft_core::Overflow;

#[derive(Default)]
struct Rec {
    counters: Mutex<HashMap<String, Arc<Cell>>>,
}

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Ordering::SeqCst);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, Ordering::SeqCst);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .filter(|l| l.key() != "name")
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .counters
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Rec {
    fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

struct Crashy;
impl Actor for Crashy {
    type Msg = bool;
    async fn handle(&mut self, crash: bool, _: &mut Context<Self>) {
        if crash {
            panic!("crash");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn lifecycle_metrics_are_emitted() {
    let rec = Rec::default();
    metrics::with_local_recorder(&rec, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            // A refused message, a panic, a termination.
            let a = Builder::new()
                .capacity(1)
                .overflow(Overflow::Reject)
                .spawn(Crashy)
                .unwrap();
            a.tell(false).await.unwrap();
            tokio::task::yield_now().await;
            a.tell(false).await.unwrap();
            assert!(a.tell(false).await.is_err());
            a.tell(true).await.ok();
            let a2 = weft_actor::spawn(Crashy);
            a2.tell(true).await.unwrap();
            a2.wait().await;

            // A restart, then an escalation.
            let mut b = SupervisorBuilder::new("sup")
                .intensity(1, Duration::from_secs(5))
                .backoff(Backoff::none());
            let c = b.add(ChildSpec::new("c", || Crashy)).unwrap();
            let sup = b.start().unwrap();
            c.tell(true).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
            c.tell(true).await.unwrap();
            sup.wait().await;
            a.stop(tokio::time::Instant::now() + Duration::from_secs(1))
                .await;
        });
    });
    assert!(rec.get("weft_actor_rejected_total") >= 1);
    assert_eq!(rec.get("weft_actor_panics_total"), 3);
    assert_eq!(rec.get("weft_actor_restarts_total"), 1);
    assert_eq!(rec.get("weft_actor_escalations_total"), 1);
    assert_eq!(rec.get("weft_actor_terminated_total{exit=panicked}"), 1);
    assert!(rec.get("weft_actor_terminated_total{exit=escalated}") >= 1);
}

//! With the `metrics` feature, the names in docs/metrics.md are emitted.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use weft_pipeline::{Pipeline, Stage};

type Store = Mutex<HashMap<String, f64>>;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(Default::default)
}

fn key_string(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

struct Handle(String);

impl metrics::CounterFn for Handle {
    fn increment(&self, value: u64) {
        *store().lock().unwrap().entry(self.0.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        store().lock().unwrap().insert(self.0.clone(), value as f64);
    }
}

impl metrics::HistogramFn for Handle {
    fn record(&self, value: f64) {
        *store().lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
}

struct Sum;

impl Recorder for Sum {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle(key_string(key))))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle(key_string(key))))
    }
}

#[tokio::test]
async fn emits_the_documented_names() {
    metrics::set_global_recorder(Sum).unwrap();
    let report = Pipeline::from_iter(0..100u32)
        .named("m")
        .try_map(Stage::new("parse").skip_errors(), |x| {
            if x % 10 == 0 { Err("ten") } else { Ok(x) }
        })
        .run()
        .await
        .unwrap();
    assert_eq!(report.failed, 10);
    let got = store().lock().unwrap().clone();
    let get = |k: &str| {
        got.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing in {got:?}"))
    };
    assert_eq!(
        get("weft_pipeline_items_total{name=m,outcome=completed,stage=parse}"),
        90.0
    );
    assert_eq!(
        get("weft_pipeline_items_total{name=m,outcome=failed,stage=parse}"),
        10.0
    );
    assert_eq!(
        get("weft_pipeline_emitted_total{name=m,stage=source}"),
        100.0
    );
    assert_eq!(
        get("weft_pipeline_items_total{name=m,outcome=completed,stage=sink}"),
        90.0
    );
    assert_eq!(get("weft_pipeline_retries_total{name=m,stage=parse}"), 0.0);
    assert!(get("weft_pipeline_stage_seconds{name=m,stage=parse,state=busy}") >= 0.0);
}

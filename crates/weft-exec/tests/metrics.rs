//! With the `metrics` feature, every component emits under the names of
//! docs/metrics.md, labelled with its name, to whatever recorder is current
//! when the event happens (also one installed after the component was
//! built).
#![cfg(feature = "metrics")]

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, Service, ServiceExt, service_fn};
use weft_core::{BoxError, Overflow};
use weft_exec::{
    AdaptiveLimitLayer, BoundedExecutor, Degradation, KeyedRateLimitLayer, KeyedRateLimiter,
    LoadShedLayer, TaskError, Thresholds, Vegas,
};

type Entries = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// What was recorded since the last call (the debugging recorder's
/// snapshot drains counters and gauges).
fn take(s: &Snapshotter) -> Entries {
    s.snapshot().into_vec()
}

/// The value of the metric `name` whose labels include all of `labels`.
fn value<'a>(e: &'a Entries, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    e.iter().find_map(|(ck, _, _, v)| {
        let key = ck.key();
        let matches = key.name() == name
            && labels
                .iter()
                .all(|(k, want)| key.labels().any(|l| l.key() == *k && l.value() == *want));
        matches.then_some(v)
    })
}

fn counter(e: &Entries, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(e, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?} in {e:?}"),
    }
}

fn gauge(e: &Entries, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(e, name, labels) {
        Some(DebugValue::Gauge(x)) => x.into_inner(),
        other => panic!("{name} {labels:?}: {other:?} in {e:?}"),
    }
}

#[test]
fn every_component_emits_under_its_documented_names() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let rt = support::paused();
    rt.block_on(async {
        // Built before any recorder is installed: events still arrive.
        let exec = BoundedExecutor::builder()
            .name("jobs")
            .max_running(1)
            .queue_capacity(1)
            .overflow(Overflow::Reject)
            .build()
            .unwrap();
        let _recorder = metrics::set_default_local_recorder(&recorder);

        let first = exec
            .spawn(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("boom")
            })
            .await
            .unwrap();
        let second = exec.spawn(async { 2 }).await.unwrap();
        assert!(exec.spawn(async { 3 }).await.is_err());
        assert!(matches!(first.await, Err(TaskError::Panicked(_))));
        assert_eq!(second.await, Ok(2));
        let e = take(&snap);
        let tasks = "weft_exec_tasks_total";
        let jobs = ("name", "jobs");
        assert_eq!(counter(&e, tasks, &[jobs, ("outcome", "completed")]), 1);
        assert_eq!(counter(&e, tasks, &[jobs, ("outcome", "panicked")]), 1);
        assert_eq!(counter(&e, "weft_exec_spawn_refused_total", &[jobs]), 1);

        // LoadShed over an adaptive limit of 1: the second call is shed.
        let limit = AdaptiveLimitLayer::named("db", Vegas::new().initial(1).min(1));
        let mut svc = LoadShedLayer::named("edge").layer(limit.layer(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, BoxError>(())
        })));
        assert_eq!(
            gauge(&take(&snap), "weft_exec_limit", &[("name", "db")]),
            1.0
        );
        let held = svc.ready().await.unwrap().call(());
        let shed = svc.ready().await.unwrap().call(()).await;
        assert!(shed.is_err());
        held.await.unwrap();
        assert_eq!(
            counter(&take(&snap), "weft_exec_shed_total", &[("name", "edge")]),
            1
        );

        // A keyed rate limit of one a minute: the second call of a key is refused.
        let per_minute = Quota::per_minute(NonZeroU32::new(1).unwrap());
        let limiter = KeyedRateLimiter::new(per_minute).name("tenants");
        let mut keyed = KeyedRateLimitLayer::new(limiter, |k: &u32| *k)
            .layer(service_fn(|k: u32| async move { Ok::<_, BoxError>(k) }));
        assert_eq!(keyed.ready().await.unwrap().call(7).await.unwrap(), 7);
        assert!(keyed.ready().await.unwrap().call(7).await.is_err());
        let limited = counter(
            &take(&snap),
            "weft_exec_rate_limited_total",
            &[("name", "tenants")],
        );
        assert_eq!(limited, 1);

        // Degradation: the level gauge follows the signal.
        let d = Degradation::builder()
            .name("site")
            .signal("cpu", Thresholds::new(0.7, 0.8, 0.9))
            .build()
            .unwrap();
        let level = "weft_exec_degradation_level";
        assert_eq!(gauge(&take(&snap), level, &[("name", "site")]), 0.0);
        d.record("cpu", 0.85);
        assert_eq!(gauge(&take(&snap), level, &[("name", "site")]), 2.0);
    });
}

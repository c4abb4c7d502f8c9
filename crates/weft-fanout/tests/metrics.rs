//! With the `metrics` feature, broadcast, hedge and scatter emit under the
//! names of docs/metrics.md, labelled with their names, to whatever recorder
//! is current when the event happens (also one installed after the
//! component was built).
#![cfg(feature = "metrics")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, Service, ServiceExt, service_fn};
use weft_core::BoxError;
use weft_fanout::broadcast::{Broadcast, FirstSuccess};
use weft_fanout::hedge::HedgeLayer;
use weft_fanout::scatter;

type Entries = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The counter `name` whose labels include all of `labels` (0 if absent).
fn counter(e: &Entries, name: &str, labels: &[(&str, &str)]) -> u64 {
    e.iter()
        .find_map(|(ck, _, _, v)| {
            let key = ck.key();
            let matches = key.name() == name
                && labels
                    .iter()
                    .all(|(k, want)| key.labels().any(|l| l.key() == *k && l.value() == *want));
            match (matches, v) {
                (true, DebugValue::Counter(n)) => Some(*n),
                _ => None,
            }
        })
        .unwrap_or(0)
}

/// A replica answering `ok` after `delay`.
fn replica(
    delay: Duration,
    ok: bool,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |x: u32| async move {
        tokio::time::sleep(delay).await;
        if ok {
            Ok(x)
        } else {
            Err(BoxError::from("replica failed"))
        }
    })
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn broadcast_hedge_and_scatter_emit_under_their_documented_names() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let rt = paused();
    rt.block_on(async {
        // Built before any recorder is installed: events still arrive.
        let ms = Duration::from_millis;
        let mut bc = Broadcast::new(
            vec![
                replica(ms(10), true),
                replica(ms(50), true),
                replica(ms(90), true),
            ],
            FirstSuccess,
        )
        .unwrap()
        .with_name("replicas");
        let mut failing = Broadcast::new(vec![replica(ms(5), false)], FirstSuccess)
            .unwrap()
            .with_name("failing");
        // Call 0 is slow, so it is hedged and the hedge (call 1) wins; call
        // 2 is slow too but the budget (one hedge) is spent.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let inner = service_fn(move |()| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(if n == 1 { ms(1) } else { ms(100) }).await;
                Ok::<_, BoxError>(n)
            }
        });
        let mut hedged = HedgeLayer::builder()
            .name("lookups")
            .fixed_delay(ms(10))
            .budget_ratio(0.0)
            .budget_burst(1)
            .build()
            .unwrap()
            .layer(inner);

        let _recorder = metrics::set_default_local_recorder(&recorder);
        assert_eq!(bc.ready().await.unwrap().call(7).await.unwrap(), 7);
        assert!(failing.ready().await.unwrap().call(7).await.is_err());
        assert_eq!(hedged.ready().await.unwrap().call(()).await.unwrap(), 1);
        assert_eq!(hedged.ready().await.unwrap().call(()).await.unwrap(), 2);
        let results = scatter(0..5u32, 2, |i| async move {
            if i == 3 { Err("three") } else { Ok(i) }
        })
        .unwrap()
        .name("items")
        .collect_all()
        .await;
        assert!(results.is_err(), "item 3 failed");
    });
    let e = snap.snapshot().into_vec();
    let bcast = "weft_fanout_broadcast_calls_total";
    assert_eq!(
        counter(&e, bcast, &[("name", "replicas"), ("outcome", "success")]),
        1,
        "{e:?}"
    );
    assert_eq!(
        counter(&e, bcast, &[("name", "failing"), ("outcome", "failure")]),
        1,
        "{e:?}"
    );
    assert_eq!(
        counter(
            &e,
            "weft_fanout_broadcast_losers_cancelled_total",
            &[("name", "replicas")]
        ),
        2,
        "the two slower replicas are cancelled once the first succeeds"
    );
    assert_eq!(
        counter(
            &e,
            "weft_fanout_hedge_attempts_total",
            &[("name", "lookups")]
        ),
        1
    );
    assert_eq!(
        counter(&e, "weft_fanout_hedge_wins_total", &[("name", "lookups")]),
        1
    );
    assert_eq!(
        counter(
            &e,
            "weft_fanout_hedge_budget_denied_total",
            &[("name", "lookups")]
        ),
        1
    );
    let items = "weft_fanout_scatter_items_total";
    assert_eq!(
        counter(&e, items, &[("name", "items"), ("outcome", "ok")]),
        4,
        "{e:?}"
    );
    assert_eq!(
        counter(&e, items, &[("name", "items"), ("outcome", "failed")]),
        1,
        "{e:?}"
    );
}

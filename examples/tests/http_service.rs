//! End-to-end tests of the `http_service` example: the app on a loopback
//! port, real HTTP/1.1 requests over TCP, the Prometheus scrape checked
//! against what was sent, and a graceful shutdown with requests in flight.
//!
//! The metrics recorder is process-wide, so it is installed once
//! ([`recorder`]); each test names its components differently so that their
//! series do not mix.

// The tests use most, not all, of the app's API.
#[allow(dead_code)]
#[path = "../http_service/app.rs"]
mod app;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::Duration;

use app::{App, Config, HttpResponse, request, sample};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use weft_breaker::State;
use weft_exec::Quota;

fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| app::install_prometheus().expect("install the prometheus recorder"))
        .clone()
}

/// A small, predictable service: a concurrency limit of exactly 4 (AIMD
/// capped at its start; it can only go down, on responses slower than
/// 50 ms), 5 requests per client per minute, a breaker that opens after 3
/// failures for 300 ms.
fn config(name: &str) -> Config {
    Config {
        name: name.to_owned(),
        initial_limit: 4,
        max_limit: 4,
        latency_threshold: Duration::from_millis(50),
        rate: Quota::per_minute(NonZeroU32::new(5).unwrap()),
        breaker_failures: 3,
        breaker_open: Duration::from_millis(300),
        hash_workers: 1,
        hash_queue: 8,
        downstream_latency: Duration::from_millis(1),
        drain_timeout: Duration::from_secs(10),
        signals: false,
    }
}

async fn start(name: &str) -> App {
    let metrics = recorder();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    App::start(listener, config(name), Some(metrics))
        .await
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str, client: &str) -> HttpResponse {
    request(addr, "GET", path, Some(client))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn post(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "POST", path, None)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Waits (polling, up to 10 s) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, metric, labels)
        .unwrap_or_else(|| panic!("{metric}{labels:?} missing from the scrape:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_breaker_pool_and_metrics_over_http() {
    let name = "t_api";
    let app = start(name).await;
    let addr = app.addr();
    let breaker = format!("{name}_downstream");
    let pool = format!("{name}_hash");

    // Normal traffic: every route answers (one client per request, so the
    // rate limit stays out of the way).
    let r = get(addr, "/healthz", "n0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(addr, "/work?ms=1", "n1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "worked 1 ms\n"));
    for (i, n) in [1_000u64, 2_000, 3_000].into_iter().enumerate() {
        let r = get(addr, &format!("/hash?n={n}"), &format!("h{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, format!("n={n} hash={:016x}\n", app::hash(n)));
    }
    let r = get(addr, "/downstream?key=eur", "d0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("eur="), "{}", r.body);
    let r = get(addr, "/hash?n=lots", "bad").await;
    assert_eq!(r.status, 400);

    // Rate limit: a client's budget is 5 requests per minute; the 6th gets
    // 429 with a Retry-After of about 12 s (one cell every 60/5 s).
    for i in 0..5 {
        let r = get(addr, "/work?ms=0", "greedy").await;
        assert_eq!(r.status, 200, "request {i} of the greedy client");
    }
    let r = get(addr, "/work?ms=0", "greedy").await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "retry-after {retry}");
    assert!(r.body.contains("rate limited"), "{}", r.body);
    // Another client is not affected.
    assert_eq!(get(addr, "/work?ms=0", "polite").await.status, 200);

    // Overload: fill the concurrency limit with slow requests, then three
    // more are shed at once (503, Retry-After) instead of queueing.
    // (4, unless a response of the traffic above took over 50 ms on a busy
    // machine and the limit already backed off.)
    let limit = app.limit();
    assert!((1..=4).contains(&limit), "limit {limit}");
    let slow: Vec<_> = (0..limit)
        .map(|i| {
            tokio::spawn(async move {
                request(addr, "GET", "/work?ms=1500", Some(&format!("slow{i}"))).await
            })
        })
        .collect();
    until("the slow requests to be in flight", || {
        app.working() == limit
    })
    .await;
    for i in 0..3 {
        let r = get(addr, "/work?ms=0", &format!("extra{i}")).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body, "overloaded: retry later\n");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    for h in slow {
        let r = h.await.unwrap().expect("a slow request was cut");
        assert_eq!((r.status, r.body.as_str()), (200, "worked 1500 ms\n"));
    }

    // Adaptive: responses slower than the 50 ms threshold count as drops,
    // and once a window of samples has gathered the limit backs off.
    // (One at a time: the limit may already be lower than 4 here, as the
    // requests above were slow too.)
    for i in 0..12 {
        let r = get(addr, "/work?ms=60", &format!("a{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let lowered = app.limit();
    assert!(lowered < 4, "the limit did not back off: {lowered}");

    // Downstream outage: three failures (502) open the breaker, the next
    // call is refused (503 + Retry-After) without reaching the downstream.
    assert_eq!(post(addr, "/admin/outage?on=true").await.status, 200);
    for i in 0..3 {
        let r = get(addr, "/downstream?key=x", &format!("o{i}")).await;
        assert_eq!(r.status, 502, "{}", r.body);
    }
    let r = get(addr, "/downstream?key=x", "o3").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("circuit breaker is open"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(app.breaker().state(), State::Open);

    // The scrape agrees with what was sent.
    let m = get(addr, "/metrics", "scraper").await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        m.header("content-type")
    );
    let text = m.body.as_str();
    let n = [("name", name)];
    assert_eq!(value(text, "weft_exec_rate_limited_total", &n), 1.0);
    assert_eq!(value(text, "weft_exec_shed_total", &n), 3.0);
    assert_eq!(value(text, "weft_exec_limit", &n), app.limit() as f64);
    assert_eq!(value(text, "weft_shutdown_in_flight", &n), 0.0);
    let b = [("name", breaker.as_str())];
    let calls = |outcome| {
        value(
            text,
            "weft_breaker_calls_total",
            &[("name", breaker.as_str()), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("success"), 1.0);
    assert_eq!(calls("failure"), 3.0);
    assert_eq!(value(text, "weft_breaker_rejected_total", &b), 1.0);
    assert_eq!(value(text, "weft_breaker_state", &b), 1.0);
    assert_eq!(
        value(
            text,
            "weft_breaker_transitions_total",
            &[
                ("name", breaker.as_str()),
                ("from", "closed"),
                ("to", "open")
            ]
        ),
        1.0
    );
    let p = [("name", pool.as_str())];
    assert_eq!(
        value(
            text,
            "weft_pool_jobs_total",
            &[("name", pool.as_str()), ("outcome", "succeeded")]
        ),
        3.0
    );
    assert_eq!(value(text, "weft_pool_job_duration_seconds_count", &p), 3.0);
    assert_eq!(value(text, "weft_pool_workers", &p), 1.0);
    assert_eq!(value(text, "weft_pool_queue_depth", &p), 0.0);
    // The metrics agree with the components' own stats.
    assert_eq!(app.rate_limiter().stats().rate_limited, 1);
    assert_eq!(app.pool_stats().succeeded, 3);
    assert_eq!(app.breaker().stats().failures, 3);

    // The outage ends; after the open duration a probe closes the breaker.
    assert_eq!(post(addr, "/admin/outage?on=false").await.status, 200);
    let mut tries = 0;
    loop {
        tries += 1;
        let r = get(addr, "/downstream?key=y", &format!("p{tries}")).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(tries < 200, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.breaker().state(), State::Closed);
    let text = get(addr, "/metrics", "scraper").await.body;
    assert_eq!(value(&text, "weft_breaker_state", &b), 0.0);
    assert_eq!(
        value(
            &text,
            "weft_breaker_transitions_total",
            &[
                ("name", breaker.as_str()),
                ("from", "half_open"),
                ("to", "closed")
            ]
        ),
        1.0
    );

    app.trigger();
    let report = app.shutdown_report().await;
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_cuts_no_request_in_flight() {
    let name = "t_shutdown";
    let app = start(name).await;
    let addr = app.addr();
    assert_eq!(get(addr, "/healthz", "c0").await.status, 200);

    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                request(addr, "GET", "/work?ms=2000", Some(&format!("f{i}"))).await
            })
        })
        .collect();
    until("four requests in flight", || {
        app.working() == 4 && app.http_stats().in_flight == 4
    })
    .await;

    app.trigger();
    let report = tokio::spawn({
        let coordinator = app.coordinator().clone();
        async move { coordinator.run().await }
    });

    // New requests are refused with 503 while the ones in flight finish...
    let r = get(addr, "/work?ms=0", "late").await;
    assert_eq!((r.status, r.body.as_str()), (503, "shutting down\n"));
    assert_eq!(r.header("connection"), Some("close"));
    let r = get(addr, "/healthz", "probe").await;
    assert_eq!(r.status, 503, "health checks fail while draining");
    // ...and the scrape still works, showing them in flight.
    let text = get(addr, "/metrics", "scraper").await.body;
    assert_eq!(
        value(&text, "weft_shutdown_in_flight", &[("name", name)]),
        4.0
    );
    assert_eq!(
        value(&text, "weft_shutdown_rejected_total", &[("name", name)]),
        2.0
    );

    // Every request in flight got its complete answer (a cut response is
    // an error from `request`).
    for h in in_flight {
        let r = h.await.unwrap().expect("a request in flight was cut");
        assert_eq!((r.status, r.body.as_str()), (200, "worked 2000 ms\n"));
    }
    let report = report.await.unwrap();
    assert!(report.is_clean(), "{report}");
    let http = report
        .component(name)
        .and_then(|c| c.detail.clone())
        .expect("the ShutdownLayer's report");
    assert_eq!(http.accepted, 5, "{http}");
    assert_eq!(http.accepted, http.completed + http.failed, "{http}");
    assert_eq!((http.cancelled, http.aborted), (0, 0), "{http}");
    assert_eq!(http.rejected_after_close, 2, "{http}");
    let pool = report
        .component(&format!("{name}_hash pool"))
        .and_then(|c| c.detail.clone())
        .expect("the pool's report");
    assert!(pool.is_clean(), "{pool}");
    assert!(report.component("http server").unwrap().is_clean());

    // The server is gone, and the shutdown's own metrics were recorded.
    assert!(request(addr, "GET", "/healthz", None).await.is_err());
    let text = recorder().render();
    assert!(
        value(
            &text,
            "weft_shutdown_components_total",
            &[("phase", "stop-accepting"), ("outcome", "completed")]
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "weft_shutdown_phase_duration_seconds_count",
            &[("phase", "drain")]
        ) >= 1.0
    );
}

/// The metric names documented in docs/metrics.md: the first column of its
/// per-crate tables (rows starting with `` | `weft_ ``).
fn documented() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `weft_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("weft_{name}"))
        .collect()
}

/// Every `weft_*` series the service exports is listed in docs/metrics.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_metric_names_are_documented() {
    let name = "t_docs";
    let app = start(name).await;
    let addr = app.addr();
    // Exercise every component so that each registers its series.
    get(addr, "/work?ms=0", "d").await;
    get(addr, "/hash?n=10", "d").await;
    get(addr, "/downstream?key=a", "d").await;
    for _ in 0..6 {
        get(addr, "/work?ms=0", "d2").await;
    }
    let text = get(addr, "/metrics", "scraper").await.body;
    app.trigger();
    assert!(app.shutdown_report().await.is_clean());
    let text = text + &recorder().render();

    let doc = documented();
    let mut missing: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("weft_"))
        .map(|l| {
            let series = l.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s))
                .unwrap_or(series);
            base.to_owned()
        })
        .filter(|base| !doc.contains(base))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "exported but not in docs/metrics.md: {missing:?}"
    );
}

/// Every metric the Grafana dashboard queries is listed in docs/metrics.md.
#[test]
fn dashboard_queries_documented_metrics() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/");
    let doc = documented();
    let dashboard = std::fs::read_to_string(format!("{root}grafana-dashboard.json"))
        .expect("docs/grafana-dashboard.json");
    assert!(dashboard.contains("\"panels\""), "not a dashboard");
    let mut names: Vec<&str> = dashboard
        .match_indices("weft_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 20, "{names:?}");
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|n| !doc.iter().any(|d| d == n))
        .collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard but not in docs/metrics.md: {missing:?}"
    );
}

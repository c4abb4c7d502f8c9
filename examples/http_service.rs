//! An HTTP service on axum with weft's layers, and Prometheus metrics.
//!
//! What it shows: axum is built on tower, so weft's layers drop in.
//! Requests pass, from the outside in, `weft-shutdown`'s `ShutdownLayer`
//! (503 once shutdown starts; in-flight requests drain), a per-client rate
//! limit keyed on the `x-client-id` header (`weft-exec`'s
//! `KeyedRateLimitLayer`: 429 + `Retry-After`), and an adaptive concurrency
//! limit (`weft-exec`'s AIMD `AdaptiveLimitLayer` under a `LoadShedLayer`:
//! past the limit, 503 at once instead of a queue). Behind them, `/hash` runs
//! CPU work on a bounded `weft-pool` `BlockingPool`, and `/downstream` calls a
//! simulated dependency through a `weft-breaker` circuit breaker (503 +
//! `Retry-After` while open). Every weft crate's `metrics` feature feeds
//! `metrics-exporter-prometheus`, rendered at `/metrics`. The app itself is in
//! `examples/http_service/app.rs`, shared with its integration test.
//!
//! Run it:
//!
//! ```text
//! cargo run --example http_service -- --stop-after 1   # demo traffic, 1 s more, a graceful stop
//! cargo run --example http_service                     # serve until Ctrl-C (twice to force)
//! cargo run --example http_service -- --addr 0.0.0.0:8080 --no-demo
//! ```
//!
//! While it runs (default address 127.0.0.1:3000, or a free port if taken):
//!
//! ```text
//! curl -i localhost:3000/work?ms=50 -H 'x-client-id: alice'
//! curl -i localhost:3000/hash?n=5000000
//! curl -i localhost:3000/downstream?key=eur
//! curl -i -X POST 'localhost:3000/admin/outage?on=true'   # then /downstream a few times
//! curl -s localhost:3000/metrics | grep weft_
//! ```
//!
//! What to look for: the demo prints the status codes of each traffic phase
//! (a greedy client gets 429s, a burst past the concurrency limit gets 503s,
//! the outage gives three 502s and then 503s from the open breaker, and the
//! breaker closes again after the outage), the `weft_*` lines of `/metrics`
//! with the same counts, then a shutdown with requests in flight: they all
//! get complete 200 answers, a request sent after the trigger gets 503, and
//! the report's counts add up (accepted = completed + failed + cancelled). It
//! exits non-zero if they do not.

#[path = "http_service/app.rs"]
mod app;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use app::{App, Config, request};
use tokio::net::TcpListener;

struct Args {
    addr: String,
    stop_after: Option<Duration>,
    demo: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".to_owned(),
        stop_after: None,
        demo: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => args.addr = it.next().ok_or("--addr needs an address")?,
            "--stop-after" => {
                let secs: f64 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--stop-after needs a number of seconds")?;
                args.stop_after = Some(Duration::from_secs_f64(secs));
            }
            "--no-demo" => args.demo = false,
            other => {
                return Err(format!(
                    "unknown argument {other}: use --addr ADDR, --stop-after SECS, --no-demo"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), weft_core::BoxError> {
    weft_examples::init_tracing();
    let args = parse_args()?;

    // The recorder first: weft components register their metric handles
    // when they are built.
    let metrics = app::install_prometheus()?;
    let listener = match TcpListener::bind(&args.addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            println!("{} is taken; using a free port", args.addr);
            TcpListener::bind("127.0.0.1:0").await?
        }
        Err(e) => return Err(e.into()),
    };
    let app = App::start(listener, Config::default(), Some(metrics)).await?;
    let addr = app.addr();
    println!("http_service on http://{addr} (metrics at /metrics)");

    if args.demo {
        demo(&app).await?;
    }

    // In flight at the stop: slow requests started just before the trigger.
    let in_flight = match args.stop_after {
        Some(after) => {
            println!("\nstopping in {:.1} s", after.as_secs_f64());
            tokio::time::sleep(after).await;
            let slow: Vec<_> = (0..4)
                .map(|i| {
                    let client = format!("late-{i}");
                    tokio::spawn(async move {
                        request(addr, "GET", "/work?ms=400", Some(&client)).await
                    })
                })
                .collect();
            while app.working() < slow.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!(
                "{} requests in flight; triggering the shutdown",
                app.working()
            );
            app.trigger();
            slow
        }
        None => {
            println!("\nserving until Ctrl-C");
            Vec::new()
        }
    };

    let after_trigger = async {
        app.coordinator().requested().cancelled().await;
        request(addr, "GET", "/work?ms=0", Some("late-comer")).await
    };
    let (report, late) = tokio::join!(app.shutdown_report(), after_trigger);

    let mut ok = true;
    if !in_flight.is_empty() {
        println!("\nrequests in flight at the trigger:");
    }
    for (i, h) in in_flight.into_iter().enumerate() {
        match h.await? {
            Ok(r) => {
                println!("  #{i}: {} {}", r.status, r.body.trim_end());
                ok &= r.status == 200;
            }
            Err(e) => {
                println!("  #{i}: CUT ({e})");
                ok = false;
            }
        }
    }
    match late {
        Ok(r) => println!(
            "a request after the trigger: {} {}",
            r.status,
            r.body.trim_end()
        ),
        Err(e) => println!("a request after the trigger: not served ({e})"),
    }

    println!("\n{report}");
    let http = report
        .component(&Config::default().name)
        .and_then(|c| c.detail.clone())
        .ok_or("the http component is missing from the report")?;
    let adds_up = http.accepted == http.completed + http.failed + http.cancelled + http.aborted;
    println!(
        "http: accepted {} = completed {} + failed {} + cancelled {} + aborted {}: {}; refused while shutting down: {}",
        http.accepted,
        http.completed,
        http.failed,
        http.cancelled,
        http.aborted,
        if adds_up {
            "adds up"
        } else {
            "DOES NOT ADD UP"
        },
        http.rejected_after_close
    );
    ok &= adds_up && http.aborted == 0 && report.is_clean();
    if !ok {
        eprintln!("FAILED: a request was cut, or the counts do not add up");
        std::process::exit(1);
    }
    Ok(())
}

/// Status code counts of a batch of responses (`cut` for a failed read).
fn tally(results: Vec<std::io::Result<app::HttpResponse>>) -> String {
    let mut counts = BTreeMap::<String, usize>::new();
    for r in results {
        let key = match r {
            Ok(r) => r.status.to_string(),
            Err(_) => "cut".to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v}×{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn concurrent(addr: SocketAddr, reqs: Vec<(String, String)>) -> String {
    let handles: Vec<_> = reqs
        .into_iter()
        .map(|(path, client)| {
            tokio::spawn(async move { request(addr, "GET", &path, Some(&client)).await })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task panicked"));
    }
    tally(out)
}

/// A minute of a service's life in a few seconds.
async fn demo(app: &App) -> Result<(), weft_core::BoxError> {
    let addr = app.addr();
    for wave in 0..3 {
        let mut normal = Vec::new();
        for i in 0..3 {
            normal.push((format!("/work?ms={}", 5 + i), "alice".to_owned()));
            normal.push((format!("/hash?n={}", 500_000 * (i + 1)), "bob".to_owned()));
            normal.push((format!("/downstream?key=k{i}"), "carol".to_owned()));
        }
        println!(
            "normal traffic, wave {wave} (9 concurrent requests, 3 clients): {}",
            concurrent(addr, normal).await
        );
    }

    let mut greedy = Vec::new();
    for _ in 0..60 {
        greedy.push(request(addr, "GET", "/work?ms=0", Some("greedy")).await);
    }
    let retry_after = greedy
        .iter()
        .flatten()
        .find_map(|r| r.header("retry-after").map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned());
    println!(
        "one greedy client, 60 requests back to back (budget: burst 40, 20/s): {} (Retry-After: {retry_after} s)",
        tally(greedy)
    );

    let limit = app.limit();
    let burst = (0..limit + 20)
        .map(|i| ("/work?ms=300".to_owned(), format!("burst-{i}")))
        .collect();
    println!(
        "{} concurrent slow requests against a concurrency limit of {limit}: {}",
        limit + 20,
        concurrent(addr, burst).await
    );

    request(addr, "POST", "/admin/outage?on=true", None).await?;
    let mut during = Vec::new();
    for i in 0..6 {
        during.push(request(addr, "GET", &format!("/downstream?key=o{i}"), Some("carol")).await);
    }
    println!(
        "downstream outage, 6 calls: {} (breaker {})",
        tally(during),
        app.breaker().state()
    );
    request(addr, "POST", "/admin/outage?on=false", None).await?;
    let open = app.breaker().stats();
    tokio::time::sleep(Config::default().breaker_open + Duration::from_millis(100)).await;
    let probe = request(addr, "GET", "/downstream?key=probe", Some("carol")).await?;
    println!(
        "outage over, after the open duration: {} (breaker {}; opened {} time(s), rejected {})",
        probe.status,
        app.breaker().state(),
        open.opened,
        open.rejected
    );

    let scraped = request(addr, "GET", "/metrics", None).await?;
    println!("\n/metrics (weft_* series, histogram buckets left out):");
    for line in scraped.body.lines() {
        if line.starts_with("weft_") && !line.contains("_bucket{") {
            println!("  {line}");
        }
    }

    // The scrape and the components' own stats() tell the same story.
    let name = Config::default().name;
    let pool = format!("{name}_hash");
    let checks = [
        (
            "weft_exec_rate_limited_total",
            vec![("name", name.as_str())],
            app.rate_limiter().stats().rate_limited,
        ),
        (
            "weft_pool_jobs_total",
            vec![("name", pool.as_str()), ("outcome", "succeeded")],
            app.pool_stats().succeeded,
        ),
    ];
    for (metric, labels, stat) in checks {
        let scraped = app::sample(&scraped.body, metric, &labels).unwrap_or(0.0);
        println!("{metric}{labels:?}: scraped {scraped}, stats() {stat}");
        if scraped != stat as f64 {
            return Err(format!("{metric} disagrees with stats()").into());
        }
    }
    let http = app.http_stats();
    println!(
        "ShutdownLayer so far: accepted {}, completed {}, failed {}, in flight {}",
        http.accepted, http.completed, http.failed, http.in_flight
    );
    Ok(())
}

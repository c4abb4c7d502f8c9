//! Fan-out done carefully: scatter-gather, a hedged call against a service
//! with a heavy latency tail, and first-success across replicas.
//!
//! Run: `cargo run --example fan_out` (about two seconds of real time).
//!
//! What to look for in the output:
//! 1. `scatter`: five 50 ms calls answered in about 50 ms, not 250 ms.
//! 2. `hedge`: the same 400 calls to a service where 1 attempt in 10 takes
//!    100 ms; without hedging the p99 is about 100 ms, with a hedge sent
//!    after the recent p80 (learned during a warm-up) it drops to a few ms, for a small share of extra
//!    requests (the hedge budget caps it at 20%).
//! 3. `first success`: the fast replica fails, but its error does not beat
//!    the later success; the slowest replica is cancelled (`losers
//!    cancelled: 1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tower::{Service, ServiceExt, service_fn};
use weft_core::BoxError;
use weft_fanout::broadcast::{Broadcast, FirstSuccess};
use weft_fanout::hedge::HedgeLayer;
use weft_fanout::{deadline, scatter};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    weft_examples::init_tracing();

    // 1. A request that calls five slow services in parallel, under one
    //    deadline that every call inherits.
    let start = Instant::now();
    let parts = deadline::within(
        Duration::from_millis(500),
        scatter(
            ["users", "orders", "prices", "stock", "reviews"],
            5,
            |svc| async move {
                sleep(Duration::from_millis(50)).await;
                Ok::<_, BoxError>(format!("{svc}: ok"))
            },
        )?
        .try_collect(),
    )
    .await??;
    println!(
        "scatter: {} services answered in {} ms (sequentially: 250 ms): {}",
        parts.len(),
        start.elapsed().as_millis(),
        parts.join(", ")
    );

    // 2. A service with a heavy tail: every 10th attempt takes 100 ms.
    let attempts = Arc::new(AtomicU64::new(0));
    let backend = {
        let attempts = attempts.clone();
        service_fn(move |_req: u64| {
            let n = attempts.fetch_add(1, Ordering::Relaxed);
            async move {
                let ms = if tail(n) { 100 } else { 2 + n % 3 };
                sleep(Duration::from_millis(ms)).await;
                Ok::<_, BoxError>(n)
            }
        })
    };
    let plain = p99(backend.clone(), 400).await?;
    let plain_attempts = attempts.swap(0, Ordering::Relaxed);
    let layer = HedgeLayer::builder()
        .latency_percentile(0.8)
        .min_samples(20)
        .max_extra_attempts(1)
        .budget_ratio(0.2)
        .build()?;
    let hedged_svc = layer.wrap(backend);
    // Warm up: the hedge delay is learned from recent latencies.
    p99(hedged_svc.clone(), 100).await?;
    attempts.store(0, Ordering::Relaxed);
    let before = hedged_svc.stats();
    let hedged = p99(hedged_svc.clone(), 400).await?;
    let hedged_attempts = attempts.load(Ordering::Relaxed);
    let stats = hedged_svc.stats();
    println!(
        "hedge: p99 without hedging {} ms ({} attempts), with hedging {} ms ({} attempts: {} hedges, {} won, {} refused by the budget, delay {:?})",
        plain.as_millis(),
        plain_attempts,
        hedged.as_millis(),
        hedged_attempts,
        stats.hedges - before.hedges,
        stats.hedge_wins - before.hedge_wins,
        stats.budget_denied - before.budget_denied,
        stats.delay,
    );

    // 3. First success across replicas.
    let replica = |name: &'static str, ms: u64, ok: bool| {
        service_fn(move |key: &'static str| async move {
            sleep(Duration::from_millis(ms)).await;
            if ok {
                Ok(format!("{key} from {name} after {ms} ms"))
            } else {
                Err(BoxError::from(format!("{name} is down")))
            }
        })
    };
    let mut replicas = Broadcast::new(
        vec![
            replica("eu-1", 5, false),
            replica("eu-2", 30, true),
            replica("us-1", 80, true),
        ],
        FirstSuccess,
    )?;
    let answer = replicas.ready().await?.call("user:42").await?;
    let s = replicas.stats();
    println!(
        "first success: {answer} (calls: {}, succeeded: {}, losers cancelled: {})",
        s.calls, s.succeeded, s.losers_cancelled
    );
    Ok(())
}

/// Whether attempt `n` lands in the tail (1 in 10, spread by a hash).
fn tail(n: u64) -> bool {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x % 10 == 0
}

/// Runs `calls` requests, 40 at a time, and returns their p99 latency.
async fn p99<S>(svc: S, calls: u64) -> Result<Duration, BoxError>
where
    S: Service<u64, Response = u64, Error = BoxError> + Clone,
{
    let mut latencies = scatter(0..calls, 40, |i| {
        let svc = svc.clone();
        async move {
            let start = Instant::now();
            svc.oneshot(i).await?;
            Ok::<_, BoxError>(start.elapsed())
        }
    })?
    .try_collect()
    .await
    .map_err(|e| format!("{e}"))?;
    latencies.sort_unstable();
    Ok(latencies[(latencies.len() * 99).div_ceil(100) - 1])
}

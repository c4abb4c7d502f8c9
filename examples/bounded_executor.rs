//! A burst of 100,000 requests against a slow dependency, handled two ways:
//! one `tokio::spawn` per request (unbounded), and a weft-exec
//! `BoundedExecutor` (200 running, 2,000 waiting, the rest refused at once).
//!
//! Run: `cargo run --example bounded_executor` (about a second or two).
//!
//! What to look for: unbounded spawning accepts everything, so it holds every
//! request's memory at once and each request waits behind all the others
//! (p99 in the hundreds of milliseconds and growing with the burst). The
//! bounded executor holds at most 2,200 requests' memory, keeps the p99 of
//! the requests it serves bounded by its 50 ms queue timeout plus the
//! dependency's own latency (an order of magnitude lower), and refuses the
//! rest immediately (a caller can retry or get a 503); a task that waits
//! longer than the 50 ms queue timeout is failed without running. In both cases
//! `served + rejected = 100000`.
//!
//! The dependency serves 200 requests at a time, 1 ms each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use weft_core::Overflow;
use weft_exec::{BoundedExecutor, TaskError};

const REQUESTS: usize = 100_000;
const PAYLOAD: usize = 4096;
const DEPENDENCY_CAPACITY: usize = 200;

/// Bytes held by live requests, and the peak.
#[derive(Default)]
struct Memory {
    live: AtomicUsize,
    peak: AtomicUsize,
}

/// A request: its payload is counted while it is alive.
struct Request {
    payload: Vec<u8>,
    arrived: Instant,
    mem: Arc<Memory>,
}

impl Request {
    fn new(mem: &Arc<Memory>) -> Self {
        let live = mem.live.fetch_add(PAYLOAD, Ordering::Relaxed) + PAYLOAD;
        mem.peak.fetch_max(live, Ordering::Relaxed);
        Request {
            payload: vec![1; PAYLOAD],
            arrived: Instant::now(),
            mem: mem.clone(),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.mem.live.fetch_sub(PAYLOAD, Ordering::Relaxed);
    }
}

/// The slow dependency: 200 at a time, 1 ms each; the rest queue inside it.
async fn dependency(dep: Arc<Semaphore>, req: Request) -> Duration {
    let _slot = dep.acquire().await.expect("open");
    tokio::time::sleep(Duration::from_millis(1)).await;
    std::hint::black_box(req.payload.len());
    req.arrived.elapsed()
}

/// Resident memory in bytes, from the `VmRSS` line (in kB) of
/// `/proc/self/status` (whatever the page size); 0 where there is none.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

struct Report {
    served: usize,
    rejected: usize,
    p50: Duration,
    p99: Duration,
    peak_request_bytes: usize,
    rss_growth: usize,
    wall: Duration,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn unbounded() -> Report {
    let mem = Arc::new(Memory::default());
    let dep = Arc::new(Semaphore::new(DEPENDENCY_CAPACITY));
    let rss0 = rss();
    let start = Instant::now();
    let handles: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(dependency(dep.clone(), Request::new(&mem))))
        .collect();
    let rss_peak = rss();
    let mut lat = Vec::with_capacity(REQUESTS);
    for h in handles {
        lat.push(h.await.expect("request task"));
    }
    lat.sort_unstable();
    Report {
        served: lat.len(),
        rejected: 0,
        p50: percentile(&lat, 50),
        p99: percentile(&lat, 99),
        peak_request_bytes: mem.peak.load(Ordering::Relaxed),
        rss_growth: rss_peak.saturating_sub(rss0),
        wall: start.elapsed(),
    }
}

async fn bounded() -> Report {
    let mem = Arc::new(Memory::default());
    let dep = Arc::new(Semaphore::new(DEPENDENCY_CAPACITY));
    let exec = BoundedExecutor::builder()
        .name("requests")
        .max_running(DEPENDENCY_CAPACITY)
        .queue_capacity(2_000)
        .overflow(Overflow::Reject)
        .queue_timeout(Duration::from_millis(50))
        .run_timeout(Duration::from_secs(1))
        .build()
        .expect("executor");
    let rss0 = rss();
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut rejected = 0;
    for _ in 0..REQUESTS {
        match exec.try_spawn(dependency(dep.clone(), Request::new(&mem))) {
            Ok(h) => handles.push(h),
            // The request comes back inside the error; dropping it frees
            // its memory at once. A server would answer 503 here.
            Err(refused) => {
                rejected += 1;
                drop(refused.into_inner());
            }
        }
    }
    let rss_peak = rss();
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(d) => lat.push(d),
            Err(TaskError::QueueTimeout(_)) => rejected += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    lat.sort_unstable();
    let report = exec.shutdown(Instant::now() + Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report}");
    let stats = exec.stats();
    println!(
        "  executor stats: accepted {}, completed {}, refused {}, queue timeouts {}",
        stats.accepted, stats.completed, stats.rejected, stats.queue_timed_out
    );
    Report {
        served: lat.len(),
        rejected,
        p50: percentile(&lat, 50),
        p99: percentile(&lat, 99),
        peak_request_bytes: mem.peak.load(Ordering::Relaxed),
        rss_growth: rss_peak.saturating_sub(rss0),
        wall: start.elapsed(),
    }
}

#[tokio::main]
async fn main() {
    weft_examples::init_tracing();
    println!(
        "burst of {REQUESTS} requests, dependency serves {DEPENDENCY_CAPACITY} at a time, 1 ms each\n"
    );
    // The bounded run goes first so that the unbounded run's memory growth
    // is not hidden by memory the allocator kept from it.
    let b = bounded().await;
    let u = unbounded().await;
    let mb = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!();
    println!(
        "{:<28} {:>16} {:>16}",
        "", "tokio::spawn", "BoundedExecutor"
    );
    println!("{:<28} {:>16} {:>16}", "served", u.served, b.served);
    println!(
        "{:<28} {:>16} {:>16}",
        "refused or queue timeout", u.rejected, b.rejected
    );
    println!(
        "{:<28} {:>16} {:>16}",
        "served + rejected",
        u.served + u.rejected,
        b.served + b.rejected
    );
    println!(
        "{:<28} {:>13.1} ms {:>13.1} ms",
        "p50 latency (served)",
        u.p50.as_secs_f64() * 1e3,
        b.p50.as_secs_f64() * 1e3
    );
    println!(
        "{:<28} {:>13.1} ms {:>13.1} ms",
        "p99 latency (served)",
        u.p99.as_secs_f64() * 1e3,
        b.p99.as_secs_f64() * 1e3
    );
    println!(
        "{:<28} {:>13.1} MB {:>13.1} MB",
        "peak request memory",
        mb(u.peak_request_bytes),
        mb(b.peak_request_bytes)
    );
    println!(
        "{:<28} {:>13.1} MB {:>13.1} MB",
        "RSS growth during burst",
        mb(u.rss_growth),
        mb(b.rss_growth)
    );
    println!(
        "{:<28} {:>13.1} ms {:>13.1} ms",
        "wall time",
        u.wall.as_secs_f64() * 1e3,
        b.wall.as_secs_f64() * 1e3
    );
    assert_eq!(u.served + u.rejected, REQUESTS);
    assert_eq!(b.served + b.rejected, REQUESTS);
}

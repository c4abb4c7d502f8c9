//! A worker pool under pressure: backpressure, a panicking job, live stats
//! and a drained shutdown report.
//!
//! Run it:
//!
//! ```text
//! cargo run --example worker_pool
//! ```
//!
//! A producer submits 400 "image resize" jobs (each about 5 ms of async work)
//! as fast as it can to a pool of 4 workers whose queue holds 16. With
//! `Overflow::Block`, `submit` waits whenever the queue is full, so the
//! producer is slowed to the pool's pace and the queue never exceeds 16: watch
//! the `queued` column stay at or below 16 while `submitted` climbs. Job 123
//! panics: its own handle reports the panic (a `tracing` error is logged), the
//! pool keeps its 4 workers. At the end a drained shutdown prints its report,
//! whose counts add up: accepted = completed + failed + cancelled + aborted +
//! returned.

use std::time::Duration;

use weft_core::Overflow;
use weft_pool::{JobError, ShutdownMode, WorkerPool};

#[tokio::main]
async fn main() {
    weft_examples::init_tracing();
    // The pool catches job panics and logs them with tracing; keep the
    // default hook from also printing a backtrace.
    std::panic::set_hook(Box::new(|_| {}));

    let pool = WorkerPool::builder()
        .name("resize")
        .workers(4)
        .queue_capacity(16)
        .overflow(Overflow::Block)
        .timeout(Duration::from_secs(1))
        .build()
        .expect("valid pool configuration");

    // Live stats every 200 ms while the producer runs.
    let watcher = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut max_queued = 0;
            loop {
                tick.tick().await;
                let s = pool.stats();
                max_queued = max_queued.max(s.queued);
                println!(
                    "stats: submitted {:>3}  queued {:>2}  running {}  succeeded {:>3}  panicked {}  workers {}",
                    s.submitted, s.queued, s.running, s.succeeded, s.panicked, s.workers
                );
                if pool.is_closed() {
                    return max_queued;
                }
            }
        })
    };

    let started = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for i in 0..400u32 {
        // Under Overflow::Block this waits whenever 16 jobs are queued.
        let handle = pool
            .submit(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if i == 123 {
                    panic!("corrupt image #{i}");
                }
                i
            })
            .await
            .expect("the pool is open");
        handles.push(handle);
    }
    println!(
        "producer: submitted 400 jobs in {:?} (slowed down by backpressure)",
        started.elapsed()
    );

    // Shut down now: admission closes, the jobs still queued and running are
    // finished (drained) before the report comes back.
    let queued_at_shutdown = pool.stats().queued;
    let report = pool
        .shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
        .await;
    println!("shutdown drained {queued_at_shutdown} queued jobs");

    let mut ok = 0;
    for h in handles {
        match h.await {
            Ok(_) => ok += 1,
            Err(JobError::Panicked(p)) => println!("job failed: {p}"),
            Err(e) => println!("job failed: {e}"),
        }
    }

    let max_queued = watcher.await.expect("watcher");
    println!("results: {ok} ok, {} failed", 400 - ok);
    println!("queue never held more than {max_queued} jobs (capacity 16)");
    println!("report: {report}");
    assert!(report.is_balanced(), "every accepted job is accounted for");
    assert_eq!(report.completed, 399);
    assert_eq!(report.failed, 1);
    // Submitting after shutdown hands the job back instead of panicking.
    let refused = pool.submit(async { 0u32 }).await.unwrap_err();
    println!("after shutdown: {refused}");
}

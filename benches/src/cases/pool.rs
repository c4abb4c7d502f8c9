//! weft-pool on the reference workload (paired with the peers of
//! [`crate::cases::reference`] under `jobs/iters=N`), plus rayon for the
//! CPU-bound variant, memory per queued job and per idle worker, and a
//! granularity sweep against running the jobs sequentially.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use weft_pool::{BatchHandle, BlockingPool, ShutdownMode, WorkerPool};

use crate::workload::{self, QUEUE, job};
use crate::{Ctx, Group, Row, Target, Unit, throughput};

/// The pool group.
pub const GROUP: Group = Group {
    name: "pool",
    run,
    overheads: &[],
    targets: &[
        Target {
            case: "jobs/iters=0",
            weft: "weft-pool-batch",
            peer: "async-channel-pool",
            at_least: 1.2,
        },
        Target {
            case: "jobs/iters=100",
            weft: "weft-pool-batch",
            peer: "async-channel-pool",
            at_least: 1.0,
        },
        Target {
            case: "jobs/iters=0",
            weft: "weft-pool-submit",
            peer: "joinset-semaphore",
            at_least: 2.0,
        },
    ],
};

/// Jobs per queue item on the batch path.
pub const BATCH: u64 = 1024;

fn pool(workers: usize) -> WorkerPool {
    WorkerPool::builder()
        .name("bench")
        .workers(workers)
        .queue_capacity(QUEUE)
        .build()
        .expect("pool")
}

/// `submit` with a handle per job; the caller keeps a window of `QUEUE`
/// handles (the in-flight bound the spawn-per-job peers use) and awaits
/// them in order, the oldest once the window is full.
pub async fn weft_submit(jobs: u64, iters: u32) -> u64 {
    let pool = pool(workload::workers());
    let mut pending = VecDeque::with_capacity(QUEUE);
    let mut sum = 0u64;
    for i in 0..jobs {
        if pending.len() >= QUEUE {
            let h: weft_pool::JobHandle<u64> = pending.pop_front().expect("non-empty");
            sum = sum.wrapping_add(h.await.expect("job"));
        }
        let h = pool
            .submit(async move { job(i, iters) })
            .await
            .expect("open");
        pending.push_back(h);
    }
    for h in pending {
        sum = sum.wrapping_add(h.await.expect("job"));
    }
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(60)))
        .await;
    sum
}

/// `submit_batch` of [`BATCH`] jobs per queue item; a producer task
/// submits, the caller awaits each batch's results in order.
pub async fn weft_batch(jobs: u64, iters: u32) -> u64 {
    weft_batch_of(jobs, iters, BATCH).await
}

/// [`weft_batch`] with `batch` jobs per queue item.
pub async fn weft_batch_of(jobs: u64, iters: u32, batch: u64) -> u64 {
    let pool = pool(workload::workers());
    let p = pool.clone();
    let sum = batched_sum(jobs, batch, move |range| {
        let p = p.clone();
        async move {
            p.submit_batch(range.map(|k| async move { job(k, iters) }))
                .await
        }
    })
    .await;
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(60)))
        .await;
    sum
}

/// A producer task submits `jobs` in batches of `batch` through `submit`
/// and hands each batch's handle to the caller, who sums the results in
/// order.
async fn batched_sum<S, Fut, E>(jobs: u64, batch: u64, submit: S) -> u64
where
    S: Fn(std::ops::Range<u64>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<BatchHandle<u64>, E>> + Send,
    E: std::fmt::Debug,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut i = 0;
        while i < jobs {
            let end = (i + batch).min(jobs);
            let h = submit(i..end).await.expect("open");
            if tx.send(h).await.is_err() {
                break;
            }
            i = end;
        }
    });
    let mut sum = 0u64;
    while let Some(h) = rx.recv().await {
        for r in h.await {
            sum = sum.wrapping_add(r.expect("job"));
        }
    }
    sum
}

/// A sum that does not bounce one cache line between the workers.
#[derive(Default)]
struct StripedSum {
    cells: [CachePadded<AtomicU64>; 16],
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
thread_local! { static CELL: usize = NEXT.fetch_add(1, Ordering::Relaxed) % 16; }

impl StripedSum {
    fn add(&self, v: u64) {
        let c = &self.cells[CELL.with(|c| *c)];
        c.fetch_add(v, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.cells
            .iter()
            .fold(0u64, |a, c| a.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// Fire-and-forget `execute`, one job per queue item; jobs add into a
/// striped sum the caller reads after a drained shutdown.
pub async fn weft_execute(jobs: u64, iters: u32) -> u64 {
    let pool = pool(workload::workers());
    let sum = Arc::new(StripedSum::default());
    for i in 0..jobs {
        let s = sum.clone();
        pool.execute(async move { s.add(job(i, iters)) })
            .await
            .expect("open");
    }
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(60)))
        .await;
    sum.get()
}

/// The CPU-bound variant: dedicated worker threads, batches of closures.
pub async fn weft_blocking_batch(jobs: u64, iters: u32) -> u64 {
    let pool = BlockingPool::builder()
        .name("bench-blocking")
        .workers(workload::workers())
        .queue_capacity(QUEUE)
        .build_blocking()
        .expect("pool");
    let p = pool.clone();
    let sum = batched_sum(jobs, BATCH, move |range| {
        let p = p.clone();
        async move {
            p.submit_batch(range.map(|k| move |_: &mut ()| job(k, iters)))
                .await
        }
    })
    .await;
    pool.shutdown(ShutdownMode::Drain(Duration::from_secs(60)))
        .await;
    sum
}

/// rayon's `par_iter` over the jobs (the CPU-bound peer).
pub fn rayon_sum(rayon: &rayon::ThreadPool, jobs: u64, iters: u32) -> u64 {
    use rayon::prelude::*;
    rayon.install(|| {
        (0..jobs)
            .into_par_iter()
            .map(|i| job(i, iters))
            .reduce(|| 0u64, |a, b| a.wrapping_add(b))
    })
}

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    // The throughput rows on the reference workload (`jobs/iters=N`) are
    // measured by `crate::cases::reference`, interleaved with every peer.
    if let Some(kind) = ctx.filters.iter().find_map(|f| f.strip_prefix(PROBE)) {
        memory(kind, rows);
    } else if ctx.wants("pool-memory") {
        memory_in_child(rows);
    }
    if ctx.wants("pool-granularity") {
        granularity(ctx, rows);
    }
}

/// The filter that makes `compare` measure memory (in a fresh process).
const PROBE: &str = "pool-memory-probe=";

/// Runs [`memory`] in a fresh `compare` process, whose heap holds no freed
/// memory that would hide growth, and takes its rows.
fn memory_in_child(rows: &mut Vec<Row>) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    for kind in ["idle", "execute", "submit"] {
        let Ok(out) = std::process::Command::new(&exe)
            .arg(format!("{PROBE}{kind}"))
            .output()
        else {
            return;
        };
        child_rows(&out.stdout, rows);
    }
}

fn child_rows(stdout: &[u8], rows: &mut Vec<Row>) {
    for line in String::from_utf8_lossy(stdout).lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [case, imp, value, "bytes"] = cols[..]
            && case.starts_with("pool-memory/")
            && let Ok(value) = value.parse()
        {
            rows.push(Row::new(case, imp, value, Unit::Bytes));
        }
    }
}

/// Bytes per queued job (queue slot + boxed job, + result slot with a
/// handle; the job's own future and the caller's handle are not counted) and
/// per idle worker, from the growth of resident memory.
fn memory(kind: &str, rows: &mut Vec<Row>) {
    const N: usize = 200_000;
    const W: usize = 20_000;
    let rt = workload::current_thread();
    rt.block_on(async {
        if crate::workload::resident_bytes().is_none() {
            return;
        }
        if kind == "idle" {
            let before = crate::workload::resident_bytes().unwrap_or(0);
            let idle = WorkerPool::builder()
                .workers(W)
                .queue_capacity(16)
                .build()
                .expect("pool");
            tokio::time::sleep(Duration::from_millis(20)).await; // every worker parks
            let after = crate::workload::resident_bytes().unwrap_or(before);
            rows.push(Row::new(
                "pool-memory/per-idle-worker",
                "weft-pool",
                after.saturating_sub(before) as f64 / W as f64,
                Unit::Bytes,
            ));
            idle.shutdown(ShutdownMode::Drain(Duration::from_secs(10)))
                .await;
        }

        for with_handle in [false, true] {
            if kind != if with_handle { "submit" } else { "execute" } {
                continue;
            }
            let before = crate::workload::resident_bytes().unwrap_or(0);
            let pool = WorkerPool::builder()
                .workers(1)
                .queue_capacity(N)
                .build()
                .expect("pool");
            let gate = Arc::new(tokio::sync::Notify::new());
            let g = gate.clone();
            pool.execute(async move { g.notified().await })
                .await
                .expect("open");
            tokio::task::yield_now().await;
            let mut handles = Vec::with_capacity(if with_handle { N } else { 0 });
            let mut future_size = 0;
            for i in 0..N as u64 {
                let fut = async move { job(i, 0) };
                future_size = std::mem::size_of_val(&fut);
                if with_handle {
                    handles.push(pool.try_submit(fut).expect("room"));
                } else {
                    pool.try_execute(fut).expect("room");
                }
            }
            let after = crate::workload::resident_bytes().unwrap_or(before);
            let caller = handles.capacity() * std::mem::size_of::<weft_pool::JobHandle<u64>>();
            let grown = after.saturating_sub(before) as f64 - caller as f64;
            rows.push(Row {
                case: "pool-memory/per-queued-job".into(),
                imp: if with_handle {
                    "weft-pool-submit"
                } else {
                    "weft-pool-execute"
                }
                .into(),
                value: (grown / N as f64 - future_size as f64).max(0.0),
                unit: Unit::Bytes,
            });
            gate.notify_one();
            pool.shutdown(ShutdownMode::Cancel(Duration::from_secs(10)))
                .await;
            drop(handles);
        }
    });
}

/// Job costs of about 10 ns .. 100 us: the pool (batch path and one handle
/// per job) against running the same jobs one after the other.
fn granularity(ctx: &Ctx, rows: &mut Vec<Row>) {
    // xorshift rounds per job for each target cost (about 1 ns a round;
    // calibrated below and reported in the case name by target).
    let per_round = {
        let n = 2_000_000u32;
        let t = Instant::now();
        std::hint::black_box(job(1, n));
        (t.elapsed().as_nanos() as f64 / n as f64).max(0.1)
    };
    let rt = workload::runtime();
    for (label, ns) in [
        ("10ns", 10.0),
        ("100ns", 100.0),
        ("1us", 1e3),
        ("10us", 1e4),
        ("100us", 1e5),
    ] {
        let case = format!("pool-granularity/job={label}");
        let iters = ((ns / per_round) as u32).max(1);
        // About 40 ms of sequential work per sample (15 ms when quick).
        let budget = if ctx.quick { 1.5e7 } else { 4e7 };
        let jobs = ((budget / ns) as u64).clamp(64, 1_000_000);
        // Enough batches to keep every worker busy: at least 8 per worker.
        let batch = (jobs / (8 * workload::workers() as u64)).clamp(1, BATCH);
        let expected = workload::expected_sum(jobs, iters);
        rows.push(throughput(ctx, &case, "sequential", jobs, || {
            let t = Instant::now();
            let s = (0..jobs).fold(0u64, |a, i| a.wrapping_add(job(i, iters)));
            let e = t.elapsed();
            assert_eq!(s, expected);
            e
        }));
        rows.push(throughput(ctx, &case, "weft-pool-batch", jobs, || {
            let t = Instant::now();
            let s = rt.block_on(weft_batch_of(jobs, iters, batch));
            let e = t.elapsed();
            assert_eq!(s, expected);
            e
        }));
        rows.push(throughput(ctx, &case, "weft-pool-submit", jobs, || {
            let t = Instant::now();
            let s = rt.block_on(weft_submit(jobs, iters));
            let e = t.elapsed();
            assert_eq!(s, expected);
            e
        }));
    }
}

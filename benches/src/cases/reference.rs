//! The reference points every pool and executor is judged against, on the
//! reference workload: a tokio mpsc handoff to one consumer, the classic
//! hand-rolled async-channel worker pool, tokio `JoinSet` + `Semaphore`
//! spawning one task per job, and futures' `buffer_unordered`; and, in the
//! same rounds, weft's pools and executor with the peers their issues name
//! (`semaphore-spawn`, rayon), so every `jobs/iters=N` row is comparable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cases::{exec, pool};
use crate::workload::{self, JOBS, QUEUE, job};
use crate::{Ctx, Group, Row, Unit, interleaved};

/// The reference group.
pub const GROUP: Group = Group {
    name: "reference",
    run,
    overheads: &[],
    targets: &[],
};

/// The peers measured on the reference workload, by the name used in rows.
pub const PEERS: [&str; 4] = [
    "tokio-mpsc-handoff",
    "async-channel-pool",
    "joinset-semaphore",
    "buffer-unordered",
];

/// An implementation on the reference workload: `(jobs, iters)` to the sum.
pub type Imp = fn(u64, u32) -> Pin<Box<dyn Future<Output = u64>>>;

/// [`PEERS`], as [`Imp`]s.
const PEER_IMPS: [(&str, Imp); 4] = [
    ("tokio-mpsc-handoff", |j, i| Box::pin(mpsc_handoff(j, i))),
    ("async-channel-pool", |j, i| {
        Box::pin(async_channel_pool(j, i, workload::workers()))
    }),
    ("joinset-semaphore", |j, i| {
        Box::pin(joinset_semaphore(j, i))
    }),
    ("buffer-unordered", |j, i| Box::pin(buffer_unordered(j, i))),
];

/// weft's pools and executor, and the `semaphore-spawn` peer of weft-exec's
/// issue, measured on the same case as [`PEERS`].
const CONTENDERS: [(&str, Imp); 6] = [
    ("weft-exec-spawn", |j, i| Box::pin(exec::weft_spawn(j, i))),
    ("semaphore-spawn", |j, i| {
        Box::pin(exec::semaphore_spawn(j, i))
    }),
    ("weft-pool-submit", |j, i| Box::pin(pool::weft_submit(j, i))),
    ("weft-pool-batch", |j, i| Box::pin(pool::weft_batch(j, i))),
    ("weft-pool-execute", |j, i| {
        Box::pin(pool::weft_execute(j, i))
    }),
    ("weft-pool-blocking-batch", |j, i| {
        Box::pin(pool::weft_blocking_batch(j, i))
    }),
];

/// Every implementation of the reference workload, peers and weft's alike,
/// measured round-robin in one runtime (see [`crate::interleaved`]): on a
/// shared machine whose speed drifts by 2x over a minute, rows measured
/// minutes apart cannot be compared, rows measured in the same rounds can.
fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    // Quick runs measure half the jobs (throughput per job is what is
    // compared) in 7 rounds; full runs the reference 1,000,000 in 9.
    let (jobs, rounds) = if ctx.quick { (JOBS / 2, 7) } else { (JOBS, 9) };
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(workload::workers())
        .build()
        .expect("rayon pool");
    let rt = workload::runtime();
    for iters in workload::ITERS {
        let case = workload::case(iters);
        if !ctx.wants(&case) {
            continue;
        }
        let expected = workload::expected_sum(jobs, iters);
        let timed = |name: &str, imp: Imp| {
            let start = Instant::now();
            let sum = rt.block_on(imp(jobs, iters));
            let elapsed = start.elapsed();
            assert_eq!(sum, expected, "{name} computed a wrong sum");
            elapsed
        };
        let mut names: Vec<&str> = Vec::new();
        let mut fs: Vec<Box<dyn FnMut() -> Duration + '_>> = Vec::new();
        for (name, imp) in PEER_IMPS.into_iter().chain(CONTENDERS) {
            names.push(name);
            fs.push(Box::new(move || timed(name, imp)));
        }
        names.push("rayon");
        fs.push(Box::new(|| {
            let start = Instant::now();
            let sum = pool::rayon_sum(&rayon, jobs, iters);
            let elapsed = start.elapsed();
            assert_eq!(sum, expected, "rayon computed a wrong sum");
            elapsed
        }));
        let mut refs: Vec<&mut dyn FnMut() -> Duration> = fs
            .iter_mut()
            .map(|f| &mut **f as &mut dyn FnMut() -> Duration)
            .collect();
        let times = interleaved(rounds, &mut refs);
        for (name, d) in names.into_iter().zip(times) {
            rows.push(Row::new(
                case.clone(),
                name,
                jobs as f64 / d.as_secs_f64(),
                Unit::ItemsPerSec,
            ));
        }
    }
}

/// The implementation of the reference workload named `name` (a peer or a
/// weft contender, as named in the rows; not rayon, which is not async).
pub fn implementation(name: &str) -> Option<Imp> {
    PEER_IMPS
        .into_iter()
        .chain(CONTENDERS)
        .find(|(n, _)| *n == name)
        .map(|(_, imp)| imp)
}

/// The names [`implementation`] knows.
pub fn implementation_names() -> Vec<&'static str> {
    PEER_IMPS
        .into_iter()
        .chain(CONTENDERS)
        .map(|(n, _)| n)
        .collect()
}

/// Runs one named peer on `jobs` jobs and returns the sum of the results.
pub async fn run_peer(peer: &str, jobs: u64, iters: u32) -> u64 {
    let imp = implementation(peer).unwrap_or_else(|| panic!("unknown reference peer {peer}"));
    imp(jobs, iters).await
}

/// A producer task hands each job through a bounded tokio mpsc channel to one
/// consumer, which runs it and sums.
pub async fn mpsc_handoff(jobs: u64, iters: u32) -> u64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(QUEUE);
    let producer = tokio::spawn(async move {
        for i in 0..jobs {
            tx.send(i).await.expect("consumer alive");
        }
    });
    let consumer = tokio::spawn(async move {
        let mut sum = 0u64;
        while let Some(i) = rx.recv().await {
            sum = sum.wrapping_add(job(i, iters));
        }
        sum
    });
    producer.await.expect("producer");
    consumer.await.expect("consumer")
}

/// The classic hand-rolled pool: a bounded job channel, `workers` tasks, a
/// bounded result channel, and the caller summing the results.
pub async fn async_channel_pool(jobs: u64, iters: u32, workers: usize) -> u64 {
    let (job_tx, job_rx) = async_channel::bounded::<u64>(QUEUE);
    let (res_tx, res_rx) = async_channel::bounded::<u64>(QUEUE);
    for _ in 0..workers {
        let job_rx = job_rx.clone();
        let res_tx = res_tx.clone();
        tokio::spawn(async move {
            while let Ok(i) = job_rx.recv().await {
                if res_tx.send(job(i, iters)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(res_tx);
    tokio::spawn(async move {
        for i in 0..jobs {
            job_tx.send(i).await.expect("workers alive");
        }
    });
    let mut sum = 0u64;
    while let Ok(r) = res_rx.recv().await {
        sum = sum.wrapping_add(r);
    }
    sum
}

/// One task per job, at most `QUEUE` in flight (a semaphore), collected by a
/// `JoinSet`.
pub async fn joinset_semaphore(jobs: u64, iters: u32) -> u64 {
    let sem = Arc::new(Semaphore::new(QUEUE));
    let mut set = JoinSet::new();
    let mut sum = 0u64;
    for i in 0..jobs {
        while let Some(r) = set.try_join_next() {
            sum = sum.wrapping_add(r.expect("job"));
        }
        let permit = sem.clone().acquire_owned().await.expect("open");
        set.spawn(async move {
            let r = job(i, iters);
            drop(permit);
            r
        });
    }
    while let Some(r) = set.join_next().await {
        sum = sum.wrapping_add(r.expect("job"));
    }
    sum
}

/// `buffer_unordered(QUEUE)` over the jobs, in one task (concurrency without
/// parallelism).
pub async fn buffer_unordered(jobs: u64, iters: u32) -> u64 {
    tokio::spawn(async move {
        futures::stream::iter(0..jobs)
            .map(|i| async move { job(i, iters) })
            .buffer_unordered(QUEUE)
            .fold(0u64, |acc, r| async move { acc.wrapping_add(r) })
            .await
    })
    .await
    .expect("buffer_unordered task")
}

//! The reference points every pool and executor is judged against, on the
//! reference workload: a tokio mpsc handoff to one consumer, the classic
//! hand-rolled async-channel worker pool, tokio `JoinSet` + `Semaphore`
//! spawning one task per job, and futures' `buffer_unordered`.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::workload::{self, JOBS, QUEUE, job};
use crate::{Ctx, Group, Row, throughput};

/// The reference group.
pub const GROUP: Group = Group {
    name: "reference",
    run,
    targets: &[],
};

/// The peers measured on the reference workload, by the name used in rows.
pub const PEERS: [&str; 4] = [
    "tokio-mpsc-handoff",
    "async-channel-pool",
    "joinset-semaphore",
    "buffer-unordered",
];

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    for iters in workload::ITERS {
        let case = workload::case(iters);
        if !ctx.wants(&case) {
            continue;
        }
        let expected = workload::expected_sum(JOBS, iters);
        for peer in PEERS {
            let rt = workload::runtime();
            rows.push(throughput(ctx, &case, peer, JOBS, || {
                let start = Instant::now();
                let sum = rt.block_on(run_peer(peer, JOBS, iters));
                let elapsed = start.elapsed();
                assert_eq!(sum, expected, "{peer} computed a wrong sum");
                elapsed
            }));
        }
    }
}

/// Runs one named peer on `jobs` jobs and returns the sum of the results.
pub async fn run_peer(peer: &str, jobs: u64, iters: u32) -> u64 {
    match peer {
        "tokio-mpsc-handoff" => mpsc_handoff(jobs, iters).await,
        "async-channel-pool" => async_channel_pool(jobs, iters, workload::workers()).await,
        "joinset-semaphore" => joinset_semaphore(jobs, iters).await,
        "buffer-unordered" => buffer_unordered(jobs, iters).await,
        other => panic!("unknown reference peer {other}"),
    }
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

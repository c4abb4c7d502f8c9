//! Property: whatever mix of jobs, overflow policy and shutdown point,
//! every accepted job is accounted for exactly once, every handle resolves,
//! and no worker task is left alive.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::sleep;
use weft_core::Overflow;
use weft_pool::{JobError, ShutdownMode, WorkerPool};

#[derive(Debug, Clone)]
enum Job {
    Quick,
    Sleep(u64),
    Panic,
    /// Longer than the pool's per-job timeout (50 ms).
    Hang,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Job),
    TrySubmit(Job),
    Batch(Vec<Job>),
    Advance(u64),
}

fn job() -> impl Strategy<Value = Job> {
    prop_oneof![
        3 => Just(Job::Quick),
        3 => (1u64..40).prop_map(Job::Sleep),
        1 => Just(Job::Panic),
        1 => Just(Job::Hang),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => job().prop_map(Op::Submit),
        3 => job().prop_map(Op::TrySubmit),
        1 => proptest::collection::vec(job(), 0..5).prop_map(Op::Batch),
        2 => (1u64..30).prop_map(Op::Advance),
    ]
}

fn policy() -> impl Strategy<Value = Overflow> {
    prop_oneof![
        Just(Overflow::Block),
        Just(Overflow::Reject),
        Just(Overflow::DropOldest),
        Just(Overflow::DropNewest),
        Just(Overflow::WaitTimeout(Duration::from_millis(5))),
    ]
}

async fn run(j: Job) -> u32 {
    match j {
        Job::Quick => 1,
        Job::Sleep(ms) => {
            sleep(Duration::from_millis(ms)).await;
            2
        }
        Job::Panic => panic!("job panicked on purpose"),
        Job::Hang => {
            sleep(Duration::from_secs(10)).await;
            3
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn every_accepted_job_is_accounted_for(
        workers in 1usize..4,
        cap in 1usize..6,
        overflow in policy(),
        ops in proptest::collection::vec(op(), 0..40),
        cancel in any::<bool>(),
        deadline_ms in prop_oneof![Just(5u64), Just(60), Just(10_000)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let pool = WorkerPool::builder()
                .workers(workers)
                .queue_capacity(cap)
                .overflow(overflow)
                .timeout(Duration::from_millis(50))
                .cancel_grace(Duration::from_millis(2))
                .build()
                .unwrap();
            let mut handles = Vec::new();
            let mut batches = Vec::new();
            let mut accepted = 0u64;
            for op in ops {
                match op {
                    Op::Submit(j) => {
                        if let Ok(h) = pool.submit(run(j)).await {
                            accepted += 1;
                            handles.push(h);
                        }
                    }
                    Op::TrySubmit(j) => {
                        if let Ok(h) = pool.try_submit(run(j)) {
                            accepted += 1;
                            handles.push(h);
                        }
                    }
                    Op::Batch(js) => {
                        let n = js.len() as u64;
                        if let Ok(h) = pool.submit_batch(js.into_iter().map(run)).await {
                            accepted += n;
                            batches.push(h);
                        }
                    }
                    Op::Advance(ms) => sleep(Duration::from_millis(ms)).await,
                }
            }
            let mode = if cancel {
                ShutdownMode::Cancel(Duration::from_millis(deadline_ms))
            } else {
                ShutdownMode::Drain(Duration::from_millis(deadline_ms))
            };
            let r = pool.shutdown(mode).await;
            prop_assert!(r.is_balanced(), "{}", r);
            prop_assert_eq!(r.accepted, accepted, "{}", r);

            let mut ran = 0u64; // a value, a panic or a timeout: the job ran
            let mut not_run = 0u64; // evicted, returned or aborted
            let mut tally = |res: &Result<u32, JobError>| match res {
                Ok(_) | Err(JobError::Panicked(_)) | Err(JobError::TimedOut(_)) => ran += 1,
                Err(_) => not_run += 1,
            };
            for h in handles {
                tally(&h.await);
            }
            for b in batches {
                for res in b.await {
                    tally(&res);
                }
            }
            prop_assert_eq!(ran, r.completed + r.failed + r.cancelled, "{}", r);
            prop_assert_eq!(not_run, r.returned + r.aborted, "{}", r);
            prop_assert_eq!(pool.stats().workers, 0);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            prop_assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), 0, "a worker outlived shutdown");
            Ok(())
        })?;
    }
}

/// A shutdown report balances while a producer on another thread keeps
/// submitting: a job is counted accepted where it leaves the queue (taken
/// by a worker, or handed back), so a worker cannot finish (and a report
/// count) a job its producer has not counted yet.
#[test]
fn a_shutdown_report_balances_with_a_concurrent_producer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for i in 0..1_000 {
        let pool = rt.block_on(async {
            WorkerPool::builder()
                .workers(1)
                .queue_capacity(64)
                .overflow(Overflow::Reject)
                .build()
                .unwrap()
        });
        let producer = pool.clone();
        let t = std::thread::spawn(move || {
            let mut accepted = 0u64;
            loop {
                match producer.try_execute(async {}) {
                    Ok(()) => accepted += 1,
                    Err(weft_pool::SubmitError::Closed(_)) => break accepted,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        });
        let report = rt.block_on(async {
            for _ in 0..(i % 50) {
                tokio::task::yield_now().await;
            }
            pool.shutdown(ShutdownMode::Drain(Duration::from_secs(5)))
                .await
        });
        let accepted = t.join().unwrap();
        assert!(report.is_balanced(), "iteration {i}: {report}");
        assert_eq!(report.accepted, accepted, "iteration {i}: {report}");
    }
}

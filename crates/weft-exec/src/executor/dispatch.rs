//! The dispatcher task: takes queued tasks by priority and starts each once
//! it holds its permits.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::{Instant, sleep_until};

use super::{Queued, Shared};
use crate::error::TaskError;

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut turn: u32 = 0;
    while let Some(q) = next(&shared, &mut turn).await {
        dispatch_one(&shared, q).await;
    }
    tracing::debug!(executor = %shared.name, "dispatcher exits");
}

/// The lane order for this turn: high first, except every `fairness`-th turn
/// starts at normal or low (alternately).
fn order(fairness: u32, turn: u32) -> [usize; 3] {
    if fairness > 0 && turn % fairness == 0 {
        if (turn / fairness) % 2 == 1 {
            [1, 2, 0]
        } else {
            [2, 1, 0]
        }
    } else {
        [0, 1, 2]
    }
}

fn pop(shared: &Shared, order: [usize; 3]) -> Option<Queued> {
    order.iter().find_map(|&i| shared.lanes[i].try_pop())
}

async fn next(shared: &Shared, turn: &mut u32) -> Option<Queued> {
    loop {
        let notified = shared.wake.notified();
        *turn = turn.wrapping_add(1);
        if let Some(q) = pop(shared, order(shared.fairness, *turn)) {
            return Some(q);
        }
        if shared.closed.load(Ordering::SeqCst) {
            // A push that succeeded before close is visible now.
            return pop(shared, [0, 1, 2]);
        }
        notified.await;
    }
}

async fn dispatch_one(shared: &Arc<Shared>, q: Queued) {
    let deadline = shared.queue_timeout.map(|d| q.enqueued + d);
    if !shared.abort.is_cancelled() {
        let expired = deadline.is_some_and(|d| d <= Instant::now());
        // A task taken after its deadline never runs, even if slots are free.
        let got = if expired {
            Some(false)
        } else if let Ok(p) = shared.sem.try_acquire_many(q.weight) {
            p.forget();
            Some(true)
        } else {
            tokio::select! {
                biased;
                _ = shared.abort.cancelled() => None,
                p = shared.sem.acquire_many(q.weight) => {
                    p.expect("the executor's semaphore is never closed").forget();
                    Some(true)
                }
                _ = sleep_until_opt(deadline) => Some(false),
            }
        };
        match got {
            Some(true) => {
                tracing::trace!(executor = %shared.name, task = q.id, "queued task started");
                q.job.start(shared.clone(), q.weight);
                shared.pending_done();
                return;
            }
            Some(false) => {
                let d = shared.queue_timeout.unwrap_or_default();
                shared.c.queue_timed_out.incr();
                crate::metrics::task_ended(&shared.name, "queue_timed_out");
                tracing::debug!(executor = %shared.name, task = q.id, "task timed out waiting for a slot");
                q.job.fail(TaskError::QueueTimeout(d));
                shared.pending_done();
                return;
            }
            None => {}
        }
    }
    shared.c.returned.incr();
    crate::metrics::task_ended(&shared.name, "not_started");
    q.job.fail(TaskError::NotStarted);
    shared.pending_done();
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn every_lane_gets_turns() {
        let mut first = [0u32; 3];
        for turn in 1..=160 {
            first[order(8, turn)[0]] += 1;
        }
        assert_eq!(first, [140, 10, 10]);
        assert_eq!(order(0, 8), [0, 1, 2]);
    }
}

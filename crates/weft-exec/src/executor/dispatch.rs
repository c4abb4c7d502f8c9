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
    let mut stranded = Stranded(Some(&shared));
    let mut turn: u32 = 0;
    while let Some(q) = next(&shared, &mut turn).await {
        dispatch_one(&shared, q).await;
    }
    stranded.0 = None;
    tracing::debug!(executor = %shared.name, "dispatcher exits");
}

/// Armed while the dispatcher runs. If the runtime drops the dispatcher
/// (it shut down) nothing would ever start the queued tasks: admission is
/// closed and every waiting task is failed `Aborted` and counted, as the
/// running tasks the runtime drops are, so handles resolve and a later
/// shutdown (from another runtime) finds the executor idle.
struct Stranded<'a>(Option<&'a Arc<Shared>>);

impl Drop for Stranded<'_> {
    fn drop(&mut self) {
        let Some(shared) = self.0 else { return };
        shared.close();
        let held = shared.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        let lanes = shared
            .lanes
            .iter()
            .flat_map(|l| std::iter::from_fn(|| l.try_pop()));
        for q in held.into_iter().chain(lanes) {
            shared.c.aborted.incr();
            shared.m.aborted.incr();
            shared
                .unfinished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("task #{}", q.id));
            tracing::warn!(executor = %shared.name, task = q.id, "queued task aborted: the executor's runtime shut down");
            q.job.fail(TaskError::Aborted);
            shared.release_room();
        }
    }
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
            if let Some(q) = pop(shared, [0, 1, 2]) {
                return Some(q);
            }
            // A spawn that took its room permit before the close may still
            // be about to push (the lanes close just after `closed` is
            // set): exit only once no permit is out. Its push (or, if the
            // lane refused it, its permit coming back) wakes us.
            if shared.nothing_waits() {
                return None;
            }
        }
        notified.await;
    }
}

/// What ended the dispatcher's wait for a held task's permits.
enum Woke {
    Permits,
    Expired,
    Abort,
    Stolen,
}

async fn dispatch_one(shared: &Arc<Shared>, q: Queued) {
    // From the cancel phase of a shutdown on, queued tasks never start.
    if shared.cancelling.load(Ordering::Acquire) || shared.abort.is_cancelled() {
        return not_started(shared, q);
    }
    // A task taken after its deadline never runs, even if slots are free.
    if q.deadline.is_some_and(|d| d <= Instant::now()) {
        return queue_timed_out(shared, q);
    }
    if shared.running.try_acquire(q.weight) {
        return start(shared, q);
    }
    // Slow path: park the task where a `DropOldest` spawn can evict it
    // (it still counts against the queue capacity) and wait for permits.
    let (weight, deadline) = (q.weight, q.deadline);
    let mut parked = Some(q);
    loop {
        let stolen = shared.stolen.notified();
        tokio::pin!(stolen);
        stolen.as_mut().enable();
        *shared.held.lock().unwrap_or_else(|e| e.into_inner()) = parked.take();
        let woke = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => Woke::Abort,
            _ = shared.cancel.cancelled() => Woke::Abort,
            _ = shared.running.acquire(weight) => Woke::Permits,
            _ = sleep_until_opt(deadline) => Woke::Expired,
            _ = &mut stolen => Woke::Stolen,
        };
        let taken = shared.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (taken, woke) {
            (None, woke) => {
                // Evicted: the evicting spawn took over its room permit.
                if matches!(woke, Woke::Permits) {
                    shared.running.release(weight);
                }
                tracing::trace!(executor = %shared.name, "held task evicted while waiting for permits");
                return;
            }
            // Another task was evicted (the notification is for every
            // eviction): keep waiting for this one.
            (Some(q), Woke::Stolen) => parked = Some(q),
            (Some(q), Woke::Permits) => return start(shared, q),
            (Some(q), Woke::Expired) => return queue_timed_out(shared, q),
            (Some(q), Woke::Abort) => return not_started(shared, q),
        }
    }
}

fn start(shared: &Arc<Shared>, q: Queued) {
    // The cancel phase may have begun while it waited for its permits.
    if shared.cancelling.load(Ordering::Acquire) {
        shared.running.release(q.weight);
        return not_started(shared, q);
    }
    tracing::trace!(executor = %shared.name, task = q.id, "queued task started");
    q.job.start(shared, q.weight);
    shared.release_room();
}

fn queue_timed_out(shared: &Shared, q: Queued) {
    let d = shared.queue_timeout.unwrap_or_default();
    shared.c.queue_timed_out.incr();
    shared.m.queue_timed_out.incr();
    crate::throttle::warn_throttled!(shared.queue_timeouts, executor = %shared.name, task = q.id, "task timed out waiting for a slot");
    q.job.fail(TaskError::QueueTimeout(d));
    shared.release_room();
}

fn not_started(shared: &Shared, q: Queued) {
    shared.c.returned.incr();
    shared.m.not_started.incr();
    q.job.fail(TaskError::NotStarted);
    shared.release_room();
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

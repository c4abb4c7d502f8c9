//! The pool's `stats()` snapshot.

/// A snapshot of a pool's counters, from [`WorkerPool::stats`](crate::WorkerPool::stats)
/// and the other pools.
///
/// Counters are kept per worker (and, on the submit side, in striped
/// [`weft_core::Counter`]s) and summed when read, so reading is exact once the
/// pool is quiet and a close lower bound while it runs. Counts are of jobs: a
/// batch of 100 jobs counts 100.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Jobs accepted into the queue.
    pub submitted: u64,
    /// Jobs waiting in the queue right now (a batch counts as one queue item
    /// here: this is the queue's length).
    pub queued: u64,
    /// Jobs running right now.
    pub running: u64,
    /// Jobs that finished with a value (an `Ok` for the tower service).
    pub succeeded: u64,
    /// Jobs that did not produce a value, or (tower) produced an `Err`:
    /// includes `panicked` and `timed_out`.
    pub failed: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs cut off by the per-job timeout.
    pub timed_out: u64,
    /// Jobs that finished after shutdown asked them to cancel.
    pub cancelled: u64,
    /// Jobs refused because the queue was full (`Reject`, `WaitTimeout`,
    /// `try_*`) or the pool was closed.
    pub rejected: u64,
    /// Jobs shed by `DropNewest` or evicted by `DropOldest`.
    pub dropped: u64,
    /// Accepted jobs handed back unstarted (evicted, or returned by shutdown).
    pub returned: u64,
    /// Jobs cut off at the shutdown deadline.
    pub aborted: u64,
    /// Panics of the worker state factory (`StatefulPool`, `BlockingPool`).
    /// A worker whose factory panics retries after a pause (10 ms, doubling
    /// up to 1 s) and keeps its place in `workers`; jobs wait in the queue
    /// meanwhile.
    pub factory_panics: u64,
    /// Live workers.
    pub workers: u64,
    /// The number of workers the pool is aiming for.
    pub target_workers: u64,
}

//! A snapshot of an executor's counters.

/// A cheap snapshot of a [`BoundedExecutor`](crate::BoundedExecutor)'s state
/// and counters (from [`stats`](crate::BoundedExecutor::stats)).
///
/// Over the executor's life,
/// `accepted = completed + panicked + timed_out + queue_timed_out + cancelled + aborted + returned + running + queued`
/// once writers are quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutorStats {
    /// Permits in total.
    pub max_running: usize,
    /// Tasks running right now.
    pub running: usize,
    /// Permits held right now (tasks may take more than one).
    pub permits_in_use: usize,
    /// Tasks waiting for a slot right now: in the lanes plus the one the
    /// dispatcher holds as next to start. At most the queue capacity (a
    /// snapshot taken while other threads spawn may be off by a task or two
    /// in either direction).
    pub queued: usize,
    /// Tasks admitted (started or queued).
    pub accepted: u64,
    /// Tasks that finished with their output.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks cut off by the run timeout.
    pub timed_out: u64,
    /// Tasks that waited longer than the queue timeout and never ran.
    pub queue_timed_out: u64,
    /// Tasks that returned after a shutdown cancelled the executor's
    /// [`cancellation_token`](crate::BoundedExecutor::cancellation_token)
    /// (whatever they returned; panics and run timeouts keep their own
    /// counts).
    pub cancelled: u64,
    /// Tasks aborted at the shutdown deadline.
    pub aborted: u64,
    /// Tasks that never ran: evicted (`DropOldest`) or still queued at shutdown.
    pub returned: u64,
    /// Spawns refused with the future handed back (full, timeout, too heavy).
    pub rejected: u64,
    /// Spawns shed under `DropNewest` (future handed back, counted apart).
    pub dropped: u64,
    /// Spawns refused because the executor was closed.
    pub rejected_after_close: u64,
}

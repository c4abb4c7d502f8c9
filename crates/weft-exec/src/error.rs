//! The errors of weft-exec.

use std::fmt;
use std::time::Duration;

use weft_core::Panicked;

/// A future was not admitted by a [`BoundedExecutor`](crate::BoundedExecutor);
/// it rides inside the error, so the caller can run it elsewhere, retry it or
/// drop it.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError<F> {
    /// The wait queue is full and the policy is `Overflow::Reject` (or a
    /// `try_spawn` found no free slot and no room in the queue).
    #[error("executor is full: retry later, or choose Overflow::Block for backpressure")]
    Full(F),
    /// The wait queue is full and the policy is `Overflow::DropNewest`.
    #[error("executor is full: task dropped (Overflow::DropNewest)")]
    Dropped(F),
    /// The wait queue stayed full for the whole `Overflow::WaitTimeout`.
    #[error("executor queue stayed full for the whole wait timeout")]
    Timeout(F),
    /// The executor is shutting down and accepts nothing more.
    #[error("executor is closed")]
    Closed(F),
    /// The task asked for more permits than the executor has in total.
    #[error(
        "task weight exceeds the executor's max_running: lower the weight or raise max_running"
    )]
    TooHeavy(F),
}

impl<F> SpawnError<F> {
    /// The future that was not admitted.
    pub fn into_inner(self) -> F {
        match self {
            SpawnError::Full(f)
            | SpawnError::Dropped(f)
            | SpawnError::Timeout(f)
            | SpawnError::Closed(f)
            | SpawnError::TooHeavy(f) => f,
        }
    }

    /// Whether the executor was closed (as opposed to full).
    pub fn is_closed(&self) -> bool {
        matches!(self, SpawnError::Closed(_))
    }

    fn name(&self) -> &'static str {
        match self {
            SpawnError::Full(_) => "Full",
            SpawnError::Dropped(_) => "Dropped",
            SpawnError::Timeout(_) => "Timeout",
            SpawnError::Closed(_) => "Closed",
            SpawnError::TooHeavy(_) => "TooHeavy",
        }
    }
}

impl<F> fmt::Debug for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(..)", self.name())
    }
}

/// An admitted task did not produce its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic was contained and counted.
    #[error(transparent)]
    Panicked(#[from] Panicked),
    /// The task ran longer than the executor's run timeout and was dropped.
    #[error("task ran longer than the run timeout ({0:?}) and was cancelled")]
    TimedOut(Duration),
    /// The task waited longer than the queue timeout for a running slot and
    /// never started.
    #[error("task waited longer than the queue timeout ({0:?}) for a slot and never started")]
    QueueTimeout(Duration),
    /// The task was evicted from the wait queue by a newer task
    /// (`Overflow::DropOldest`) and never started.
    #[error("task was evicted from the full queue (Overflow::DropOldest) and never started")]
    Evicted,
    /// The executor was shut down before the task started.
    #[error("executor shut down before the task started")]
    NotStarted,
    /// The executor was shut down while the task ran, and the task was cut off
    /// at the drain deadline.
    #[error("task was aborted at the shutdown deadline")]
    Aborted,
}

/// The executor could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_running` was 0.
    #[error("max_running must be at least 1 (got 0): pass how many tasks may run at once")]
    ZeroRunning,
    /// The queue capacity or overflow policy was refused.
    #[error(transparent)]
    Queue(#[from] weft_core::OverflowError),
    /// The queue capacity is above `tokio::sync::Semaphore::MAX_PERMITS`.
    #[error("queue capacity {0} is too large: pass at most tokio's Semaphore::MAX_PERMITS")]
    QueueTooLarge(usize),
    /// `max_running` is above `tokio::sync::Semaphore::MAX_PERMITS`.
    #[error("max_running {0} is too large: pass at most tokio's Semaphore::MAX_PERMITS")]
    RunningTooLarge(usize),
    /// `build` was called outside a tokio runtime.
    #[error("no tokio runtime: build the executor from inside a tokio runtime")]
    NoRuntime,
}

/// The service is at capacity and did not take the request: fail fast instead
/// of queueing. Returned (boxed into a `BoxError`) by
/// [`LoadShed`](crate::LoadShed) and by limiters that refuse rather than wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error("service overloaded")]
pub struct Overloaded {
    _priv: (),
}

impl Overloaded {
    /// A new `Overloaded` error.
    pub fn new() -> Self {
        Overloaded { _priv: () }
    }
}

/// A keyed rate limiter refused the request; it may be retried after
/// [`retry_after`](RateLimited::retry_after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {retry_after:?}")]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    /// A new `RateLimited` error.
    pub fn new(retry_after: Duration) -> Self {
        RateLimited { retry_after }
    }

    /// How long until a request with the same key can pass.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// A keyed rate limiter already tracks its maximum number of keys, none of
/// them idle, and refused a request with a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "keyed rate limiter is tracking its maximum of {max_keys} keys: raise max_keys or shorten the quota period"
)]
pub struct TooManyKeys {
    max_keys: usize,
}

impl TooManyKeys {
    pub(crate) fn new(max_keys: usize) -> Self {
        TooManyKeys { max_keys }
    }

    /// The configured cap on keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

/// Why a [`KeyedRateLimiter`](crate::KeyedRateLimiter) refused a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyedRefusal {
    /// The key's budget is spent for now.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// The key is new and the limiter already tracks `max_keys` active keys.
    #[error(transparent)]
    TooManyKeys(#[from] TooManyKeys),
}

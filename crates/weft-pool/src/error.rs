//! The errors of weft-pool.

use std::fmt;
use std::time::Duration;

use weft_core::{OverflowError, Panicked};

/// A job was not accepted; it rides inside the error.
///
/// The `Debug` impl does not need `J: Debug`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError<J> {
    /// The queue is full and the policy is `Reject` (or a `try_*` call found
    /// it full).
    #[error("pool queue is full: retry later, or choose Overflow::Block for backpressure")]
    Full(J),
    /// The queue is full and the policy is `DropNewest`: the job was shed.
    #[error("pool queue is full: job dropped (Overflow::DropNewest)")]
    Dropped(J),
    /// The queue stayed full for the whole `Overflow::WaitTimeout`.
    #[error("pool queue stayed full for the whole wait timeout")]
    Timeout(J),
    /// The pool is shut down (or shutting down); it accepts nothing more.
    #[error("pool is shut down")]
    Closed(J),
}

impl<J> SubmitError<J> {
    /// The job that was not accepted.
    pub fn into_inner(self) -> J {
        match self {
            SubmitError::Full(j)
            | SubmitError::Dropped(j)
            | SubmitError::Timeout(j)
            | SubmitError::Closed(j) => j,
        }
    }

    /// Whether the pool was closed (as opposed to full).
    pub fn is_closed(&self) -> bool {
        matches!(self, SubmitError::Closed(_))
    }

    pub(crate) fn map<K>(self, f: impl FnOnce(J) -> K) -> SubmitError<K> {
        match self {
            SubmitError::Full(j) => SubmitError::Full(f(j)),
            SubmitError::Dropped(j) => SubmitError::Dropped(f(j)),
            SubmitError::Timeout(j) => SubmitError::Timeout(f(j)),
            SubmitError::Closed(j) => SubmitError::Closed(f(j)),
        }
    }
}

impl<J> fmt::Debug for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SubmitError::Full(_) => "Full",
            SubmitError::Dropped(_) => "Dropped",
            SubmitError::Timeout(_) => "Timeout",
            SubmitError::Closed(_) => "Closed",
        };
        write!(f, "{name}(..)")
    }
}

/// Why an accepted job did not produce its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job panicked; the worker survived and ran the next job.
    #[error(transparent)]
    Panicked(#[from] Panicked),
    /// The job ran longer than the pool's per-job timeout and was dropped.
    #[error("job timed out after {0:?}")]
    TimedOut(Duration),
    /// The job was evicted from the queue by a newer one
    /// (`Overflow::DropOldest`) before it started.
    #[error("job was evicted from the queue before it started (Overflow::DropOldest)")]
    Evicted,
    /// The job did not finish: it was handed back unstarted by a cancelling
    /// shutdown, or aborted at the shutdown deadline.
    #[error("job was cancelled by the pool's shutdown before it finished")]
    Cancelled,
}

/// The pool could not be built from this configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The queue capacity or overflow policy is invalid.
    #[error(transparent)]
    Queue(#[from] OverflowError),
    /// `workers` (or `min_workers`/`max_workers`) was 0.
    #[error("a pool needs at least 1 worker (got 0): pass workers(n) with n >= 1")]
    ZeroWorkers,
    /// `min_workers` is larger than `max_workers`.
    #[error("min_workers ({min}) is larger than max_workers ({max}): pass min <= max")]
    MinAboveMax {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// A zero per-job timeout.
    #[error("a per-job timeout of 0 would fail every job: pass a non-zero duration or none")]
    ZeroTimeout,
    /// A per-job timeout was given to a blocking pool, whose jobs cannot be
    /// interrupted.
    #[error(
        "a blocking pool cannot interrupt a running job, so it takes no per-job timeout: \
         check a deadline inside the job instead"
    )]
    TimeoutOnBlocking,
    /// The [`Scaling`](crate::Scaling) rule makes no sense; the message says
    /// which field and what to pass.
    #[error("invalid Scaling: {0}")]
    InvalidScaling(&'static str),
    /// The pool was built outside a tokio runtime.
    #[error("a pool must be built inside a tokio runtime (it spawns its workers there)")]
    NoRuntime,
}

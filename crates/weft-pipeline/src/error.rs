//! The pipeline's errors and dead letters.

use std::fmt;

use weft_core::{BoxError, OverflowError, Panicked};

use crate::report::Report;

/// Why one item failed in a stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The stage's function returned an error (after any retries).
    #[error("stage function failed: {0}")]
    Failed(#[source] BoxError),
    /// The stage's function panicked.
    #[error(transparent)]
    Panicked(#[from] Panicked),
    /// The item was shed by the stage's input queue (its `Overflow` policy
    /// was not `Block` and the queue was full).
    #[error("stage input queue was full: item shed by {0:?}")]
    Overflow(OverflowKind),
}

impl StageError {
    /// The underlying error of a [`Failed`](StageError::Failed) item.
    pub fn as_failed(&self) -> Option<&BoxError> {
        match self {
            StageError::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the item panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, StageError::Panicked(_))
    }
}

/// How a full stage input queue shed an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowKind {
    /// Refused at once (`Overflow::Reject`).
    Rejected,
    /// The new item was dropped (`Overflow::DropNewest`).
    DroppedNewest,
    /// The oldest queued item was evicted (`Overflow::DropOldest`).
    DroppedOldest,
    /// The queue stayed full for the whole `Overflow::WaitTimeout`.
    TimedOut,
}

/// An item a stage could not process, handed to the stage's dead-letter sink
/// with the error and the stage's name.
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// The stage that gave up on the item.
    pub stage: String,
    /// The item, as it entered the stage.
    pub item: T,
    /// What went wrong.
    pub error: StageError,
}

impl<T> DeadLetter<T> {
    /// The item.
    pub fn into_inner(self) -> T {
        self.item
    }
}

impl<T> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("stage", &self.stage)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A pipeline that could not be built: the configuration says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A stage's capacity and overflow policy do not fit together.
    #[error("stage {stage:?}: {source}")]
    Queue {
        /// The stage.
        stage: String,
        /// What is wrong.
        #[source]
        source: OverflowError,
    },
    /// A stage was given 0 workers.
    #[error("stage {stage:?}: workers must be at least 1 (got 0): pass 1 for a sequential stage")]
    ZeroWorkers {
        /// The stage.
        stage: String,
    },
    /// A stage was given a chunk size of 0.
    #[error("stage {stage:?}: chunk must be at least 1 (got 0): pass 1 to move items one by one")]
    ZeroChunk {
        /// The stage.
        stage: String,
    },
    /// A batch stage's size or weight limit is 0.
    #[error("batch stage {stage:?}: {what} must be at least 1 (got 0)")]
    Batch {
        /// The stage.
        stage: String,
        /// The limit.
        what: &'static str,
    },
}

/// Why a pipeline did not complete. Every variant carries the [`Report`] of
/// what happened up to the stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The pipeline's configuration is invalid; nothing was started.
    #[error("pipeline not started: {0}")]
    Build(#[from] BuildError),
    /// A stage with the fail-fast policy failed; every stage was cancelled.
    #[error("stage {stage:?} failed and the pipeline was cancelled: {error}")]
    Failed {
        /// The stage that failed.
        stage: String,
        /// The first error.
        #[source]
        error: StageError,
        /// What happened up to the cancellation.
        report: Box<Report>,
    },
    /// The sink's receiver (a channel sink) went away; the pipeline stopped.
    #[error("the sink's receiver was dropped; the pipeline stopped")]
    SinkClosed {
        /// What happened up to the stop.
        report: Box<Report>,
    },
    /// The pipeline was shut down (see [`Drain`](weft_core::Drain)) and its
    /// deadline passed before the stages drained; the rest was cancelled.
    /// Also returned by [`Running::join`](crate::Running::join) when the
    /// runtime the pipeline ran on shut down before it finished.
    #[error("the pipeline was shut down before it drained")]
    Cancelled {
        /// What happened up to the cancellation.
        report: Box<Report>,
    },
}

impl PipelineError {
    /// The report of what happened, if the pipeline started.
    pub fn report(&self) -> Option<&Report> {
        match self {
            PipelineError::Build(_) => None,
            PipelineError::Failed { report, .. }
            | PipelineError::SinkClosed { report }
            | PipelineError::Cancelled { report } => Some(report),
        }
    }
}

//! Worker pools for tokio services: a fixed or adaptive set of workers
//! draining one bounded queue, with backpressure, contained panics, a drained
//! shutdown with a report, and stats; plus [`TaskGroup`] for structured
//! concurrency.
//!
//! | you have | use |
//! |---|---|
//! | async jobs (I/O-bound, or short CPU work) | [`WorkerPool`] |
//! | async jobs that need a per-worker connection or buffer | [`StatefulPool`] |
//! | blocking calls or long CPU work | [`BlockingPool`] (dedicated threads, optional state) |
//! | a tower service whose calls should run on a bounded pool | [`service::PoolLayer`] / [`service::Pool`] |
//! | a handful of related tasks to run and join, errgroup-style | [`TaskGroup`] |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use weft_core::Overflow;
//! use weft_pool::{JobError, ShutdownMode, WorkerPool};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let pool = WorkerPool::builder()
//!     .name("resize")
//!     .workers(4)
//!     .queue_capacity(100)
//!     .overflow(Overflow::Block) // backpressure: submit waits for room
//!     .timeout(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//!
//! let ok = pool.submit(async { 1 + 1 }).await.unwrap();
//! let bad = pool.submit(async { panic!("corrupt image") }).await.unwrap();
//! assert_eq!(ok.await, Ok(2));
//! assert!(matches!(bad.await, Err(JobError::Panicked(_))));
//!
//! let report = pool.shutdown(ShutdownMode::Drain(Duration::from_secs(10))).await;
//! assert_eq!((report.accepted, report.completed, report.failed), (2, 1, 1));
//! assert!(report.is_clean());
//! # }
//! ```
//!
//! # Submitting
//!
//! [`submit`](WorkerPool::submit) (async, applies the [`Overflow`](weft_core::Overflow)
//! policy, returns a [`JobHandle`]), [`try_submit`](WorkerPool::try_submit)
//! (never waits), [`execute`](WorkerPool::execute) (fire-and-forget, still
//! counted and drained) and [`submit_batch`](WorkerPool::submit_batch) (many
//! tiny jobs as one queue item with one admission: the fast path). A refused
//! job rides back inside [`SubmitError`]; an evicted one (`DropOldest`) gets
//! [`JobError::Evicted`] on its handle.
//!
//! # How it fails
//!
//! A panicking job fails only its own handle ([`JobError::Panicked`]); it is
//! counted and logged with `tracing::error!`, and the worker goes on (a
//! stateful worker rebuilds its state). A job over the per-job timeout is
//! dropped ([`JobError::TimedOut`]). Jobs are dropped inside their panic
//! boundary too (a timed-out job's future, an output nobody reads): a `Drop`
//! that panics is the job's panic if it had not failed already, and never
//! takes a worker down; a worker lost to a panic outside every boundary is
//! replaced. Building refuses a zero capacity, zero workers, a zero timeout
//! and a [`Scaling`] rule that makes no sense with a [`BuildError`] that says
//! what to pass.
//!
//! # How it shuts down
//!
//! [`shutdown`](WorkerPool::shutdown) with [`ShutdownMode::Drain`] (finish
//! everything queued) or [`ShutdownMode::Cancel`] (finish running jobs, hand
//! queued ones back; see [`WorkerPool::shutdown_returning`]) closes admission
//! at once; near the deadline it cancels the pool's
//! [`cancellation_token`](WorkerPool::cancellation_token) (by
//! [`cancel_grace`](Builder::cancel_grace) before it), at the deadline it
//! aborts what still runs, and it returns a [`ShutdownReport`](weft_core::ShutdownReport)
//! where `accepted = completed + failed + cancelled + aborted + returned`.
//! Every pool implements [`weft_core::Drain`]. Dropping the last clone of a
//! pool closes admission and lets the workers finish the queue in the
//! background.
//!
//! # Feature flags
//!
//! - `metrics`: emits `weft_pool_jobs_total{name,outcome}`,
//!   `weft_pool_job_duration_seconds`, `weft_pool_queue_wait_seconds`,
//!   `weft_pool_queue_depth` and `weft_pool_workers` (see docs/metrics.md).
#![forbid(unsafe_code)]

mod adaptive;
mod blocking;
mod builder;
mod core;
mod error;
pub mod group;
mod metrics;
mod oneshot;
mod pool;
pub mod service;
mod sizing;
mod stateful;
mod stats;
mod task;

pub use adaptive::Scaling;
pub use blocking::BlockingPool;
pub use builder::{Builder, DEFAULT_QUEUE_CAPACITY};
pub use error::{BuildError, JobError, SubmitError};
pub use group::TaskGroup;
pub use pool::{ShutdownMode, Unstarted, WorkerPool};
pub use stateful::StatefulPool;
pub use stats::PoolStats;
pub use task::{BatchHandle, JobHandle};

impl Builder {
    /// Builds a pool of async workers.
    pub fn build(self) -> Result<WorkerPool, BuildError> {
        WorkerPool::from_builder(self)
    }
}

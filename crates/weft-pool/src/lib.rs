//! Worker pools for tokio services.
#![forbid(unsafe_code)]

mod adaptive;
mod blocking;
mod builder;
mod core;
mod error;
pub mod group;
mod metrics;
mod pool;
pub mod service;
mod stateful;
mod stats;
mod task;

pub use adaptive::Scaling;
pub use builder::{Builder, DEFAULT_QUEUE_CAPACITY};
pub use error::{BuildError, JobError, SubmitError};
pub use pool::{ShutdownMode, Unstarted, WorkerPool};
pub use blocking::BlockingPool;
pub use group::TaskGroup;
pub use stateful::StatefulPool;
pub use stats::PoolStats;
pub use task::{BatchHandle, JobHandle};

impl Builder {
    /// Builds a pool of async workers.
    pub fn build(self) -> Result<WorkerPool, BuildError> {
        WorkerPool::from_builder(self)
    }
}

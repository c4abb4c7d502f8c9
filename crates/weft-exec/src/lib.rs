//! Admission control for tokio services.
#![forbid(unsafe_code)]

mod error;
mod executor;
pub(crate) mod metrics;

pub use error::{BuildError, Overloaded, RateLimited, SpawnError, TaskError, TooManyKeys};
pub use executor::{Builder, BoundedExecutor, ExecutorStats, Priority, TaskHandle, TaskOptions};

//! Admission control for tokio services.
#![forbid(unsafe_code)]

mod adaptive;
mod concurrency;
mod degrade;
mod error;
mod executor;
mod load_shed;
pub(crate) mod metrics;
mod rate;

pub use adaptive::{
    AdaptiveLimit, AdaptiveLimitLayer, AdaptiveStats, Aimd, Algorithm, Sample, Vegas,
};
pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer, ConcurrencyStats};
pub use degrade::{
    Degradation, DegradationBuilder, DegradationStats, DegradeError, Level, LevelChange, Thresholds,
};
pub use error::{
    BuildError, KeyedRefusal, Overloaded, RateLimited, SpawnError, TaskError, TooManyKeys,
};
pub use executor::{BoundedExecutor, Builder, ExecutorStats, Priority, TaskHandle, TaskOptions};
pub use load_shed::{LoadShed, LoadShedLayer, LoadShedStats};
pub use rate::{
    KeyedRateLimit, KeyedRateLimitLayer, KeyedRateLimitStats, KeyedRateLimiter, Quota, RateLimit,
    RateLimitLayer, RateLimitStats, TokioClock,
};

/// Response futures of the tower services.
pub mod future {
    pub use crate::adaptive::future::ResponseFuture as AdaptiveFuture;
    pub use crate::concurrency::future::ResponseFuture as ConcurrencyFuture;
    pub use crate::load_shed::future::ResponseFuture as LoadShedFuture;
    pub use crate::rate::KeyedFuture;
}

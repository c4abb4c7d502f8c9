//! Admission control for tokio services: the layer that stops unbounded
//! spawning and unbounded queueing before they take the process down.
//!
//! | problem | tool |
//! |---|---|
//! | too many tasks at once, memory climbing | [`BoundedExecutor`]: at most N running, Q waiting in total (all priority lanes together), [`weft_core::Overflow`] beyond |
//! | a dependency that can take only so many calls | [`ConcurrencyLimit`] (tower), shared by every clone |
//! | a dependency whose capacity you do not know or that changes | [`AdaptiveLimit`] with [`Vegas`] (latency) or [`Aimd`] (errors) |
//! | a contract of N requests per second | [`RateLimit`] (governor, direct) |
//! | a budget per client / tenant / API key | [`KeyedRateLimiter`] + [`KeyedRateLimit`], idle keys evicted, keys capped |
//! | queueing makes everything slow: fail fast instead | [`LoadShed`] → [`Overloaded`] (safe from tokio's coop budget) |
//! | switching features off under pressure, and back on | [`Degradation`] levels from your own signals |
//!
//! See `docs/admission.md` for which limit fits which problem.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, ServiceBuilder, service_fn};
//! use weft_core::Overflow;
//! use weft_exec::{BoundedExecutor, ConcurrencyLimitLayer, LoadShedLayer, Overloaded};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Background work: at most 4 running, 100 waiting, refuse beyond.
//! let exec = BoundedExecutor::builder()
//!     .max_running(4)
//!     .queue_capacity(100)
//!     .overflow(Overflow::Reject)
//!     .run_timeout(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! let handle = exec.spawn(async { 6 * 7 }).await.unwrap();
//! assert_eq!(handle.await.unwrap(), 42);
//!
//! // Requests: at most 2 in flight to the dependency; fail fast beyond.
//! let dependency = service_fn(|_: ()| std::future::pending::<Result<(), std::convert::Infallible>>());
//! let mut svc = ServiceBuilder::new()
//!     .layer(LoadShedLayer::new())
//!     .layer(ConcurrencyLimitLayer::new(2))
//!     .service(dependency);
//! let _a = svc.ready().await.unwrap().call(());
//! let _b = svc.ready().await.unwrap().call(());
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(err.is::<Overloaded>());
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `metrics`: emit to the `metrics` facade under the names in
//!   `docs/metrics.md` (`weft_exec_*`).
//!
//! # Shutdown
//!
//! [`BoundedExecutor::shutdown`] (and its [`weft_core::Drain`] impl) closes
//! admission, lets queued and running tasks finish until
//! [`cancel_grace`](Builder::cancel_grace) before the deadline,
//! then cancels [`BoundedExecutor::cancellation_token`] (tasks that watch it
//! stop early; every task that returns from then on is counted as
//! cancelled, as in weft-pool; queued tasks no longer start), at the
//! deadline aborts what still runs and fails what never started, and returns
//! a [`weft_core::ShutdownReport`] with
//! `accepted = completed + failed + cancelled + aborted + returned`. The tower layers hold
//! no background task: dropping them is their shutdown.
//!
//! # Failure
//!
//! A panicking task is caught, counted, logged with `tracing::error!` and
//! reported to its handle as [`TaskError::Panicked`]; the executor carries
//! on. [`Builder::panic_policy`] can make awaiting the handle panic instead
//! ([`weft_core::PanicPolicy::Propagate`]) or abort the process
//! ([`weft_core::PanicPolicy::Abort`]). Refused work is never lost: [`SpawnError`] hands the future back, and
//! tower layers fail with small typed errors ([`Overloaded`], [`RateLimited`],
//! [`TooManyKeys`]) boxed into a `BoxError`, found with `downcast_ref`.
//!
//! # Tracing
//!
//! Each executor runs its dispatcher in an info span `weft_exec{executor}`,
//! and each task in a debug span `task{executor, task}` whose parent is the
//! span `spawn` was called in (a request's span reaches the work it
//! spawned). Refusals, evictions and timeouts are `warn!` (at most
//! one line a second per executor or layer, saying how many refusals it
//! stands for: under overload a line per refusal would add to the load;
//! every refusal is counted in `stats()` and the metrics), panics `error!`,
//! start, close and shutdown `info!`.
#![forbid(unsafe_code)]

mod adaptive;
mod concurrency;
mod degrade;
mod error;
mod executor;
mod load_shed;
pub(crate) mod metrics;
mod rate;
mod sync;
mod throttle;

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

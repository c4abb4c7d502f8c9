//! Fan-out and fan-in for tokio services.
//!
//! Fan-out pays best (five 50 ms calls in 60 ms instead of 250 ms) and hides
//! the most subtle bugs: a fast error that beats a later success, losers that
//! keep running, events dropped by a priority multiplexer, results that
//! arrive after the caller has gone. This crate is the careful version:
//!
//! | need | use |
//! |---|---|
//! | run `f` over many items, `n` at a time, in-task or spawned | [`scatter()`] |
//! | one request to several services: all / first success / quorum | [`broadcast::Broadcast`] |
//! | cut the latency tail with a second attempt | [`hedge::HedgeLayer`] |
//! | a child call never outlives its parent's deadline | [`deadline`] |
//! | merge N streams: fair, weighted, biased by priority | [`merge`] |
//! | prioritise without dropping anything received | [`mux::PriorityMux`] |
//! | one stream to N workers by key, outputs collected | [`partition::Partitioner`] |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use weft_fanout::{deadline, scatter};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), weft_fanout::ScatterError> {
//! async fn fetch(shard: u32) -> Result<u32, std::io::Error> {
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//!     Ok(shard * 10)
//! }
//! let start = tokio::time::Instant::now();
//! // The whole request has 200 ms; every shard call inherits that deadline.
//! // `?`: a concurrency of 0 is refused when the scatter is built.
//! let rows = deadline::within(Duration::from_millis(200), scatter(0..5, 5, fetch)?.try_collect())
//!     .await
//!     .expect("within the deadline")
//!     .expect("every shard answered");
//! assert_eq!(rows, [0, 10, 20, 30, 40]);
//! assert_eq!(start.elapsed(), Duration::from_millis(50));
//! # Ok(())
//! # }
//! ```
//!
//! # Cancellation and leaks
//!
//! Nothing outlives the call that started it. A scatter's gathering future,
//! a broadcast's and a hedge's response future own their in-flight work:
//! once the outcome is decided the rest is dropped (in-task) or aborted and
//! awaited (spawned), and dropping the future cancels everything. A
//! partition's output stream owns its router and workers.
//!
//! # How it fails
//!
//! A panic in user code is caught at the boundary and becomes an error
//! carrying [`weft_core::Panicked`] for that item only. Configuration that
//! cannot work is refused when the thing is built, with a typed error whose
//! message says what to pass instead, never with a panic:
//!
//! | built by | refused | error |
//! |---|---|---|
//! | [`scatter()`] | concurrency 0 | [`ScatterError`] |
//! | [`broadcast::Broadcast::new`] | no services, a quorum of 0, a quorum larger than the replica set | [`broadcast::BuildError`] |
//! | [`hedge::HedgeLayerBuilder::build`] | no delay chosen, a percentile outside `(0, 1]`, `min_samples` 0, a window smaller than `min_samples`, a budget ratio outside `[0, 1)` | [`hedge::ConfigError`] |
//! | [`merge::merge_weighted`], [`merge::merge_biased`] | a weight of 0, a fairness interval of 0 | [`merge::MergeError`] |
//! | [`mux::PriorityMux::new`], [`mux::PriorityMux::fairness`] | a buffer of 0, a fairness interval of 0 | [`mux::MuxError`] |
//! | [`partition::Partitioner::new`] | 0 workers, a queue capacity of 0 | [`partition::PartitionError`] |
//!
//! The tower services pass the inner error through as a
//! [`weft_core::BoxError`]; weft's own errors
//! ([`deadline::DeadlineExceeded`], [`broadcast::QuorumNotReached`]) are
//! found with `downcast_ref`.
//!
//! # Feature flags
//!
//! - `metrics`: emits `weft_fanout_*` counters to the `metrics` facade (see
//!   docs/metrics.md).
//!
//! # Comparison to `buffer_unordered` and `select_all`
//!
//! [`scatter()`] in-task is `buffer_unordered` plus input-order results, error
//! policies and panic containment; `.spawned()` adds parallelism, which
//! `buffer_unordered` cannot give CPU-bound work. [`merge::merge_fair`]
//! polls its inputs in turn instead of through a `FuturesUnordered`, and
//! adds weights and priorities that `select_all` does not have.
#![forbid(unsafe_code)]

pub mod broadcast;
pub mod deadline;
pub mod hedge;
pub mod merge;
pub mod mux;
pub mod partition;
pub mod scatter;

pub use scatter::{Failures, ItemError, Order, Scatter, ScatterError, scatter};

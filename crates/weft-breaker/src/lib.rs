//! Circuit breakers for tokio services: a lock-free closed state, the
//! features resilience4j users expect, keyed breakers with bounded memory,
//! and a retry policy that knows about them.
//!
//! - [`CircuitBreaker`]: states closed, open, half-open, plus forced open and
//!   disabled set by hand. Trips on consecutive failures, on the failure
//!   rate or the slow-call rate over a count-based or time-based window.
//!   Open duration with optional exponential growth and jitter on repeated
//!   trips. Half-open admits exactly N probes at a time, across clones.
//!   Outcomes are classified with [`weft_core::Classify`]; a dropped call is
//!   neither success nor failure.
//! - [`BreakerLayer`] / [`Breaker`]: the tower middleware; an open breaker
//!   fails `poll_ready` with a typed [`Open`] error.
//! - [`KeyedBreaker`]: one breaker per host, tenant or route, idle keys
//!   evicted, a cap on keys; eviction drops healthy keys before failing
//!   ones, so that a failing host stays failed.
//! - [`retry::RetryPolicy`]: exponential backoff with full or decorrelated
//!   jitter, max attempts, a retry budget shared across clones, a
//!   per-request deadline; for plain async and (feature `tower-retry`)
//!   tower's `Retry`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use weft_breaker::{CallError, CircuitBreaker, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let breaker = CircuitBreaker::builder()
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(5))
//!     .half_open_probes(1)
//!     .build()
//!     .unwrap();
//!
//! for _ in 0..3 {
//!     let _ = breaker.call(async { Err::<(), _>("timeout") }).await;
//! }
//! match breaker.call(async { Ok::<_, &str>(()) }).await {
//!     Err(CallError::Open(open)) => assert_eq!(open.retry_after(), Some(Duration::from_secs(5))),
//!     other => panic!("expected a rejection, got {other:?}"),
//! }
//!
//! tokio::time::sleep(Duration::from_secs(5)).await;
//! // The next call is the probe; its success closes the breaker.
//! breaker.call(async { Ok::<_, &str>(()) }).await.unwrap();
//! assert_eq!(breaker.state(), State::Closed);
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `metrics`: emit to the `metrics` facade (names in docs/metrics.md).
//!   Handles are registered when a breaker is built, so install the
//!   recorder first.
//! - `tower-retry`: implement `tower::retry::Policy` for
//!   [`retry::RetryPolicy`].
//!
//! # Failure and shutdown
//!
//! Nothing here spawns a task or holds work: a breaker is a few atomics
//! behind an `Arc`, dropped with its last handle. A panicking call unwinds
//! through [`CircuitBreaker::call`] and drops its permit, which counts as a
//! cancellation. Callbacks run outside every lock; a panicking
//! `on_transition` callback is caught, counted and logged with
//! `tracing::error!`, and never reaches the call that made the transition.
//!
//! # Comparison to other breakers
//!
//! recloser takes a spin lock per recorded call; tower-resilience's breaker
//! takes an async mutex per call; the popular Go breaker counts finished
//! calls in half-open, so concurrent probes exceed the limit. Here the closed
//! state is lock-free and allocation-free, and half-open probe slots are
//! taken atomically, released on completion or drop, and bounded in time.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod keyed;
#[cfg(feature = "metrics")]
mod metrics;
pub mod retry;
mod sync;

pub use breaker::{
    Breaker, BreakerLayer, BuildError, Builder, CallError, CircuitBreaker, Open, OwnedPermit,
    Permit, Reason, SlidingWindow, State, Stats, Transition, future,
};
pub use keyed::{KeyedBreaker, KeyedStats};

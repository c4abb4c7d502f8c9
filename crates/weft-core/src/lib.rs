//! The shared vocabulary of weft.
//!
//! Every weft pattern crate depends on this one and on nothing else from
//! weft. It holds the few types that must be *the same* across patterns so
//! that a pool, an executor, a pipeline stage and an actor mailbox behave
//! alike and can be drained by one shutdown coordinator:
//!
//! - [`Overflow`]: the one admission policy for every bounded queue, and
//!   [`queue::Queue`], the bounded queue that applies it.
//! - [`Panicked`]: the error a caller gets when the work it is waiting on
//!   panicked, and [`catch_unwind`] to produce it at a task boundary.
//! - [`Classify`] / [`Outcome`]: how breakers, retries and limiters decide
//!   whether a result counts as a success, a failure, or neither.
//! - [`ShutdownReport`] and [`Drain`]: how any component reports what
//!   happened to the work it accepted when it is shut down.
//! - [`Counter`]: a counter that does not bounce one cache line between
//!   cores, for the statistics every component keeps.
//! - [`BoxError`]: the boxed error type tower middleware passes around.
//! - [`LogThrottle`]: one log line a second for an event that may come
//!   thousands of times a second (refusals, evictions), saying how many
//!   lines it stands for.
//! - [`Metric`]: a metric whose key is built once, so that emitting to the
//!   `metrics` facade allocates nothing per event (the `metrics` feature).
//!
//! # Example
//!
//! ```
//! use weft_core::{Overflow, queue::{Queue, PushError}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let queue = Queue::bounded(1, Overflow::Reject).unwrap();
//! queue.push("first").await.unwrap();
//! // The queue is full: `Reject` hands the item back inside the error.
//! match queue.push("second").await {
//!     Err(PushError::Full(item)) => assert_eq!(item, "second"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert_eq!(queue.pop().await, Some("first"));
//! # }
//! ```
//!
//! # Failure and shutdown
//!
//! Nothing in this crate spawns a task. [`queue::Queue::close`] stops
//! admission and lets the consumer drain what was queued;
//! [`queue::Queue::drain_now`] hands every queued item back so that it can be
//! returned to its caller and counted.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
mod counter;
mod drain;
mod error;
mod metric;
mod overflow;
mod panic;
pub mod queue;
mod throttle;

pub use classify::{Classify, DefaultClassifier, Outcome};
pub use counter::Counter;
pub use drain::{Drain, ShutdownReport};
pub use error::BoxError;
pub use metric::Metric;
pub use overflow::{Overflow, OverflowError};
pub use panic::{PanicPolicy, Panicked, catch_unwind, drop_contained, poll_contained};
pub use throttle::LogThrottle;

//! Typed stage pipelines for tokio: a source, stages that each run on their
//! own spawned workers (truly parallel), bounded channels between them, and
//! a sink, with batching, per-key ordered parallelism, per-stage error
//! policies, and a report that shows which stage is the bottleneck. Plus
//! [`par_map`], a parallel map over slices and iterators with a sequential
//! fast path.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use weft_pipeline::{Batch, OnError, Pipeline, Stage};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let (batches, report) = Pipeline::from_iter(["1", "2", "x", "4"].map(String::from))
//!     .named("ingest")
//!     .try_map(Stage::new("parse").on_error(OnError::Skip), |s: String| s.parse::<u32>())
//!     .then(Stage::new("enrich").workers(4), |n| async move {
//!         tokio::time::sleep(Duration::from_millis(10)).await; // a slow lookup
//!         n * 10
//!     })
//!     .batch("write", Batch::size(2).max_age(Duration::from_millis(50)))
//!     .collect()
//!     .run()
//!     .await
//!     .unwrap();
//! assert_eq!(batches, vec![vec![10, 20], vec![40]]);
//! assert_eq!(report.items_in, 4);
//! assert_eq!(report.failed, 1); // "x" did not parse: skipped and counted
//! println!("{report}");
//! # }
//! ```
//!
//! # How it works
//!
//! Each stage has an input queue ([`weft_core::queue::Queue`], bounded,
//! with the stage's [`Overflow`](weft_core::Overflow) policy) and `workers`
//! spawned tasks. Items travel in small chunks (up to [`DEFAULT_CHUNK`] for
//! synchronous stages), so the cost of a channel hand-off is paid once per
//! chunk, not per item; a worker sends its partial chunk as soon as its
//! input runs dry, so a trickle is not held back. Ordered stages with
//! several workers hand chunks out in turn and collect them in the same
//! turn; keyed stages route each item to the worker its key hashes to.
//!
//! # Comparison to stream combinators
//!
//! `futures`' `buffered(n)` / `buffer_unordered(n)` run up to `n` futures
//! *concurrently inside one task*: good for I/O, but CPU work in one of them
//! stalls all the others, every stage shares the same concurrency, and
//! `buffered` holds every result behind the slowest one. Here each stage has
//! its own spawned workers (parallel on a multi-thread runtime), its own
//! bounded queue and overflow policy, its own ordering (in order, as
//! finished, or per key), its own error policy, and its own line in the
//! report. For a few cheap steps over data already in memory, a loop (or
//! [`par_map`]) is faster than either: see docs/pipeline.md.
//!
//! # Failure
//!
//! Each stage has an [`OnError`] policy (fail fast by default, skip, or a
//! dead-letter sink) and optional [`Retry`] with a
//! [`Classify`](weft_core::Classify)er. Panics in stage functions, key
//! functions and retry classifiers are caught and handled by the same
//! policy; a panic in a batch stage's weigh function fails the batch stage.
//! Fail fast cancels every stage, upstream and downstream; no stage is left
//! blocked on a channel nobody reads. A panic that escapes anyway fails the
//! run under the name of the stage whose task it came from.
//!
//! # Shutdown
//!
//! [`Running`] (from [`Runnable::spawn`]) implements
//! [`Drain`](weft_core::Drain): the source stops (a
//! [`from_receiver`](Pipeline::from_receiver) source closes its channel and
//! passes on what was already sent), the stages drain what is queued,
//! batches are flushed; at the deadline the rest is cancelled and counted.
//!
//! # Feature flags
//!
//! - `metrics`: emit the metrics listed in docs/metrics.md.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod channel;
mod error;
#[cfg(feature = "metrics")]
mod metrics;
mod par_map;
mod pipeline;
mod report;
mod run;
mod stage;
mod worker;

pub use batch::{Batch, TimeRule};
pub use error::{BuildError, DeadLetter, OverflowKind, PipelineError, StageError};
pub use par_map::{ParMap, par_map, par_map_iter, try_par_map};
pub use pipeline::Pipeline;
pub use report::{Report, StageKind, StageReport};
pub use run::{Runnable, Running};
pub use stage::{DEFAULT_CAPACITY, DEFAULT_CHUNK, OnError, Retry, Stage};

//! Graceful shutdown for tokio services.
//!
//! A [`Coordinator`] waits for a trigger (SIGINT, SIGTERM, a programmatic
//! [`trigger`](Coordinator::trigger), or an external `CancellationToken`), then
//! shuts the service down in **ordered phases**, each with its own timeout
//! (by default `stop-accepting`, `drain`, `flush`, `close`). Components
//! register into a phase, either as a [`weft_core::Drain`] (a weft pool, actor
//! system, pipeline, or anything of yours) or as an async closure; components
//! of one phase drain concurrently, and one that overruns its phase's deadline
//! is cut off and named in the [`Report`]. Background tasks spawned through
//! [`Coordinator::spawn`] are tracked: once the phases have run they are
//! cancelled through a `CancellationToken`, and aborted after a grace period.
//! A second trigger during shutdown forces it: running components are
//! aborted, the remaining phases skipped, and tracked tasks aborted without
//! waiting out their grace period.
//!
//! [`ShutdownLayer`] is the tower side: once shutdown begins, new requests get
//! a typed [`ShuttingDown`] error (the 503 case) and in-flight requests are
//! drained before the phase completes.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, service_fn};
//! use weft_shutdown::{Coordinator, ShuttingDown};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let shutdown = Coordinator::builder()
//!     .phase("stop-accepting", Duration::from_secs(5))
//!     .phase("flush", Duration::from_secs(5))
//!     .signals(false) // a service keeps SIGINT/SIGTERM on (the default)
//!     .build()
//!     .unwrap();
//!
//! // Requests through this layer are refused once shutdown starts, and the
//! // `stop-accepting` phase waits for the ones in flight.
//! let layer = shutdown.layer("stop-accepting", "api").unwrap();
//! let mut api = tower::ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|x: u64| async move { Ok::<_, std::convert::Infallible>(x * 2) }));
//! assert_eq!(api.ready().await.unwrap().call(21).await.unwrap(), 42);
//!
//! shutdown.register_fn("flush", "audit log", |_deadline| async { /* flush */ }).unwrap();
//!
//! shutdown.trigger();
//! let report = shutdown.run().await;
//! assert!(report.is_clean(), "{report}");
//! let err = api.ready().await.err().unwrap();
//! assert!(err.downcast_ref::<ShuttingDown>().is_some());
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `metrics`: emits `weft_shutdown_*` metrics to the `metrics` facade (see
//!   docs/metrics.md).
//!
//! # How it fails
//!
//! A component that panics while draining (or while its closure builds its
//! future) is reported as [`ComponentOutcome::Panicked`] and does not stop
//! the others; one that overruns is [`ComponentOutcome::TimedOut`]; a task
//! that ignores its cancellation token is aborted and named in
//! [`TaskReport::aborted`]. The coordinator itself never panics on bad input:
//! misconfiguration is a [`BuildError`], [`RegisterError`] or [`SpawnError`]
//! that says what to change (the one exception: [`Coordinator::run`] polled
//! outside a tokio runtime panics, as `tokio::spawn` does).
//!
//! The shutdown runs on a task of its own, and every
//! [`run`](Coordinator::run) only waits for its report: dropping a `run`
//! future does not stop the shutdown. Should the coordinator's own task
//! panic, or its runtime shut down in the middle, the report is still
//! published, with [`Report::interrupted`] saying what happened.
//!
//! # Comparison to tokio-graceful-shutdown
//!
//! tokio-graceful-shutdown organises a service as a tree of subsystems that
//! each own their shutdown. weft's coordinator is flatter: ordered phases,
//! each with a deadline (as in Akka's CoordinatedShutdown), with components
//! that only need to implement [`weft_core::Drain`], and a report that
//! accounts for every accepted item.
#![forbid(unsafe_code)]

pub mod admission;
mod coordinator;
mod driver;
mod error;
mod report;
mod signal;
mod tasks;

pub use admission::{Shutdown, ShutdownLayer, ShuttingDown};
pub use coordinator::{Builder, CUTOFF_MARGIN, Coordinator, DEFAULT_PHASES};
pub use error::{BuildError, RegisterError, SpawnError};
pub use report::{ComponentOutcome, ComponentReport, PhaseReport, Report, TaskReport, Trigger};

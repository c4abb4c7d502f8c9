use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower_layer::Layer;
use weft_core::{Drain, ShutdownReport};

use super::service::Shutdown;
use super::state::State;
use crate::coordinator::TriggerState;

/// A tower layer that refuses new requests with [`ShuttingDown`](super::ShuttingDown)
/// once shutdown begins and lets the shutdown wait for the requests in flight.
///
/// Clones (and every service the layer builds) share one state. Get one from
/// [`Coordinator::layer`](crate::Coordinator::layer), which closes it as soon
/// as the shutdown is triggered and registers it into a phase; or build one
/// with [`ShutdownLayer::new`], [`close`](ShutdownLayer::close) it yourself, and
/// register it (it implements [`Drain`]).
///
/// Draining waits until every request admitted before the close has
/// finished, or the deadline passes; requests still running then are named
/// in the report's `unfinished` and counted as aborted (the server is
/// expected to drop them). A service that has reserved a slot in
/// `poll_ready` but not yet called counts as in flight until it calls or is
/// dropped; one still holding its slot at the deadline is named in
/// `unfinished` too, but not counted as aborted (it was never accepted).
///
/// ```
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_shutdown::{ShutdownLayer, ShuttingDown};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = ShutdownLayer::new("api");
/// let mut svc = tower::ServiceBuilder::new()
///     .layer(layer.clone())
///     .service(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x + 1) }));
/// assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
///
/// layer.close();
/// let err = svc.ready().await.err().unwrap();
/// assert!(err.downcast_ref::<ShuttingDown>().is_some());
/// assert_eq!(layer.stats().rejected, 1);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ShutdownLayer {
    state: Arc<State>,
}

/// A snapshot of a [`ShutdownLayer`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests admitted: the inner service's `call` returned a response
    /// future (a `call` that panics is not counted; its slot is released).
    pub accepted: u64,
    /// Requests whose response was `Ok`.
    pub completed: u64,
    /// Requests whose response was `Err`.
    pub failed: u64,
    /// Requests whose response future was dropped before it finished.
    pub cancelled: u64,
    /// Requests refused because the layer was closed.
    pub rejected: u64,
    /// Reservations and calls in flight right now.
    pub in_flight: usize,
}

impl ShutdownLayer {
    /// A layer that refuses requests once [`close`](ShutdownLayer::close)d.
    pub fn new(name: impl Into<String>) -> Self {
        ShutdownLayer {
            state: Arc::new(State::new(name.into(), None)),
        }
    }

    pub(crate) fn with_trigger(name: String, trigger: Arc<TriggerState>) -> Self {
        ShutdownLayer {
            state: Arc::new(State::new(name, Some(trigger))),
        }
    }

    /// Stops admitting requests. Requests already admitted run to completion.
    pub fn close(&self) {
        self.state.close();
    }

    /// Whether new requests are refused.
    pub fn is_closed(&self) -> bool {
        self.state.is_closed()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            accepted: self.state.accepted.get(),
            completed: self.state.completed.get(),
            failed: self.state.failed.get(),
            cancelled: self.state.cancelled.get(),
            rejected: self.state.rejected.get(),
            in_flight: self.state.in_flight(),
        }
    }
}

impl<S> Layer<S> for ShutdownLayer {
    type Service = Shutdown<S>;

    fn layer(&self, inner: S) -> Shutdown<S> {
        Shutdown::new(inner, self.state.clone())
    }
}

impl Drain for ShutdownLayer {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(async move {
            let start = Instant::now();
            self.close();
            let idle = self.state.idle_until(deadline).await;
            // Outcomes before `accepted`: `call` counts a request accepted
            // (right after the inner service's `call` returned, before the
            // response future exists) before it can have an outcome, so a
            // request admitted through an earlier reservation and finishing
            // during this read cannot make the outcomes exceed `accepted`
            // (the subtraction below saturates anyway: the counters are
            // relaxed). A request whose inner `call` is running during this
            // read still holds only its reservation, and is reported as one.
            let (completed, failed, cancelled) = (
                self.state.completed.get(),
                self.state.failed.get(),
                self.state.cancelled.get(),
            );
            let accepted = self.state.accepted.get();
            let in_flight = self.state.in_flight();
            let finished = completed + failed + cancelled;
            let running = accepted.saturating_sub(finished);
            let mut r = ShutdownReport::new(self.state.name.clone());
            r.accepted = finished + running;
            r.completed = completed;
            r.failed = failed;
            r.cancelled = cancelled;
            r.rejected_after_close = self.state.rejected.get();
            if !idle {
                r.aborted = running;
                if running > 0 {
                    r.unfinished.push(format!(
                        "{running} requests still in flight at the deadline"
                    ));
                }
                // `in_flight` counts calls (until their response) and
                // reservations not yet used; the latter are not accepted.
                let reserved = (in_flight as u64).saturating_sub(running);
                if reserved > 0 {
                    r.unfinished.push(format!(
                        "{reserved} reserved slots neither called nor released at the deadline"
                    ));
                }
            }
            r.elapsed = start.elapsed();
            r
        })
    }
}

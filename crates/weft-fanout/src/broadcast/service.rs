use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::FuturesUnordered;
use tower_service::Service;
use weft_core::{BoxError, Counter};

use super::error::BuildError;
use super::future::{Indexed, ResponseFuture};
use super::gather::{Gather, Strategy};

/// Sends each request to every service and gathers the answers with a
/// [`Gather`] strategy: [`All`](super::All),
/// [`FirstSuccess`](super::FirstSuccess) or [`Quorum`](super::Quorum).
///
/// The replicas' calls run concurrently inside the response future. As soon
/// as the strategy decides, the calls still running (the losers) are
/// dropped, which cancels them; dropping the response future cancels every
/// call. The request must be `Clone` (one copy per replica).
///
/// A replica that panics (in `call` or while its future runs) is a failed
/// replica: its answer is a [`BoxError`] holding a [`weft_core::Panicked`]
/// (find it with `downcast_ref`), so under [`FirstSuccess`](super::FirstSuccess)
/// it never beats a success, and [`All`](super::All) and
/// [`Quorum`](super::Quorum) count it as a failure. The panic is logged with
/// `tracing::error!` and counted in [`BroadcastStats::panicked`]; it never
/// unwinds through the response future.
///
/// Readiness: `poll_ready` is ready once *every* replica is ready (each
/// replica reserves its own capacity). Put a timeout or load-shed layer on a
/// replica that may stall, or it holds back the others.
///
/// ```
/// use std::time::Duration;
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_core::BoxError;
/// use weft_fanout::broadcast::{Broadcast, FirstSuccess};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let replica = |delay_ms: u64, ok: bool| {
///     service_fn(move |key: &'static str| async move {
///         tokio::time::sleep(Duration::from_millis(delay_ms)).await;
///         if ok { Ok(format!("{key} after {delay_ms} ms")) } else { Err(BoxError::from("down")) }
///     })
/// };
/// // The fast replica fails; the error does not beat the later success.
/// let replicas = vec![replica(5, false), replica(30, true), replica(80, true)];
/// let mut svc = Broadcast::new(replicas, FirstSuccess).unwrap();
/// let answer = svc.ready().await.unwrap().call("user:7").await.unwrap();
/// assert_eq!(answer, "user:7 after 30 ms");
/// assert_eq!(svc.stats().losers_cancelled, 1);
/// # }
/// ```
pub struct Broadcast<S, G> {
    services: Vec<S>,
    ready: Vec<bool>,
    gather: G,
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) name: &'static str,
    pub(super) calls: Counter,
    pub(super) succeeded: Counter,
    pub(super) failed: Counter,
    pub(super) losers_cancelled: Counter,
    pub(super) panicked: Counter,
    /// Its metrics, keys built once per name (no allocation per call).
    #[cfg(feature = "metrics")]
    pub(super) m: BroadcastMetrics,
}

/// `weft_fanout_broadcast_calls_total{name,outcome}` and
/// `weft_fanout_broadcast_losers_cancelled_total{name}`.
#[cfg(feature = "metrics")]
pub(super) struct BroadcastMetrics {
    pub(super) success: weft_core::Metric,
    pub(super) failure: weft_core::Metric,
    pub(super) losers: weft_core::Metric,
}

#[cfg(feature = "metrics")]
impl BroadcastMetrics {
    fn new(name: &str) -> Self {
        let calls = |outcome| {
            weft_core::Metric::new(
                "weft_fanout_broadcast_calls_total",
                &[("name", name), ("outcome", outcome)],
            )
        };
        BroadcastMetrics {
            success: calls("success"),
            failure: calls("failure"),
            losers: weft_core::Metric::new(
                "weft_fanout_broadcast_losers_cancelled_total",
                &[("name", name)],
            ),
        }
    }
}

/// A snapshot of a [`Broadcast`]'s counters (shared by its clones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BroadcastStats {
    /// Calls made.
    pub calls: u64,
    /// Calls the strategy decided as a success.
    pub succeeded: u64,
    /// Calls the strategy decided as a failure.
    pub failed: u64,
    /// Replica calls dropped because the outcome was already decided (or
    /// the response future was dropped).
    pub losers_cancelled: u64,
    /// Replica calls that panicked (in `call` or in their future); each
    /// counted by the strategy as a failed replica.
    pub panicked: u64,
}

impl<S, G> Broadcast<S, G> {
    /// A broadcast over `services` with strategy `gather`.
    ///
    /// Refused when `services` is empty or the strategy can never decide
    /// with that many services (a quorum larger than the replica set).
    pub fn new(services: Vec<S>, gather: G) -> Result<Self, BuildError>
    where
        G: Strategy,
    {
        if services.is_empty() {
            return Err(BuildError::NoServices);
        }
        gather.validate(services.len())?;
        Ok(Broadcast {
            ready: vec![false; services.len()],
            services,
            gather,
            shared: Arc::new(Shared {
                name: "broadcast",
                calls: Counter::new(),
                succeeded: Counter::new(),
                failed: Counter::new(),
                losers_cancelled: Counter::new(),
                panicked: Counter::new(),
                #[cfg(feature = "metrics")]
                m: BroadcastMetrics::new("broadcast"),
            }),
        })
    }

    /// Names the broadcast in traces and metrics (default `"broadcast"`).
    /// Call before cloning: clones share the name.
    pub fn with_name(mut self, name: &'static str) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => {
                shared.name = name;
                #[cfg(feature = "metrics")]
                {
                    shared.m = BroadcastMetrics::new(name);
                }
            }
            None => tracing::warn!(name, "broadcast already cloned; name not changed"),
        }
        self
    }

    /// The replicas.
    pub fn get_ref(&self) -> &[S] {
        &self.services
    }

    /// The replicas, mutably.
    pub fn get_mut(&mut self) -> &mut [S] {
        &mut self.services
    }

    /// Unwraps the replicas.
    pub fn into_inner(self) -> Vec<S> {
        self.services
    }

    /// A snapshot of the counters, shared by every clone.
    pub fn stats(&self) -> BroadcastStats {
        BroadcastStats {
            calls: self.shared.calls.get(),
            succeeded: self.shared.succeeded.get(),
            failed: self.shared.failed.get(),
            losers_cancelled: self.shared.losers_cancelled.get(),
            panicked: self.shared.panicked.get(),
        }
    }
}

impl<S: Clone, G: Clone> Clone for Broadcast<S, G> {
    /// The clone shares the counters and starts without a reservation.
    fn clone(&self) -> Self {
        Broadcast {
            services: self.services.clone(),
            ready: vec![false; self.services.len()],
            gather: self.gather.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, G> fmt::Debug for Broadcast<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("name", &self.shared.name)
            .field("replicas", &self.services.len())
            .field("strategy", &std::any::type_name::<G>())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S, G, Req> Service<Req> for Broadcast<S, G>
where
    Req: Clone,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    G: Gather<S::Response> + Clone,
{
    type Response = G::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, G>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut all = true;
        for (svc, ready) in self.services.iter_mut().zip(self.ready.iter_mut()) {
            if *ready {
                continue;
            }
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => *ready = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => all = false,
            }
        }
        if all {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            self.ready.iter().all(|r| *r),
            "Broadcast::call without poll_ready returning Ready(Ok) first"
        );
        let n = self.services.len();
        let running = FuturesUnordered::new();
        // A replica whose `call` panics fails on its own (`Panicked`); the
        // others are still called.
        for (replica, svc) in self.services[..n - 1].iter_mut().enumerate() {
            running.push(Indexed::start(replica, || svc.call(req.clone())));
        }
        // The last replica gets the original request (one clone fewer).
        let last = &mut self.services[n - 1];
        running.push(Indexed::start(n - 1, || last.call(req)));
        self.ready.iter_mut().for_each(|r| *r = false);
        self.shared.calls.incr();
        let mut gather = self.gather.clone();
        gather.start(n);
        ResponseFuture::new(running, gather, self.shared.clone())
    }
}

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tower_service::Service;
use weft_core::{BoxError, Counter};

use super::future::{Attempt, ResponseFuture};
use super::policy::{Budget, DelaySource, Latencies};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: &'static str,
    pub(crate) fixed: Option<Duration>,
    pub(crate) latencies: Option<Latencies>,
    pub(crate) max_extra: usize,
    pub(crate) budget: Budget,
    pub(crate) requests: Counter,
    pub(crate) hedges: Counter,
    pub(crate) hedge_wins: Counter,
    pub(crate) budget_denied: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) panicked: Counter,
    /// `weft_fanout_hedge_{attempts,wins,budget_denied}_total{name}`, keys
    /// built once (no allocation per hedge).
    #[cfg(feature = "metrics")]
    pub(crate) m_attempts: weft_core::Metric,
    #[cfg(feature = "metrics")]
    pub(crate) m_wins: weft_core::Metric,
    #[cfg(feature = "metrics")]
    pub(crate) m_denied: weft_core::Metric,
}

impl Shared {
    pub(crate) fn new(
        name: &'static str,
        source: DelaySource,
        max_extra: usize,
        ratio: f64,
        burst: u32,
    ) -> Self {
        let (fixed, latencies) = match source {
            DelaySource::Fixed(d) => (Some(d), None),
            DelaySource::Percentile {
                p,
                min_samples,
                window,
            } => (None, Some(Latencies::new(p, min_samples, window))),
        };
        Shared {
            name,
            fixed,
            latencies,
            max_extra,
            budget: Budget::new(ratio, burst),
            requests: Counter::new(),
            hedges: Counter::new(),
            hedge_wins: Counter::new(),
            budget_denied: Counter::new(),
            cancelled: Counter::new(),
            panicked: Counter::new(),
            #[cfg(feature = "metrics")]
            m_attempts: weft_core::Metric::new(
                "weft_fanout_hedge_attempts_total",
                &[("name", name)],
            ),
            #[cfg(feature = "metrics")]
            m_wins: weft_core::Metric::new("weft_fanout_hedge_wins_total", &[("name", name)]),
            #[cfg(feature = "metrics")]
            m_denied: weft_core::Metric::new(
                "weft_fanout_hedge_budget_denied_total",
                &[("name", name)],
            ),
        }
    }

    /// The delay before the next hedge, if hedging is on and possible yet.
    pub(crate) fn delay(&self) -> Option<Duration> {
        if self.max_extra == 0 {
            return None;
        }
        match &self.latencies {
            Some(l) => l.delay(),
            None => self.fixed,
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        if let Some(l) = &self.latencies {
            l.record(latency);
        }
    }
}

/// The service of [`HedgeLayer`](super::HedgeLayer).
///
/// An attempt that panics (in the inner `call` or in its future) is a
/// failed attempt: its error is a [`BoxError`] holding a
/// [`weft_core::Panicked`] (find it with `downcast_ref`), another attempt in
/// flight can still win, and the panic is logged with `tracing::error!` and
/// counted in [`HedgeStats::panicked`]; it never unwinds through the
/// response future. A panic in the inner `poll_ready` before a hedge means
/// no hedge, as an error there does.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_fanout::hedge::HedgeLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // The first attempt hangs for 1 s, the second answers in 10 ms.
/// let calls = Arc::new(AtomicU32::new(0));
/// let backend = service_fn(move |()| {
///     let n = calls.fetch_add(1, Ordering::SeqCst);
///     async move {
///         let ms = if n == 0 { 1000 } else { 10 };
///         tokio::time::sleep(Duration::from_millis(ms)).await;
///         Ok::<_, std::convert::Infallible>(n)
///     }
/// });
/// let layer = HedgeLayer::builder().fixed_delay(Duration::from_millis(50)).build().unwrap();
/// let mut svc = tower::ServiceBuilder::new().layer(layer).service(backend);
/// let start = tokio::time::Instant::now();
/// let answer = svc.ready().await.unwrap().call(()).await.unwrap();
/// assert_eq!(answer, 1, "the hedge won");
/// assert_eq!(start.elapsed(), Duration::from_millis(60));
/// assert_eq!(svc.stats().hedge_wins, 1);
/// # }
/// ```
pub struct Hedge<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// A snapshot of a hedge's counters (shared by every service of one layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Requests (primary attempts).
    pub requests: u64,
    /// Extra attempts sent.
    pub hedges: u64,
    /// Requests answered by an extra attempt.
    pub hedge_wins: u64,
    /// Extra attempts not sent because the budget was spent.
    pub budget_denied: u64,
    /// Attempts cancelled because another won (or the caller left).
    pub cancelled: u64,
    /// Attempts that panicked (in the inner `call` or in their future), each
    /// a failed attempt, and panics in the inner `poll_ready` before a hedge
    /// (which is then not sent).
    pub panicked: u64,
    /// The current hedge delay (`None` while the latency window is filling).
    pub delay: Option<Duration>,
}

impl<S> Hedge<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Hedge { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> HedgeStats {
        let s = &self.shared;
        HedgeStats {
            requests: s.requests.get(),
            hedges: s.hedges.get(),
            hedge_wins: s.hedge_wins.get(),
            budget_denied: s.budget_denied.get(),
            cancelled: s.cancelled.get(),
            panicked: s.panicked.get(),
            delay: s.delay(),
        }
    }
}

impl<S: Clone> Clone for Hedge<S> {
    /// Shares the latency window, budget and counters; the inner clone
    /// starts without a reservation.
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Hedge<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.requests.incr();
        self.shared.budget.deposit();
        let delay = self.shared.delay();
        let (hedge_req, hedge_svc) = match delay {
            Some(_) => (Some(req.clone()), Some(self.inner.clone())),
            None => (None, None),
        };
        // A panic in the inner `call` is the primary attempt's failure,
        // reported through the response future.
        let now = Instant::now();
        let inner = &mut self.inner;
        let primary = Attempt::start(false, now, || inner.call(req));
        ResponseFuture::new(
            primary,
            now,
            hedge_svc,
            hedge_req,
            delay,
            self.shared.clone(),
        )
    }
}

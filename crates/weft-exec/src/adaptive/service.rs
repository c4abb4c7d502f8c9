use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::ReusableBoxFuture;
use tower_service::Service;
use weft_core::Counter;

use super::future::{InFlight, ResponseFuture};
use super::slots::Slots;
use super::{Algorithm, Sample};

pub(crate) struct Limiter<A> {
    name: String,
    slots: Slots,
    algorithm: Mutex<(Window, A)>,
    notify: Notify,
    pub(crate) window_samples: u32,
    samples: Counter,
    skipped: Counter,
    algorithm_panics: Counter,
    gauge: crate::metrics::Metric,
}

impl<A> fmt::Debug for Limiter<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("name", &self.name)
            .field("limit", &self.slots.limit())
            .field("in_flight", &self.slots.in_flight())
            .finish()
    }
}

impl<A: Algorithm> Limiter<A> {
    pub(crate) fn new(name: String, algorithm: A) -> Self {
        let limit = algorithm.initial_limit();
        assert!(
            limit > 0,
            "Algorithm::initial_limit returned 0: an adaptive limit must start at 1 or more"
        );
        let gauge = crate::metrics::limit(&name);
        gauge.set(limit as f64);
        Limiter {
            gauge,
            name,
            slots: Slots::new(limit),
            algorithm: Mutex::new((Window::default(), algorithm)),
            notify: Notify::new(),
            window_samples: WINDOW_SAMPLES,
            samples: Counter::new(),
            skipped: Counter::new(),
            algorithm_panics: Counter::new(),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.slots.limit()
    }

    fn try_acquire(&self) -> Option<usize> {
        self.slots.try_acquire()
    }

    pub(crate) fn release(&self) {
        self.slots.release();
        self.notify.notify_one();
    }

    pub(crate) fn sample(&self, rtt: Duration, in_flight: usize, dropped: bool) {
        // Never wait for the algorithm: a sample that arrives while another
        // is being applied is skipped (and counted).
        let mut guard = match self.algorithm.try_lock() {
            Ok(g) => g,
            // A panic in a user's algorithm is caught below, so the lock is
            // not poisoned by it; anything else that poisoned it left the
            // window and algorithm as consistent as a panic can: go on.
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.skipped.incr();
                return;
            }
        };
        self.samples.incr();
        let (window, algo) = &mut *guard;
        let Some(agg) = window.add(self.window_samples, Instant::now(), rtt, in_flight, dropped)
        else {
            return;
        };
        let old = self.limit();
        // `Algorithm` is a public trait: a panic in a user's `update` keeps
        // the limit where it was and is logged, never reaching the request
        // whose response produced the sample.
        let updated =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| algo.update(old, agg)));
        drop(guard);
        let new = match updated {
            Ok(n) => n.max(1),
            Err(p) => {
                let p = weft_core::Panicked::from_payload(p.as_ref());
                self.algorithm_panics.incr();
                tracing::error!(name = %self.name, panic = %p.message(), "adaptive limit algorithm panicked; the limit stays at {old}");
                old
            }
        };
        if new != old {
            self.slots.set_limit(new);
            self.gauge.set(new as f64);
            tracing::trace!(name = %self.name, old, new, "adaptive limit changed");
            if new > old {
                self.notify.notify_waiters();
            }
        }
    }
}

/// Samples are aggregated over a window before the algorithm sees them: at
/// least `window_samples` samples (default 10) and at least the smallest latency in the
/// window (about one round trip). The algorithm gets the mean latency, the
/// largest in-flight count, and whether any request failed. Without it, an
/// algorithm that moves on every sample reacts hundreds of times to one
/// round trip's worth of congestion and oscillates.
#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    count: u32,
    sum: Duration,
    min: Duration,
    max_in_flight: usize,
    dropped: bool,
}

/// The default least number of samples in an aggregation window.
pub(crate) const WINDOW_SAMPLES: u32 = 10;

impl Window {
    fn add(
        &mut self,
        min_samples: u32,
        now: Instant,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
    ) -> Option<Sample> {
        let start = *self.start.get_or_insert(now);
        if self.count == 0 || rtt < self.min {
            self.min = rtt;
        }
        self.count += 1;
        self.sum += rtt;
        self.max_in_flight = self.max_in_flight.max(in_flight);
        self.dropped |= dropped;
        if self.count < min_samples || now.duration_since(start) < self.min {
            return None;
        }
        let s = Sample::new(self.sum / self.count, self.max_in_flight, self.dropped);
        *self = Window::default();
        Some(s)
    }
}

/// A concurrency limit that adapts to the downstream: an [`Algorithm`]
/// ([`Aimd`](crate::Aimd), [`Vegas`](crate::Vegas), or your own) moves the
/// limit from the latency of completed requests and whether they failed,
/// aggregated over windows of at least 10 samples and one round trip. `poll_ready` waits for a slot; wrap in
/// [`LoadShed`](crate::LoadShed) to refuse instead (the usual setup: excess
/// requests fail fast, admitted ones stay fast).
///
/// State is shared across clones; the slot is reserved in `poll_ready` and
/// released when the response completes, when its future is dropped, or when
/// a service holding a reservation is dropped. A dropped (cancelled)
/// response is not a sample. The algorithm is never waited for: a sample
/// arriving while another is applied is skipped.
///
/// ```
/// use tower::{Layer, Service, ServiceExt, service_fn};
/// use weft_exec::{AdaptiveLimitLayer, Vegas};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let layer = AdaptiveLimitLayer::new(Vegas::new());
/// let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
/// assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
/// assert_eq!(svc.stats().limit, 20); // Vegas's initial limit
/// # }
/// ```
pub struct AdaptiveLimit<S, A: Algorithm> {
    inner: S,
    shared: Arc<Limiter<A>>,
    reserved: Option<usize>,
    waiting: bool,
    wait: ReusableBoxFuture<'static, ()>,
}

/// A snapshot of an adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdaptiveStats {
    /// The current limit.
    pub limit: usize,
    /// Slots reserved or in use.
    pub in_flight: usize,
    /// Samples applied.
    pub samples: u64,
    /// Samples skipped because another was being applied.
    pub skipped: u64,
    /// Updates in which the algorithm panicked (caught and logged; the
    /// limit stayed where it was).
    pub algorithm_panics: u64,
}

async fn wait_for<A: Algorithm>(shared: Arc<Limiter<A>>) {
    shared.notify.notified().await
}

impl<S, A: Algorithm> AdaptiveLimit<S, A> {
    /// Wraps `inner` with its own limit driven by `algorithm`.
    ///
    /// # Panics
    ///
    /// If the algorithm's initial limit is 0, or its settings contradict
    /// each other (see [`Algorithm::initial_limit`]).
    pub fn new(inner: S, algorithm: A) -> Self {
        Self::with_shared(
            inner,
            Arc::new(Limiter::new("adaptive_limit".into(), algorithm)),
        )
    }

    pub(crate) fn with_shared(inner: S, shared: Arc<Limiter<A>>) -> Self {
        AdaptiveLimit {
            inner,
            shared,
            reserved: None,
            waiting: false,
            wait: ReusableBoxFuture::new(async {}),
        }
    }

    /// The limit and its use.
    pub fn stats(&self) -> AdaptiveStats {
        AdaptiveStats {
            limit: self.shared.limit(),
            in_flight: self.shared.slots.in_flight(),
            samples: self.shared.samples.get(),
            skipped: self.shared.skipped.get(),
            algorithm_panics: self.shared.algorithm_panics.get(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, A: Algorithm, Req> Service<Req> for AdaptiveLimit<S, A>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, A>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while self.reserved.is_none() {
            if let Some(n) = self.shared.try_acquire() {
                self.reserved = Some(n);
                if self.waiting {
                    // Drop the registration (a notification it got passes on).
                    self.wait.set(async {});
                    self.waiting = false;
                }
                break;
            }
            if !self.waiting {
                self.wait.set(wait_for(self.shared.clone()));
                self.waiting = true;
            }
            match self.wait.poll(cx) {
                Poll::Ready(()) => self.waiting = false,
                Poll::Pending => {
                    // Registered now: re-check so a release in between is
                    // not missed.
                    if let Some(n) = self.shared.try_acquire() {
                        self.reserved = Some(n);
                        self.wait.set(async {});
                        self.waiting = false;
                        break;
                    }
                    return Poll::Pending;
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let in_flight = self.reserved.take().expect(
            "AdaptiveLimit::call without a reserved slot: call poll_ready (or ready()) first",
        );
        let slot = InFlight {
            shared: self.shared.clone(),
            start: Instant::now(),
            in_flight,
        };
        ResponseFuture::new(self.inner.call(req), slot)
    }
}

impl<S, A: Algorithm> Drop for AdaptiveLimit<S, A> {
    fn drop(&mut self) {
        if self.reserved.take().is_some() {
            self.shared.release();
        }
    }
}

impl<S: Clone, A: Algorithm> Clone for AdaptiveLimit<S, A> {
    fn clone(&self) -> Self {
        Self::with_shared(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, A: Algorithm> fmt::Debug for AdaptiveLimit<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("reserved", &self.reserved.is_some())
            .finish()
    }
}

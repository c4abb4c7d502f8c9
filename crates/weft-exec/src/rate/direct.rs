use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;
use weft_core::Counter;

use super::TokioClock;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Shared<C: Clock> {
    name: String,
    limiter: Direct<C>,
    throttled: Counter,
    m_throttled: crate::metrics::Metric,
}

/// Applies [`RateLimit`]; every service built from one layer (and every
/// clone) draws from one governor budget.
pub struct RateLimitLayer<C: Clock = TokioClock> {
    shared: Arc<Shared<C>>,
}

impl RateLimitLayer<TokioClock> {
    /// A rate limit of `quota` on `tokio::time`.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use weft_exec::{Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(100).unwrap()));
    /// ```
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, TokioClock::new())
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// A rate limit of `quota` on another governor clock (for example
    /// governor's `QuantaClock`, when paused-time tests do not matter).
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        RateLimitLayer {
            shared: Arc::new(Shared {
                name: "rate_limit".to_owned(),
                limiter: RateLimiter::direct_with_clock(quota, clock),
                throttled: Counter::new(),
                m_throttled: crate::metrics::rate_limited("rate_limit"),
            }),
        }
    }
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
            granted: false,
            sleep: None,
        }
    }
}

/// Lets requests through at the rate of a governor [`Quota`]; `poll_ready`
/// waits (on a tokio timer) until the budget allows the next one.
///
/// Pair it with [`LoadShed`](crate::LoadShed) to refuse instead of wait. The
/// ready path takes no lock and allocates nothing: one governor `check()`
/// (an atomic compare-and-swap). The inner service's errors pass through.
///
/// A grant taken in `poll_ready` is spent even if the service is dropped
/// without `call` (governor cannot give a cell back); clones start without a
/// grant.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use tower::{Layer, Service, ServiceExt, service_fn};
/// use weft_exec::{Quota, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let quota = Quota::per_second(NonZeroU32::new(10).unwrap()).allow_burst(NonZeroU32::new(1).unwrap());
/// let echo = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
/// let mut svc = RateLimitLayer::new(quota).layer(echo);
/// let start = tokio::time::Instant::now();
/// for i in 0..3 {
///     svc.ready().await.unwrap().call(i).await.unwrap();
/// }
/// // One at once, then one every 100 ms.
/// assert_eq!(start.elapsed(), Duration::from_millis(200));
/// # }
/// ```
pub struct RateLimit<S, C: Clock = TokioClock> {
    inner: S,
    shared: Arc<Shared<C>>,
    granted: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// A snapshot of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// How many times `poll_ready` had to wait for the budget.
    pub throttled: u64,
}

impl<S, C: Clock> RateLimit<S, C> {
    /// How often callers had to wait.
    pub fn stats(&self) -> RateLimitStats {
        RateLimitStats {
            throttled: self.shared.throttled.get(),
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

    /// Consumes the wrapper, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for RateLimit<S, C>
where
    S: Service<Req>,
    C: Clock,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.granted {
            if let Some(sleep) = self.sleep.as_mut() {
                std::task::ready!(sleep.as_mut().poll(cx));
            }
            match self.shared.limiter.check() {
                Ok(()) => self.granted = true,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.shared.limiter_clock_now());
                    let at = tokio::time::Instant::now() + wait;
                    self.shared.throttled.incr();
                    self.shared.m_throttled.incr();
                    tracing::trace!(name = %self.shared.name, ?wait, "rate limited: waiting");
                    match self.sleep.as_mut() {
                        Some(s) => s.as_mut().reset(at),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            std::mem::take(&mut self.granted),
            "RateLimit::call without a grant: call poll_ready (or ready()) first"
        );
        self.inner.call(req)
    }
}

impl<C: Clock> Shared<C> {
    fn limiter_clock_now(&self) -> C::Instant {
        self.limiter.clock().now()
    }
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            granted: false,
            sleep: None,
        }
    }
}

impl<S: fmt::Debug, C: Clock> fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("granted", &self.granted)
            .finish()
    }
}

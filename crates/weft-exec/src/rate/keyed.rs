use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use tower_layer::Layer;
use tower_service::Service;
use weft_core::{BoxError, Counter};

use super::TokioClock;
use crate::error::{KeyedRefusal, RateLimited, TooManyKeys};

/// governor's DashMap store, shared so that the limiter can see which keys
/// it tracks.
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    #[inline]
    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below)
    }
    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Keyed<K> = RateLimiter<K, SharedStore<K>, TokioClock, NoOpMiddleware<Nanos>>;

struct Inner<K: Hash + Eq + Clone> {
    name: String,
    quota: Quota,
    limiter: Keyed<K>,
    map: Arc<DashMapStateStore<K>>,
    max_keys: usize,
    sweep_every: u64,
    last_sweep: AtomicU64,
    calls: AtomicU64,
    approx_len: AtomicUsize,
    counted_at: AtomicU64,
    limited: Counter,
    refused_keys: Counter,
    evicted: Counter,
    /// One `warn!` a second for a flood of refusals, per kind.
    log_limited: crate::throttle::Throttle,
    m_limited: crate::metrics::Metric,
    log_full: crate::throttle::Throttle,
}

/// A governor keyed rate limiter whose key store stays bounded.
///
/// governor's keyed stores keep one entry per key ever seen unless someone
/// calls `retain_recent`. This limiter does it for you:
///
/// - **Idle keys are evicted automatically**: at most every
///   [`sweep_interval`](Self::sweep_interval) (checked every 256 calls, on
///   the calling thread, no background task), `retain_recent` drops every key
///   whose budget has been full for at least one replenish interval
///   (governor's rule) — a key that comes back later starts with a full
///   budget, exactly as if it had been kept.
/// - **A cap on keys**: when [`max_keys`](Self::max_keys) keys are tracked, a
///   request with a *new* key forces a sweep (at most once per 1/8 of the
///   sweep interval, so a flood of new keys cannot make every call O(keys));
///   if the store is still full, the new key is refused with
///   [`TooManyKeys`]. Keys already tracked keep being served. This fails
///   closed for newcomers rather than letting an attacker who cycles keys
///   reset everyone's budget. Under concurrent callers the store may exceed
///   the cap by at most the number of callers racing on new keys.
///
/// Clones share one limiter. Time is `tokio::time`.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use weft_exec::{KeyedRateLimiter, KeyedRefusal, Quota};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
/// let limiter = KeyedRateLimiter::new(quota).max_keys(2);
/// assert!(limiter.check(&"alice").is_ok());
/// assert!(matches!(limiter.check(&"alice"), Err(KeyedRefusal::RateLimited(_))));
/// assert!(limiter.check(&"bob").is_ok());
/// // Two keys tracked, both still busy: a third is refused...
/// assert!(matches!(limiter.check(&"carol"), Err(KeyedRefusal::TooManyKeys(_))));
/// // ...until the others go idle and are evicted.
/// tokio::time::sleep(Duration::from_secs(2)).await;
/// assert!(limiter.check(&"carol").is_ok());
/// assert_eq!(limiter.stats().keys, 1);
/// # }
/// ```
pub struct KeyedRateLimiter<K: Hash + Eq + Clone> {
    inner: Arc<Inner<K>>,
}

/// A snapshot of a keyed rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedRateLimitStats {
    /// Keys tracked at the last count (updated every 256 calls and at each
    /// sweep).
    pub keys: usize,
    /// Requests refused because their key's budget was spent.
    pub rate_limited: u64,
    /// Requests refused because the store was full of active keys.
    pub refused_new_keys: u64,
    /// Idle keys evicted by sweeps.
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A keyed limiter giving each key `quota`, with the defaults: at most
    /// 100,000 keys (a few MB of state) and a sweep every second.
    pub fn new(quota: Quota) -> Self {
        Self::build(
            quota,
            100_000,
            Duration::from_secs(1),
            "keyed_rate_limit".into(),
        )
    }

    fn build(quota: Quota, max_keys: usize, sweep: Duration, name: String) -> Self {
        let map: Arc<DashMapStateStore<K>> = Arc::new(DashMapStateStore::default());
        let clock = TokioClock::new();
        let m_limited = crate::metrics::rate_limited(&name);
        KeyedRateLimiter {
            inner: Arc::new(Inner {
                name,
                quota,
                limiter: RateLimiter::new(quota, SharedStore(map.clone()), clock),
                map,
                max_keys,
                sweep_every: sweep.as_nanos().min(u64::MAX as u128) as u64,
                last_sweep: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                approx_len: AtomicUsize::new(0),
                counted_at: AtomicU64::new(0),
                limited: Counter::new(),
                refused_keys: Counter::new(),
                evicted: Counter::new(),
                log_limited: crate::throttle::Throttle::new(),
                m_limited,
                log_full: crate::throttle::Throttle::new(),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut usize, &mut Duration, &mut String)) -> Self {
        let i = &self.inner;
        let mut max = i.max_keys;
        let mut sweep = Duration::from_nanos(i.sweep_every);
        let mut name = i.name.clone();
        f(&mut max, &mut sweep, &mut name);
        Self::build(i.quota, max, sweep, name)
    }

    /// Caps the number of keys tracked (default 100,000: a few MB of state).
    ///
    /// # Panics
    ///
    /// If `n` is 0 (a limiter that refuses every key); pass how many keys
    /// may be tracked at once.
    #[track_caller]
    pub fn max_keys(self, n: usize) -> Self {
        assert!(
            n > 0,
            "KeyedRateLimiter max_keys must be at least 1 (got 0): pass how many keys may be tracked at once"
        );
        self.rebuild(|m, _, _| *m = n)
    }

    /// How often idle keys are evicted (default 1 s).
    pub fn sweep_interval(self, d: Duration) -> Self {
        self.rebuild(|_, s, _| *s = d)
    }

    /// The name used in tracing and metrics.
    pub fn name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.rebuild(|_, _, n| *n = name)
    }

    /// Takes one cell from `key`'s budget.
    pub fn check(&self, key: &K) -> Result<(), KeyedRefusal> {
        let i = &*self.inner;
        let n = i.calls.fetch_add(1, Ordering::Relaxed);
        if n % 256 == 0 {
            self.maybe_sweep(false, n);
        }
        // Each call adds at most one key, so the store holds at most
        // `approx_len + calls since it was counted` keys: only near the cap
        // is a new key looked for and the store counted.
        let since = n.saturating_sub(i.counted_at.load(Ordering::Relaxed));
        if i.approx_len.load(Ordering::Relaxed) as u64 + since >= i.max_keys as u64
            && !i.map.contains_key(key)
        {
            self.count(n);
            if i.approx_len.load(Ordering::Relaxed) >= i.max_keys {
                self.maybe_sweep(true, n);
            }
            if i.approx_len.load(Ordering::Relaxed) >= i.max_keys && !i.map.contains_key(key) {
                i.refused_keys.incr();
                i.m_limited.incr();
                crate::throttle::warn_throttled!(i.log_full, name = %i.name, max_keys = i.max_keys, "keyed rate limiter full: new key refused");
                return Err(TooManyKeys::new(i.max_keys).into());
            }
        }
        match i.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(nu) => {
                i.limited.incr();
                i.m_limited.incr();
                let retry_after = nu.wait_time_from(i.limiter.clock().now());
                crate::throttle::warn_throttled!(i.log_limited, name = %i.name, ?retry_after, "rate limited: key over its budget");
                Err(RateLimited::new(retry_after).into())
            }
        }
    }

    fn count(&self, at_call: u64) {
        let i = &*self.inner;
        i.approx_len.store(i.map.len(), Ordering::Relaxed);
        i.counted_at.store(at_call, Ordering::Relaxed);
    }

    fn maybe_sweep(&self, forced: bool, n: u64) {
        let i = &*self.inner;
        let now = i.limiter.clock().now().as_u64();
        let last = i.last_sweep.load(Ordering::Relaxed);
        let gap = if forced {
            i.sweep_every / 8
        } else {
            i.sweep_every
        };
        if now.saturating_sub(last) >= gap
            && i.last_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep_now(n);
        } else if !forced {
            self.count(n);
        }
    }

    fn sweep_now(&self, n: u64) {
        let i = &*self.inner;
        let before = i.map.len();
        i.limiter.retain_recent();
        let after = i.map.len();
        if after < before / 2 {
            i.limiter.shrink_to_fit();
        }
        i.evicted.add(before.saturating_sub(after) as u64);
        self.count(n);
        tracing::debug!(name = %i.name, before, after, "evicted idle rate-limit keys");
    }

    /// Evicts idle keys now (it also happens on its own; see above).
    pub fn sweep(&self) {
        let i = &*self.inner;
        i.last_sweep
            .store(i.limiter.clock().now().as_u64(), Ordering::Relaxed);
        self.sweep_now(i.calls.load(Ordering::Relaxed));
    }

    /// A snapshot of the limiter.
    pub fn stats(&self) -> KeyedRateLimitStats {
        let i = &*self.inner;
        KeyedRateLimitStats {
            keys: i.map.len(),
            rate_limited: i.limited.get(),
            refused_new_keys: i.refused_keys.get(),
            evicted: i.evicted.get(),
        }
    }
}

impl<K: Hash + Eq + Clone> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.inner.name)
            .field("max_keys", &self.inner.max_keys)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Applies [`KeyedRateLimit`]: services built from one layer share one
/// [`KeyedRateLimiter`].
pub struct KeyedRateLimitLayer<K: Hash + Eq + Clone, F> {
    limiter: KeyedRateLimiter<K>,
    key: F,
}

impl<K: Hash + Eq + Clone, F> KeyedRateLimitLayer<K, F> {
    /// Limits each key (`key(&request)`) with `limiter`.
    pub fn new(limiter: KeyedRateLimiter<K>, key: F) -> Self {
        KeyedRateLimitLayer { limiter, key }
    }
}

impl<K: Hash + Eq + Clone, F: Clone> Clone for KeyedRateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, F> fmt::Debug for KeyedRateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<S, K: Hash + Eq + Clone, F: Clone> Layer<S> for KeyedRateLimitLayer<K, F> {
    type Service = KeyedRateLimit<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            ready: false,
        }
    }
}

/// A per-key rate limit: the request's key is checked in `call`, and a
/// request over its key's budget fails at once with [`RateLimited`] (or
/// [`TooManyKeys`]), boxed, without reaching the inner service — the "429
/// with Retry-After" of an API gateway. Refusals are logged with
/// `tracing::warn!` (at most one line a second, saying how many more were
/// refused since the last; the others at debug).
///
/// `poll_ready` is the inner service's: the key is only known in `call`, so
/// nothing is reserved here, and a refused request leaves the inner
/// service's readiness (and any reservation it holds) for the next one.
/// Calling without a successful `poll_ready` is a bug and panics, whatever
/// the inner service would have done; a clone starts not ready.
///
/// ```
/// use std::num::NonZeroU32;
/// use tower::{Layer, Service, ServiceExt, service_fn};
/// use weft_exec::{KeyedRateLimitLayer, KeyedRateLimiter, Quota, RateLimited};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = KeyedRateLimiter::new(Quota::per_minute(NonZeroU32::new(1).unwrap()));
/// let layer = KeyedRateLimitLayer::new(limiter, |req: &(&str, u32)| req.0.to_owned());
/// let echo = service_fn(|req: (&str, u32)| async move { Ok::<_, std::convert::Infallible>(req.1) });
/// let mut svc = layer.layer(echo);
/// assert_eq!(svc.ready().await.unwrap().call(("alice", 1)).await.unwrap(), 1);
/// let err = svc.ready().await.unwrap().call(("alice", 2)).await.unwrap_err();
/// assert!(err.downcast_ref::<RateLimited>().is_some());
/// assert_eq!(svc.ready().await.unwrap().call(("bob", 3)).await.unwrap(), 3);
/// # }
/// ```
pub struct KeyedRateLimit<S, K: Hash + Eq + Clone, F> {
    inner: S,
    limiter: KeyedRateLimiter<K>,
    key: F,
    ready: bool,
}

impl<S, K: Hash + Eq + Clone, F> KeyedRateLimit<S, K, F> {
    /// The shared limiter.
    pub fn limiter(&self) -> &KeyedRateLimiter<K> {
        &self.limiter
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

impl<S: Clone, K: Hash + Eq + Clone, F: Clone> Clone for KeyedRateLimit<S, K, F> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            ready: false,
        }
    }
}

impl<S: fmt::Debug, K: Hash + Eq + Clone, F> fmt::Debug for KeyedRateLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("ready", &self.ready)
            .finish()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedRateLimit<S, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = KeyedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ready = self.inner.poll_ready(cx).map_err(Into::into);
        self.ready = matches!(ready, Poll::Ready(Ok(())));
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "KeyedRateLimit::call without poll_ready: call poll_ready (or ready()) first"
        );
        let key = (self.key)(&req);
        match self.limiter.check(&key) {
            Ok(()) => KeyedFuture {
                state: KState::Called {
                    fut: self.inner.call(req),
                },
            },
            Err(refusal) => KeyedFuture {
                state: KState::Refused {
                    err: Some(match refusal {
                        KeyedRefusal::RateLimited(e) => Box::new(e) as BoxError,
                        KeyedRefusal::TooManyKeys(e) => Box::new(e),
                    }),
                },
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`KeyedRateLimit`].
    #[derive(Debug)]
    pub struct KeyedFuture<F> {
        #[pin]
        state: KState<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = KStateProj]
    #[derive(Debug)]
    enum KState<F> {
        Called { #[pin] fut: F },
        Refused { err: Option<BoxError> },
    }
}

impl<F, T, E> Future for KeyedFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            KStateProj::Called { fut } => Poll::Ready(ready!(fut.poll(cx)).map_err(Into::into)),
            KStateProj::Refused { err } => Poll::Ready(Err(err
                .take()
                .expect("KeyedFuture polled after completion"))),
        }
    }
}

//! One breaker per key (host, tenant, route), with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::future::IntoFuture;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;
use weft_core::{Classify, DefaultClassifier, LogThrottle};

use crate::breaker::core::Worth;
use crate::breaker::{BuildError, Builder, CallError, CircuitBreaker};

const SHARDS: usize = 16;

/// A map from key to [`CircuitBreaker`], built on demand from one template,
/// with a cap on keys and idle keys evicted.
///
/// Lookups take a read lock on one of 16 shards; a new key takes that
/// shard's write lock once. A caller still holding an evicted key's breaker
/// keeps a working breaker; the next lookup of that key starts a fresh,
/// closed one.
///
/// # Eviction keeps failing keys failed
///
/// An evicted breaker that was open would come back closed, without its
/// open period and without the trip count that grows the next one: the
/// hosts that are failing would get full traffic again, and under key
/// pressure (many keys, a small cap) exactly those hosts would be hammered.
/// So eviction prefers the keys whose breaker loses nothing:
///
/// - **Idle keys** (unused for the idle timeout) are swept at most once per
///   idle timeout when a key is added, or by calling
///   [`evict_idle`](Self::evict_idle) (for example from a periodic task).
///   The sweep skips a breaker that is open within its current open
///   duration, half-open with probes in flight, or forced open; an open
///   breaker goes once its open duration has passed (its next call would
///   have been a probe).
/// - **At the cap**, after the idle sweep, one key makes room: a closed (or
///   disabled) key if there is one, the least recently used of them; else,
///   every key held being open, half-open or forced open, an open one past
///   its open duration or a half-open one with no probe in flight; else
///   the least recently used key whatever its state. Evicting an open,
///   half-open or forced-open key is logged with `tracing::warn!` (one
///   line a second, saying how many more it stands for; the others at
///   `debug`) and counted in [`KeyedStats::evicted_open`]: it means
///   `max_keys` is too small for the dependencies failing at once.
///
/// Choosing a key to evict scans every key held (as the least recently
/// used choice did before it); a lookup of a key already held never
/// evicts and costs the same whatever the policy.
///
/// ```
/// use std::time::Duration;
/// use weft_breaker::{CircuitBreaker, KeyedBreaker, State};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let hosts = KeyedBreaker::new(
///     CircuitBreaker::builder().consecutive_failures(1),
///     1_000,
///     Duration::from_secs(300),
/// )
/// .unwrap();
/// let _ = hosts.call(&"a.example", async { Err::<(), _>("refused") }).await;
/// assert_eq!(hosts.get(&"a.example").state(), State::Open);
/// assert_eq!(hosts.get(&"b.example").state(), State::Closed);
/// assert_eq!(hosts.len(), 2);
/// # }
/// ```
pub struct KeyedBreaker<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedBreaker<K> {
    fn clone(&self) -> Self {
        KeyedBreaker {
            inner: self.inner.clone(),
        }
    }
}

struct Entry {
    breaker: CircuitBreaker,
    last_used: AtomicU64,
}

struct Inner<K> {
    template: Builder,
    hasher: RandomState,
    shards: Box<[RwLock<HashMap<K, Entry>>]>,
    len: AtomicUsize,
    cap: usize,
    idle: u64,
    base: Instant,
    last_sweep: AtomicU64,
    evicted_idle: AtomicU64,
    evicted_lru: AtomicU64,
    evicted_open: AtomicU64,
    overflow: AtomicU64,
    /// One `warn!` a second for the two events that come once per lookup
    /// under key pressure (the rest at `debug`; all counted in the stats).
    log_overflow: LogThrottle,
    log_evicted_open: LogThrottle,
}

/// A snapshot of a [`KeyedBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedStats {
    /// Keys held now.
    pub keys: usize,
    /// The cap on keys.
    pub max_keys: usize,
    /// Keys evicted for being idle.
    pub evicted_idle: u64,
    /// Keys evicted at the cap to make room: closed ones first, least
    /// recently used first (see [`KeyedBreaker`]). Includes
    /// [`evicted_open`](Self::evicted_open).
    pub evicted_lru: u64,
    /// Of [`evicted_lru`](Self::evicted_lru), keys whose breaker was open,
    /// half-open or forced open when evicted, because every key held was:
    /// each one's next lookup starts closed. Non-zero means `max_keys` is
    /// too small for the dependencies failing at once.
    pub evicted_open: u64,
    /// Lookups that found the map full even after evicting (under heavy
    /// contention) and got a breaker that is not kept.
    pub overflow: u64,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl<K> KeyedBreaker<K>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// A keyed breaker whose breakers are built from `template` (each named
    /// `template-name[key]`), holding at most `max_keys` keys and evicting
    /// keys unused for `idle_timeout`.
    ///
    /// Neither eviction drops a breaker that is holding calls back while
    /// a closed one could go instead (see [`KeyedBreaker`]): size
    /// `max_keys` for the keys in use plus the ones failing at once. An
    /// open breaker stays at least its open duration however short
    /// `idle_timeout` is.
    pub fn new(
        template: Builder,
        max_keys: usize,
        idle_timeout: Duration,
    ) -> Result<Self, BuildError> {
        template.params()?;
        if max_keys == 0 {
            return Err(BuildError::Count {
                what: "max keys",
                value: 0,
                max: usize::MAX as u64,
            });
        }
        if idle_timeout.is_zero() {
            return Err(BuildError::ZeroDuration("idle timeout"));
        }
        Ok(KeyedBreaker {
            inner: Arc::new(Inner {
                template,
                hasher: RandomState::new(),
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
                len: AtomicUsize::new(0),
                cap: max_keys,
                idle: u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX),
                base: Instant::now(),
                last_sweep: AtomicU64::new(0),
                evicted_idle: AtomicU64::new(0),
                evicted_lru: AtomicU64::new(0),
                evicted_open: AtomicU64::new(0),
                overflow: AtomicU64::new(0),
                log_overflow: LogThrottle::new(),
                log_evicted_open: LogThrottle::new(),
            }),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.inner.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, Entry>> {
        let h = self.inner.hasher.hash_one(key);
        &self.inner.shards[(h as usize) % SHARDS]
    }

    /// The breaker for `key`, created if there is none.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let now = self.now();
        let shard = self.shard(key);
        if let Some(e) = read(shard).get(key) {
            if e.last_used.load(Ordering::Relaxed) != now {
                e.last_used.store(now, Ordering::Relaxed);
            }
            return e.breaker.clone();
        }
        self.maybe_sweep(now);
        if !self.reserve(now) {
            self.inner.overflow.fetch_add(1, Ordering::Relaxed);
            const FULL: &str =
                "keyed breaker full; using a breaker that is not kept (raise max_keys)";
            match self.inner.log_overflow.admit() {
                Some(more) => tracing::warn!(key = ?key, more_since_last_line = more, "{FULL}"),
                None => tracing::debug!(key = ?key, "{FULL}"),
            }
            return self.build(key);
        }
        let mut map = write(shard);
        if let Some(e) = map.get(key) {
            // Another caller added it meanwhile: give the slot back.
            self.inner.len.fetch_sub(1, Ordering::AcqRel);
            e.last_used.store(now, Ordering::Relaxed);
            return e.breaker.clone();
        }
        let breaker = self.build(key);
        map.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        drop(map);
        #[cfg(feature = "metrics")]
        crate::metrics::keyed(&self.inner.template.name, self.len(), 0);
        breaker
    }

    fn build(&self, key: &K) -> CircuitBreaker {
        let b = self.inner.template.clone();
        let name = format!("{}[{:?}]", b.name, key);
        b.name(name)
            .build()
            .expect("the template was validated when the keyed breaker was built")
    }

    /// Takes one of the `cap` slots, evicting to make room.
    fn reserve(&self, now: u64) -> bool {
        for _ in 0..16 {
            let len = self.inner.len.load(Ordering::Acquire);
            if len < self.inner.cap {
                if self
                    .inner
                    .len
                    .compare_exchange(len, len + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if self.evict_idle_at(now) == 0 {
                self.evict_one();
            }
        }
        false
    }

    fn maybe_sweep(&self, now: u64) {
        let last = self.inner.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.inner.idle
            && self
                .inner
                .last_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.evict_idle_at(now);
        }
    }

    /// Evicts every key unused for the idle timeout, except those whose
    /// breaker is open within its open duration, half-open with probes in
    /// flight, or forced open; returns how many.
    pub fn evict_idle(&self) -> usize {
        self.evict_idle_at(self.now())
    }

    fn evict_idle_at(&self, now: u64) -> usize {
        let idle = self.inner.idle;
        let mut n = 0;
        for shard in self.inner.shards.iter() {
            let mut map = write(shard);
            let before = map.len();
            // The state is read only for idle keys.
            map.retain(|_, e| {
                now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle
                    || e.breaker.worth() == Worth::Guarding
            });
            n += before - map.len();
        }
        if n > 0 {
            self.inner.len.fetch_sub(n, Ordering::AcqRel);
            self.inner
                .evicted_idle
                .fetch_add(n as u64, Ordering::Relaxed);
            tracing::debug!(evicted = n, "evicted idle keys");
            #[cfg(feature = "metrics")]
            crate::metrics::keyed(&self.inner.template.name, self.len(), n as u64);
        }
        n
    }

    /// Evicts one key to make room: the one whose breaker loses least
    /// ([`Worth`]), the least recently used among those. One scan of every
    /// key, like the least-recently-used choice it replaces.
    fn evict_one(&self) {
        let mut victim: Option<(Worth, u64, usize, K)> = None;
        for (i, shard) in self.inner.shards.iter().enumerate() {
            for (k, e) in read(shard).iter() {
                let t = e.last_used.load(Ordering::Relaxed);
                let worth = e.breaker.worth();
                if victim
                    .as_ref()
                    .is_none_or(|(w, o, _, _)| (worth, t) < (*w, *o))
                {
                    victim = Some((worth, t, i, k.clone()));
                }
            }
        }
        let Some((worth, _, i, k)) = victim else {
            return;
        };
        let mut map = write(&self.inner.shards[i]);
        let Some(e) = map.get(&k) else {
            return;
        };
        // It may have tripped since the scan: then leave it, and let the
        // caller look again.
        let state = e.breaker.state();
        if e.breaker.worth() > worth {
            return;
        }
        map.remove(&k);
        drop(map);
        self.inner.len.fetch_sub(1, Ordering::AcqRel);
        self.inner.evicted_lru.fetch_add(1, Ordering::Relaxed);
        if worth == Worth::Healthy {
            tracing::debug!(key = ?k, "evicted least recently used key");
        } else {
            self.inner.evicted_open.fetch_add(1, Ordering::Relaxed);
            const EVICTED: &str = "every key held is open, half-open or forced open; evicted the least recently used, its next lookup starts closed (raise max_keys)";
            let (state, cap) = (state.as_str(), self.inner.cap);
            match self.inner.log_evicted_open.admit() {
                Some(more) => {
                    tracing::warn!(key = ?k, state, max_keys = cap, more_since_last_line = more, "{EVICTED}")
                }
                None => tracing::debug!(key = ?k, state, max_keys = cap, "{EVICTED}"),
            }
            #[cfg(feature = "metrics")]
            crate::metrics::keyed_evicted_open(&self.inner.template.name);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::keyed(&self.inner.template.name, self.len(), 1);
    }

    /// Runs `fut` through `key`'s breaker ([`DefaultClassifier`]).
    pub async fn call<F, T, E>(&self, key: &K, fut: F) -> Result<T, CallError<E>>
    where
        F: IntoFuture<Output = Result<T, E>>,
    {
        self.get(key).call_with(&DefaultClassifier, fut).await
    }

    /// Runs `fut` through `key`'s breaker, classified by `classify`.
    pub async fn call_with<C, F, T, E>(
        &self,
        key: &K,
        classify: &C,
        fut: F,
    ) -> Result<T, CallError<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: IntoFuture<Output = Result<T, E>>,
    {
        self.get(key).call_with(classify, fut).await
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Acquire)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot.
    pub fn stats(&self) -> KeyedStats {
        let i = &self.inner;
        KeyedStats {
            keys: self.len(),
            max_keys: i.cap,
            evicted_idle: i.evicted_idle.load(Ordering::Relaxed),
            evicted_lru: i.evicted_lru.load(Ordering::Relaxed),
            evicted_open: i.evicted_open.load(Ordering::Relaxed),
            overflow: i.overflow.load(Ordering::Relaxed),
        }
    }
}

impl<K> fmt::Debug for KeyedBreaker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("keys", &self.inner.len.load(Ordering::Relaxed))
            .field("max_keys", &self.inner.cap)
            .field("template", &self.inner.template)
            .finish()
    }
}

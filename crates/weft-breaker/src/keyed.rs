//! One breaker per key (host, tenant, route), with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::future::IntoFuture;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;
use weft_core::{Classify, DefaultClassifier};

use crate::breaker::{BuildError, Builder, CallError, CircuitBreaker};

const SHARDS: usize = 16;

/// A map from key to [`CircuitBreaker`], built on demand from one template,
/// with a cap on keys and idle keys evicted.
///
/// Lookups take a read lock on one of 16 shards; a new key takes that
/// shard's write lock once. When the map is full, idle keys are evicted
/// first, then the least recently used key. Idle keys are also swept at
/// most once per idle timeout, when a key is added, or by calling
/// [`evict_idle`](Self::evict_idle) (for example from a periodic task).
/// A caller still holding an evicted key's breaker keeps a working breaker;
/// the next lookup of that key starts a fresh one.
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
    overflow: AtomicU64,
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
    /// Keys evicted, least recently used first, to make room.
    pub evicted_lru: u64,
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
                overflow: AtomicU64::new(0),
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
            tracing::warn!(key = ?key, "keyed breaker full; using a breaker that is not kept");
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
                self.evict_lru();
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

    /// Evicts every key unused for the idle timeout; returns how many.
    pub fn evict_idle(&self) -> usize {
        self.evict_idle_at(self.now())
    }

    fn evict_idle_at(&self, now: u64) -> usize {
        let idle = self.inner.idle;
        let mut n = 0;
        for shard in self.inner.shards.iter() {
            let mut map = write(shard);
            let before = map.len();
            map.retain(|_, e| now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle);
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

    fn evict_lru(&self) {
        let mut oldest: Option<(usize, K, u64)> = None;
        for (i, shard) in self.inner.shards.iter().enumerate() {
            for (k, e) in read(shard).iter() {
                let t = e.last_used.load(Ordering::Relaxed);
                if oldest.as_ref().is_none_or(|(_, _, o)| t < *o) {
                    oldest = Some((i, k.clone(), t));
                }
            }
        }
        if let Some((i, k, _)) = oldest {
            if write(&self.inner.shards[i]).remove(&k).is_some() {
                self.inner.len.fetch_sub(1, Ordering::AcqRel);
                self.inner.evicted_lru.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key = ?k, "evicted least recently used key");
                #[cfg(feature = "metrics")]
                crate::metrics::keyed(&self.inner.template.name, self.len(), 1);
            }
        }
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

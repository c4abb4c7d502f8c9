//! A mutex across processes, with a fencing token.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{CoordError, Holder};
use crate::queue::{self, Entry};
use crate::session::{Hold, Kind, Session, SessionInner};

/// A fencing token: the creation revision of the key that won the lock.
///
/// etcd revisions only grow, so every later holder of the same lock gets a
/// larger token. Pass it with every write to the protected resource and let
/// the resource refuse tokens smaller than the largest it has seen
/// ([`FenceGate`] does exactly that): a holder that was paused (GC, swap,
/// network) past its lease cannot overwrite the work of the holder that came
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub i64);

impl Fence {
    /// The token as a number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The resource side of fencing: remembers the largest token seen and
/// refuses older ones. Keep one per protected resource (in the resource's
/// own store when the resource is remote; this one lives in memory).
///
/// ```
/// use weft_coord::{Fence, FenceGate};
///
/// let gate = FenceGate::new();
/// assert!(gate.check(Fence(10)).is_ok());
/// assert!(gate.check(Fence(12)).is_ok());
/// // A stale holder, paused past its lease, comes back with token 10:
/// assert_eq!(gate.check(Fence(10)).unwrap_err().newest, Fence(12));
/// ```
#[derive(Debug, Default)]
pub struct FenceGate {
    newest: AtomicI64,
}

/// A write refused by a [`FenceGate`] because a newer holder has written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stale fencing token {presented}: a holder with token {newest} has written since; stop, the lock is no longer yours"
)]
pub struct StaleFence {
    /// The token that was presented.
    pub presented: Fence,
    /// The newest token seen.
    pub newest: Fence,
}

impl FenceGate {
    /// A gate that has seen no token.
    pub fn new() -> Self {
        FenceGate {
            newest: AtomicI64::new(i64::MIN),
        }
    }

    /// Accepts `fence` if it is at least the newest seen (the same holder
    /// may write many times), and remembers it.
    pub fn check(&self, fence: Fence) -> Result<(), StaleFence> {
        let prev = self.newest.fetch_max(fence.0, Ordering::AcqRel);
        if fence.0 >= prev {
            Ok(())
        } else {
            Err(StaleFence {
                presented: fence,
                newest: Fence(prev),
            })
        }
    }

    /// The newest token accepted.
    pub fn newest(&self) -> Option<Fence> {
        match self.newest.load(Ordering::Acquire) {
            i64::MIN => None,
            n => Some(Fence(n)),
        }
    }
}

/// A mutex shared by every process that uses the same name (and
/// namespace), held under a [`Session`]. Any string is a name: `jobs/eu` is
/// a lock of its own, unrelated to `jobs` (see
/// [`CoordBuilder::namespace`](crate::CoordBuilder::namespace) for the key
/// layout).
///
/// The classic etcd recipe: each `lock` call writes its own key under the
/// lock's prefix, attached to the session's lease; the key with the lowest
/// creation revision holds the lock; every other waiter watches only the key
/// just ahead of it and re-checks when that key is deleted. Fair (first come,
/// first served by revision), no herd, no polling, and a dead holder's key
/// disappears with its lease.
///
/// Not re-entrant: a second `lock` from the same session waits like anyone
/// else (each call gets its own key), so two tasks of one process exclude
/// each other too.
///
/// ```no_run
/// # async fn demo(session: weft_coord::Session) -> Result<(), weft_coord::CoordError> {
/// let mutex = session.mutex("billing-run");
/// let guard = mutex.lock().await?;
/// // Pass guard.fence() to every write the lock protects.
/// println!("holding with fence {}", guard.fence());
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    session: Arc<SessionInner>,
    name: String,
    prefix: String,
}

impl fmt::Debug for Mutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Mutex {
    /// The mutex `name` under `session`.
    pub fn new(session: &Session, name: &str) -> Self {
        Mutex {
            prefix: session.inner.coord.key("mutex", name),
            session: session.inner.clone(),
            name: name.to_owned(),
        }
    }

    /// The mutex's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the lock. Dropping the future cancels the wait and removes
    /// this waiter's key in the background. Fails with
    /// [`CoordError::SessionLost`] if the session ends while waiting, and
    /// [`CoordError::Closed`] if it is being closed.
    pub async fn lock(&self) -> Result<MutexGuard, CoordError> {
        self.acquire(None).await
    }

    /// Waits for the lock until `cancel` is cancelled
    /// ([`CoordError::Cancelled`]).
    pub async fn lock_with_cancel(
        &self,
        cancel: &CancellationToken,
    ) -> Result<MutexGuard, CoordError> {
        self.acquire(Some(cancel)).await
    }

    /// Waits for the lock at most `timeout` ([`CoordError::Timeout`]).
    pub async fn lock_with_timeout(&self, timeout: Duration) -> Result<MutexGuard, CoordError> {
        match tokio::time::timeout(timeout, self.acquire(None)).await {
            Ok(r) => r,
            Err(_) => Err(CoordError::Timeout {
                op: "lock",
                after: timeout,
            }),
        }
    }

    /// Takes the lock if it is free, or fails at once with
    /// [`CoordError::WouldBlock`] naming the holder.
    pub async fn try_lock(&self) -> Result<MutexGuard, CoordError> {
        let (entry, admitted) =
            queue::enqueue(&self.session, &self.prefix, &self.session.owner, 1).await?;
        if admitted {
            return Ok(self.guard(entry, Instant::now()));
        }
        entry.remove().await?;
        let holder = self.holder().await.unwrap_or(None);
        Err(CoordError::WouldBlock { holder })
    }

    /// Who holds the lock now (the first key in line), if anyone.
    pub async fn holder(&self) -> Result<Option<Holder>, CoordError> {
        Ok(queue::holders(&self.session.coord, &self.prefix, 1)
            .await?
            .into_iter()
            .next())
    }

    async fn acquire(&self, cancel: Option<&CancellationToken>) -> Result<MutexGuard, CoordError> {
        let start = Instant::now();
        let entry =
            queue::acquire(&self.session, &self.prefix, &self.session.owner, 1, cancel).await?;
        Ok(self.guard(entry, start))
    }

    fn guard(&self, entry: Entry, _start: Instant) -> MutexGuard {
        let (key, rev) = entry.disarm();
        tracing::debug!(lock = %self.name, %key, fence = rev, "lock acquired");
        #[cfg(feature = "metrics")]
        metrics::histogram!("weft_coord_acquire_wait_seconds", "name" => self.session.owner.clone(), "kind" => "mutex")
            .record(_start.elapsed().as_secs_f64());
        MutexGuard {
            lost: self.session.lost.child_token(),
            hold: Hold::new(self.session.clone(), Kind::Mutex, key, rev),
            fence: Fence(rev),
            name: self.name.clone(),
        }
    }
}

/// A held [`Mutex`]. Released by [`unlock`](MutexGuard::unlock) or, when
/// dropped, in the background; released by etcd if the session is lost.
pub struct MutexGuard {
    hold: Hold,
    fence: Fence,
    lost: CancellationToken,
    name: String,
}

impl fmt::Debug for MutexGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("name", &self.name)
            .field("key", &self.hold.key)
            .field("fence", &self.fence)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl MutexGuard {
    /// The fencing token of this acquisition.
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// The etcd key that holds the lock.
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// A token cancelled the moment the session (and so the lock) is lost:
    /// `select!` on it to stop the protected work.
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lock is still held (the session is alive).
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Releases the lock now. Fails with [`CoordError::SessionLost`] if the
    /// lock had already been lost with the session: the protected work may
    /// have overlapped the next holder's. If etcd does not take the delete
    /// (unreachable, timeout), returns that error and keeps deleting the key
    /// in the background until etcd does, or the session ends: the lock is
    /// never left held by nobody while the session lives.
    pub async fn unlock(mut self) -> Result<(), CoordError> {
        let r = self.hold.release().await;
        tracing::debug!(lock = %self.name, key = %self.hold.key, ok = r.is_ok(), "unlocked");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The gate accepts exactly the tokens that are >= every token
        /// accepted before them.
        #[test]
        fn gate_refuses_exactly_the_stale(tokens in proptest::collection::vec(0i64..50, 0..60)) {
            let gate = FenceGate::new();
            let mut max = i64::MIN;
            for t in tokens {
                let r = gate.check(Fence(t));
                prop_assert_eq!(r.is_ok(), t >= max);
                max = max.max(t);
                prop_assert_eq!(gate.newest(), Some(Fence(max)));
            }
        }
    }
}

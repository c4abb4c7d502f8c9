//! A counting semaphore across processes, fair in arrival order.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{CoordError, Holder};
use crate::mutex::Fence;
use crate::queue::{self, Entry};
use crate::session::{Hold, Kind, Session, SessionInner};

/// A semaphore with `permits` permits, shared by every process that uses the
/// same name, held under a [`Session`]. Any string is a name: `pool/eu` is a
/// semaphore of its own, unrelated to `pool`.
///
/// Each `acquire` writes one key attached to the session's lease; the first
/// `permits` keys by creation revision hold the permits, the rest wait in
/// that order. A waiter is admitted exactly when fewer than `permits` keys
/// were created before its own; nobody writes, counts, deletes and retries,
/// so there is no livelock, and nobody is overtaken. A holder whose session
/// dies loses its key with the lease, and the next waiter moves up.
///
/// The number of permits is not stored in etcd: every process must use the
/// same number for a name.
///
/// ```no_run
/// # async fn demo(session: weft_coord::Session) -> Result<(), weft_coord::CoordError> {
/// let sem = session.semaphore("nightly-exports", 3)?;
/// let permit = sem.acquire().await?;
/// // at most three processes run this at once
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    session: Arc<SessionInner>,
    name: String,
    prefix: String,
    permits: usize,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.name)
            .field("permits", &self.permits)
            .finish()
    }
}

impl Semaphore {
    /// The semaphore `name` with `permits` permits. Refuses zero.
    pub fn new(session: &Session, name: &str, permits: usize) -> Result<Self, CoordError> {
        if permits == 0 {
            return Err(CoordError::InvalidArgument(
                "a semaphore with 0 permits never admits anyone; pass at least 1".into(),
            ));
        }
        Ok(Semaphore {
            prefix: session.inner.coord.key("semaphore", name),
            session: session.inner.clone(),
            name: name.to_owned(),
            permits,
        })
    }

    /// The number of permits.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Waits for a permit. Dropping the future cancels the wait (the
    /// waiter's key is removed in the background).
    pub async fn acquire(&self) -> Result<SemaphorePermit, CoordError> {
        self.acquire_inner(None).await
    }

    /// Waits for a permit until `cancel` is cancelled
    /// ([`CoordError::Cancelled`]).
    pub async fn acquire_with_cancel(
        &self,
        cancel: &CancellationToken,
    ) -> Result<SemaphorePermit, CoordError> {
        self.acquire_inner(Some(cancel)).await
    }

    /// Waits for a permit at most `timeout` ([`CoordError::Timeout`]).
    pub async fn acquire_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<SemaphorePermit, CoordError> {
        match tokio::time::timeout(timeout, self.acquire_inner(None)).await {
            Ok(r) => r,
            Err(_) => Err(CoordError::Timeout {
                op: "acquire",
                after: timeout,
            }),
        }
    }

    /// Takes a permit if one is free (and nobody is waiting ahead), or
    /// fails at once with [`CoordError::WouldBlock`].
    pub async fn try_acquire(&self) -> Result<SemaphorePermit, CoordError> {
        let (entry, admitted) = queue::enqueue(
            &self.session,
            &self.prefix,
            &self.session.owner,
            self.permits,
        )
        .await?;
        if admitted {
            return Ok(self.permit(entry, Instant::now()));
        }
        entry.remove().await?;
        Err(CoordError::WouldBlock { holder: None })
    }

    /// Who holds the permits now, oldest first.
    pub async fn holders(&self) -> Result<Vec<Holder>, CoordError> {
        queue::holders(&self.session.coord, &self.prefix, self.permits).await
    }

    async fn acquire_inner(
        &self,
        cancel: Option<&CancellationToken>,
    ) -> Result<SemaphorePermit, CoordError> {
        let start = Instant::now();
        let entry = queue::acquire(
            &self.session,
            &self.prefix,
            &self.session.owner,
            self.permits,
            cancel,
        )
        .await?;
        Ok(self.permit(entry, start))
    }

    fn permit(&self, entry: Entry, _start: Instant) -> SemaphorePermit {
        let (key, rev) = entry.disarm();
        tracing::debug!(semaphore = %self.name, %key, "permit acquired");
        #[cfg(feature = "metrics")]
        metrics::histogram!("weft_coord_acquire_wait_seconds", "name" => self.session.owner.clone(), "kind" => "permit")
            .record(_start.elapsed().as_secs_f64());
        SemaphorePermit {
            lost: self.session.lost.child_token(),
            hold: Hold::new(self.session.clone(), Kind::Permit, key, rev),
            fence: Fence(rev),
        }
    }
}

/// A held permit of a [`Semaphore`]. Released by
/// [`release`](SemaphorePermit::release) or, when dropped, in the
/// background; released by etcd if the session is lost.
pub struct SemaphorePermit {
    hold: Hold,
    fence: Fence,
    lost: CancellationToken,
}

impl fmt::Debug for SemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("key", &self.hold.key)
            .field("fence", &self.fence)
            .finish()
    }
}

impl SemaphorePermit {
    /// The permit key's creation revision (its place in line).
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// The etcd key that holds the permit.
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// A token cancelled the moment the session (and so the permit) is lost.
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the permit is still held.
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Releases the permit now. Fails with [`CoordError::SessionLost`] if
    /// the permit had already been lost with the session. If etcd does not
    /// take the delete, returns that error and keeps deleting the key in
    /// the background until etcd does, or the session ends.
    pub async fn release(mut self) -> Result<(), CoordError> {
        self.hold.release().await
    }
}

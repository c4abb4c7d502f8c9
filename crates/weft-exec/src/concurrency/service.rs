use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::future::ResponseFuture;

/// At most `max` requests in flight; `poll_ready` waits for a slot.
///
/// The slot is reserved in `poll_ready` and released when the response is
/// ready, when the response future is dropped, or when the service (or a
/// clone holding a reservation) is dropped without `call`. Clones share the
/// limit and start without a reservation.
///
/// ```
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_exec::ConcurrencyLimit;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x * 2) });
/// let mut limited = ConcurrencyLimit::new(svc, 2);
/// let mut clone = limited.clone();
/// let r = limited.ready().await.unwrap().call(21).await.unwrap();
/// assert_eq!(r, 42);
/// clone.ready().await.unwrap(); // holds one of the 2 shared slots
/// assert_eq!(limited.stats().in_flight, 1);
/// # }
/// ```
#[derive(Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    max: usize,
    sem: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

/// A snapshot of a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyStats {
    /// The limit.
    pub max: usize,
    /// Slots reserved or in use right now.
    pub in_flight: usize,
}

/// Refuses a limit of 0, which would never be ready.
#[track_caller]
pub(super) fn check_max(max: usize) -> usize {
    assert!(
        max > 0,
        "ConcurrencyLimit max must be at least 1 (got 0): pass how many requests may be in flight at once"
    );
    max
}

impl<S> ConcurrencyLimit<S> {
    /// A limit of `max` in flight, shared by this service's clones.
    ///
    /// # Panics
    ///
    /// If `max` is 0 (a limit that would never be ready), as tokio's
    /// `mpsc::channel(0)` does; pass how many requests may be in flight at
    /// once. Also if `max` is above tokio's `Semaphore::MAX_PERMITS`.
    #[track_caller]
    pub fn new(inner: S, max: usize) -> Self {
        Self::with_semaphore(inner, max, Arc::new(Semaphore::new(check_max(max))))
    }

    pub(crate) fn with_semaphore(inner: S, max: usize, sem: Arc<Semaphore>) -> Self {
        ConcurrencyLimit {
            inner,
            max,
            sem: PollSemaphore::new(sem),
            permit: None,
        }
    }

    /// The limit and how much of it is in use.
    pub fn stats(&self) -> ConcurrencyStats {
        ConcurrencyStats {
            max: self.max,
            in_flight: self.max.saturating_sub(self.sem.available_permits()),
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

    /// Consumes the limit, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            self.permit = ready!(self.sem.poll_acquire(cx));
            debug_assert!(
                self.permit.is_some(),
                "the limit's semaphore is never closed"
            );
        }
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let permit = self.permit.take().expect(
            "ConcurrencyLimit::call without a reserved slot: call poll_ready (or ready()) first",
        );
        ResponseFuture::new(self.inner.call(req), permit)
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        ConcurrencyLimit {
            inner: self.inner.clone(),
            max: self.max,
            sem: self.sem.clone(),
            permit: None,
        }
    }
}

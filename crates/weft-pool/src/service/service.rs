use std::task::{Context, Poll};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::PollSemaphore;
use tower_service::Service;
use weft_core::BoxError;

use super::future::ResponseFuture;
use super::{Closed, Full};
use crate::{SubmitError, WorkerPool};

/// Runs each call of the inner service `S` as a job on a [`WorkerPool`].
///
/// `poll_ready` reserves a slot in the pool's queue (so it returns `Pending`
/// while the queue is full: backpressure reaches the caller) and `call` uses
/// the reservation; a reserved slot is released if the service is dropped
/// without calling, and when the job leaves the queue. The reservations
/// belong to the pool: every `Pool` over one [`WorkerPool`] (clones, other
/// `Pool::new`s, every service a [`PoolLayer`](super::PoolLayer) builds)
/// shares them, so together they never reserve more than the queue holds.
/// A clone starts without a reservation. On the worker the inner service (a
/// clone of it per call) is driven to readiness and called; `Err` responses
/// count as failed jobs in the pool's stats.
///
/// # Errors
///
/// Besides the inner service's errors (passed through, boxed), found with
/// `downcast_ref`: [`Closed`] when the pool is shut down (from `poll_ready`,
/// or from `call` if it closed in between), [`Full`] when something other
/// than its services filled the pool's queue (dedicate the pool to avoid
/// it), and [`JobError`](crate::JobError) when the job panicked, timed out
/// or was cancelled by the shutdown. (Under
/// [`PanicPolicy::Propagate`](weft_core::PanicPolicy::Propagate), see
/// [`Builder::panic_policy`](crate::Builder::panic_policy), a panicked
/// job's response future panics again instead.)
///
/// ```
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_pool::{WorkerPool, service::PoolLayer};
/// use tower_layer::Layer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = WorkerPool::builder().workers(2).queue_capacity(8).build().unwrap();
/// let svc = PoolLayer::new(pool.clone()).layer(service_fn(|x: u32| async move {
///     Ok::<_, std::convert::Infallible>(x * 2)
/// }));
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42);
/// assert_eq!(pool.stats().succeeded, 1);
/// # }
/// ```
pub struct Pool<S> {
    inner: S,
    pool: WorkerPool,
    slots: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

impl<S> Pool<S> {
    /// A service running `inner` on `pool` (which should be dedicated to its
    /// services). It takes its reservations from the pool's, shared with
    /// every other service over the pool.
    pub fn new(inner: S, pool: WorkerPool) -> Self {
        let slots = PollSemaphore::new(pool.service_slots());
        Pool {
            inner,
            pool,
            slots,
            permit: None,
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

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The pool the calls run on.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }
}

impl<S: Clone> Clone for Pool<S> {
    fn clone(&self) -> Self {
        // A clone starts without a reservation.
        Pool {
            inner: self.inner.clone(),
            pool: self.pool.clone(),
            slots: self.slots.clone(),
            permit: None,
        }
    }
}

impl<S> std::fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("pool", &self.pool)
            .field("reserved", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Pool<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.pool.is_closed() {
            self.permit = None;
            return Poll::Ready(Err(Box::new(Closed::new())));
        }
        if self.permit.is_none() {
            match self.slots.poll_acquire(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Err(Box::new(Closed::new()))),
                Poll::Ready(Some(p)) => self.permit = Some(p),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = self.permit.take().expect(
            "Pool::call without a reservation: call poll_ready first and wait for Ready(Ok)",
        );
        let mut svc = self.inner.clone();
        let job = async move {
            // The job has left the queue: its slot is free again.
            drop(permit);
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
            svc.call(req).await
        };
        match self.pool.try_submit_judged(job) {
            Ok(h) => ResponseFuture::running(h),
            Err(SubmitError::Closed(_)) => ResponseFuture::failed(Box::new(Closed::new())),
            // Full, or shed by the pool's overflow policy: the queue was
            // filled by someone without a reservation.
            Err(_) => ResponseFuture::failed(Box::new(Full::new())),
        }
    }
}

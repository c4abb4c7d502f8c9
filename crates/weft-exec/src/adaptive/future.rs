//! The response future of [`AdaptiveLimit`](super::AdaptiveLimit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::time::Instant;

use super::Algorithm;
use super::service::Limiter;

/// Holds the slot while the request runs; feeds the latency and outcome to
/// the algorithm when it completes. Dropped before completion, it frees the
/// slot without a sample (a cancellation is not a drop).
pub(crate) struct InFlight<A: Algorithm> {
    pub(crate) shared: Arc<Limiter<A>>,
    pub(crate) start: Instant,
    pub(crate) in_flight: usize,
}

impl<A: Algorithm> Drop for InFlight<A> {
    fn drop(&mut self) {
        self.shared.release();
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AdaptiveLimit`](super::AdaptiveLimit).
    pub struct ResponseFuture<F, A: Algorithm> {
        #[pin]
        inner: F,
        slot: Option<InFlight<A>>,
    }
}

impl<F, A: Algorithm> ResponseFuture<F, A> {
    pub(crate) fn new(inner: F, slot: InFlight<A>) -> Self {
        ResponseFuture {
            inner,
            slot: Some(slot),
        }
    }
}

impl<F, A: Algorithm> std::fmt::Debug for ResponseFuture<F, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T, E, A> Future for ResponseFuture<F, A>
where
    F: Future<Output = Result<T, E>>,
    A: Algorithm,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Some(slot) = this.slot.take() {
            slot.shared
                .sample(slot.start.elapsed(), slot.in_flight, out.is_err());
        }
        Poll::Ready(out)
    }
}

//! The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::OwnedSemaphorePermit;

pin_project_lite::pin_project! {
    /// Holds the request's permit until the response is ready (or the future
    /// is dropped).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, permit: OwnedSemaphorePermit) -> Self {
        ResponseFuture {
            inner,
            permit: Some(permit),
        }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        // Release as soon as the response is ready, not when the future is
        // finally dropped.
        this.permit.take();
        Poll::Ready(out)
    }
}

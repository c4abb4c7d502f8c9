//! The [`Breaker`](crate::Breaker) service's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use weft_core::{BoxError, Classify};

use super::circuit::OwnedPermit;

pin_project! {
    /// Classifies the inner future's result and reports it to the breaker.
    /// Dropped before it completes, the call counts as cancelled.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        permit: Option<OwnedPermit>,
        classify: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, permit: OwnedPermit, classify: C) -> Self {
        ResponseFuture {
            inner,
            permit: Some(permit),
            classify,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(p) = this.permit.take() {
            p.record(this.classify.classify(&result));
        }
        Poll::Ready(result.map_err(Into::into))
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

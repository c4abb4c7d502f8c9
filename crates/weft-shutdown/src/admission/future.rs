//! The response future of [`Shutdown`](super::Shutdown).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use weft_core::BoxError;

use super::service::Reservation;

pin_project! {
    /// Counts the request's outcome and releases its slot when it finishes
    /// or is dropped.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        reservation: Option<Reservation>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(r) = this.project().reservation.take() {
                r.0.cancelled.incr();
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, reservation: Reservation) -> Self {
        ResponseFuture {
            inner,
            reservation: Some(reservation),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Some(r) = this.reservation.take() {
            match &out {
                Ok(_) => r.0.completed.incr(),
                Err(_) => r.0.failed.incr(),
            }
        }
        Poll::Ready(out.map_err(Into::into))
    }
}

//! Runs a task until it finishes or the executor aborts it, registering for
//! the abort signal only if the task ever waits (most short tasks finish on
//! their first poll and never pay for it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pin_project_lite::pin_project! {
    pub(super) struct Abortable<'a, F> {
        #[pin]
        fut: F,
        token: &'a CancellationToken,
        wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    }
}

impl<'a, F> Abortable<'a, F> {
    pub(super) fn new(fut: F, token: &'a CancellationToken) -> Self {
        Abortable {
            fut,
            token,
            wait: None,
        }
    }
}

impl<F: Future> Future for Abortable<'_, F> {
    /// `None` when aborted.
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.token.is_cancelled() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        let token = this.token;
        let wait = this
            .wait
            .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

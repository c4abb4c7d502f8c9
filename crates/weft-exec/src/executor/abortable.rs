//! Runs a task until it finishes or the executor aborts it, registering for
//! the abort signal only if the task ever waits (most short tasks finish on
//! their first poll and never pay for it).
//!
//! The per-poll check reads an `AtomicBool` set just before the token is
//! cancelled, not `CancellationToken::is_cancelled`, which takes the
//! token's mutex (one mutex shared by every task of the executor).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pin_project_lite::pin_project! {
    pub(super) struct Abortable<'a, F> {
        #[pin]
        fut: F,
        aborting: &'a AtomicBool,
        token: &'a CancellationToken,
        wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    }
}

impl<'a, F> Abortable<'a, F> {
    /// `aborting` must be set before `token` is cancelled.
    pub(super) fn new(fut: F, aborting: &'a AtomicBool, token: &'a CancellationToken) -> Self {
        Abortable {
            fut,
            aborting,
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
        // A task that misses the flag here registers on the token below,
        // and the token's future sees a cancel that happened in between.
        if this.aborting.load(Ordering::Acquire) {
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

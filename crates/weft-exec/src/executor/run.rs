//! The body of a task started without a run timeout, written by hand
//! rather than as an `async fn` around combinators: one small state (the
//! user's future, the permit guard, the span), so tokio's task cell is
//! smaller and cheaper to fill and empty, and one `catch_unwind` per poll
//! instead of a combinator chain.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio_util::sync::WaitForCancellationFutureOwned;
use weft_core::Panicked;

use super::{Ended, RunGuard};
use crate::error::TaskError;

pin_project_lite::pin_project! {
    /// Polls the task's future, contains its panics, and stops it when the
    /// executor aborts. Registers for the abort signal only if the task
    /// ever returns `Pending`. Meant to be a tokio task's whole body: it is
    /// not polled again after it returned `Ready`.
    pub(super) struct Run<F> {
        // Dropped as soon as it is done, inside the panic boundary (a panic
        // in its drop is the task's panic, not a lost output).
        #[pin]
        fut: Option<F>,
        // Dropped with the task (after its output is stored), which gives
        // the permits back, also when the runtime drops the task.
        guard: RunGuard,
        wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        // The task's span (`task{executor, task}`, a child of the span the
        // spawn was called in), entered on every poll.
        span: tracing::Span,
    }
}

impl<F> Run<F> {
    pub(super) fn new(fut: F, guard: RunGuard, span: tracing::Span) -> Self {
        Run {
            fut: Some(fut),
            guard,
            wait: None,
            span,
        }
    }
}

impl<F: Future> Future for Run<F> {
    type Output = Result<F::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let guard = this.guard;
        // `aborting` is set before the token is cancelled; a task that
        // misses it here registers on the token below, which sees the
        // cancel.
        if guard.shared.aborting.load(Ordering::Acquire) {
            return Poll::Ready(guard.end(Ended::Aborted));
        }
        // `weft_core::poll_contained` does the same; written out here
        // because, in this hottest of polls, it compiled to 24 more
        // instructions per task (callgrind, 200,000 spawns).
        let mut fut = this.fut;
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let inner = fut
                .as_mut()
                .as_pin_mut()
                .expect("a task is not polled after it returned");
            match inner.poll(cx) {
                Poll::Ready(v) => {
                    fut.set(None);
                    Poll::Ready(v)
                }
                Poll::Pending => Poll::Pending,
            }
        }));
        match polled {
            Ok(Poll::Ready(v)) => {
                guard.completed();
                return Poll::Ready(Ok(v));
            }
            Ok(Poll::Pending) => {}
            Err(payload) => {
                // Panicked in its poll or in its drop: drop what is left
                // inside a boundary too, then report the panic.
                if fut.is_some() {
                    let _ = catch_unwind(AssertUnwindSafe(|| fut.set(None)));
                }
                let p = Panicked::from_payload(payload.as_ref());
                return Poll::Ready(guard.end(Ended::Done(Err(p))));
            }
        }
        let wait = this
            .wait
            .get_or_insert_with(|| Box::pin(guard.shared.abort.clone().cancelled_owned()));
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(guard.end(Ended::Aborted)),
            Poll::Pending => Poll::Pending,
        }
    }
}

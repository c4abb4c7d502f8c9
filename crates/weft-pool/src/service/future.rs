//! The response future of [`Pool`](super::Pool).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use weft_core::BoxError;

use crate::JobHandle;

/// Resolves to the inner service's response once a worker has run the call.
/// The inner service's error passes through (boxed); weft's own errors are
/// [`Closed`](super::Closed), [`Full`](super::Full) and
/// [`JobError`](crate::JobError) (panicked, timed out, cancelled by
/// shutdown), found with `downcast_ref`. Under
/// [`PanicPolicy::Propagate`](weft_core::PanicPolicy::Propagate) a panicked
/// job makes this future panic again with its message.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<T, E> {
    state: State<T, E>,
}

enum State<T, E> {
    Running(JobHandle<Result<T, E>>),
    Failed(Option<BoxError>),
}

impl<T, E> ResponseFuture<T, E> {
    pub(crate) fn running(h: JobHandle<Result<T, E>>) -> Self {
        ResponseFuture {
            state: State::Running(h),
        }
    }

    pub(crate) fn failed(e: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed(Some(e)),
        }
    }
}

impl<T, E> Future for ResponseFuture<T, E>
where
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Running(h) => Poll::Ready(match ready!(Pin::new(h).poll(cx)) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.into()),
                Err(job) => Err(Box::new(job)),
            }),
            State::Failed(e) => Poll::Ready(Err(e
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<T, E> std::fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

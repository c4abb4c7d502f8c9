//! The handle to a spawned task's result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::TaskError;

/// Resolves to the output of a task spawned on a
/// [`BoundedExecutor`](crate::BoundedExecutor), or to the [`TaskError`] that
/// says why there is none.
///
/// Dropping the handle does not cancel the task (as with tokio's
/// `JoinHandle`); the task still runs and is counted. Under
/// [`PanicPolicy::Propagate`](weft_core::PanicPolicy::Propagate), awaiting
/// the handle of a task that panicked panics with the task's message.
pub struct TaskHandle<T> {
    inner: Inner<T>,
    id: u64,
}

/// Each variant's `bool` is `PanicPolicy::Propagate` (a panicked task's
/// handle panics again); kept in the variants, where it fits beside the
/// tag, so the handle stays three words.
enum Inner<T> {
    /// Started at once: the tokio task's own handle.
    Direct(JoinHandle<Result<T, TaskError>>, bool),
    /// Queued: the dispatcher sends the result when the task ends.
    Queued(oneshot::Receiver<Result<T, TaskError>>, bool),
}

impl<T> TaskHandle<T> {
    pub(crate) fn direct(id: u64, h: JoinHandle<Result<T, TaskError>>, propagate: bool) -> Self {
        TaskHandle {
            inner: Inner::Direct(h, propagate),
            id,
        }
    }

    pub(crate) fn queued(
        id: u64,
        rx: oneshot::Receiver<Result<T, TaskError>>,
        propagate: bool,
    ) -> Self {
        TaskHandle {
            inner: Inner::Queued(rx, propagate),
            id,
        }
    }

    /// The task's id, unique within its executor (as in the shutdown
    /// report's `unfinished` list: `task #ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the task started at once (`true`) or waited in the queue.
    pub fn started_at_once(&self) -> bool {
        matches!(self.inner, Inner::Direct(..))
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Poll::Ready(match &mut this.inner {
            Inner::Direct(h, propagate) => match ready!(Pin::new(h).poll(cx)) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(failed(e, *propagate)),
                // Only a runtime shutting down cancels the tokio task itself.
                Err(_) => Err(TaskError::Aborted),
            },
            Inner::Queued(rx, propagate) => match ready!(Pin::new(rx).poll(cx)) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(failed(e, *propagate)),
                Err(_) => Err(TaskError::Aborted),
            },
        })
    }
}

/// A task's error on its way out of the handle: under
/// `PanicPolicy::Propagate` a panic is raised again here (it was counted
/// and logged where it happened). Out of line: the success path stays as
/// small as it was.
#[cold]
#[inline(never)]
fn failed(e: TaskError, propagate: bool) -> TaskError {
    if let (true, TaskError::Panicked(p)) = (propagate, &e) {
        std::panic::resume_unwind(Box::new(p.message().to_owned()));
    }
    e
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("started_at_once", &self.started_at_once())
            .finish()
    }
}

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

/// The work a caller was waiting on panicked.
///
/// weft catches panics at every task boundary (a pool job, an executor task, a
/// pipeline stage, an actor handler) and turns them into this error for
/// whoever awaits the result, with the panic message when it was a string.
/// The panic is also counted and logged by the component.
///
/// ```
/// use weft_core::Panicked;
///
/// let payload = std::panic::catch_unwind(|| panic!("bad row {}", 7)).unwrap_err();
/// let err = Panicked::from_payload(payload.as_ref());
/// assert_eq!(err.message(), "bad row 7");
/// assert_eq!(err.to_string(), "task panicked: bad row 7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task panicked: {message}")]
pub struct Panicked {
    message: String,
}

impl Panicked {
    /// A `Panicked` error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Panicked {
            message: message.into(),
        }
    }

    /// Builds the error from a panic payload, as returned by
    /// [`std::panic::catch_unwind`] or [`tokio::task::JoinError::into_panic`].
    ///
    /// `&str` and `String` payloads (what `panic!` produces) become the
    /// message; any other payload gives a generic message.
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic payload was not a string".to_owned()
        };
        Panicked { message }
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a component does when user code panics at one of its task
/// boundaries (DESIGN.md, contract 3). In every case the panic is caught,
/// counted and logged with `tracing::error!` first.
///
/// Taken by the components whose work has a handle someone awaits:
/// weft-exec's `BoundedExecutor` and weft-pool's pools
/// (`Builder::panic_policy` in each).
///
/// ```
/// use weft_core::PanicPolicy;
///
/// assert_eq!(PanicPolicy::default(), PanicPolicy::Report);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PanicPolicy {
    /// Turn it into a [`Panicked`] error for whoever awaits the result; the
    /// component carries on. The default.
    #[default]
    Report,
    /// Panic again where the result is awaited, with the same message, as
    /// `tokio::task::JoinHandle` + `std::panic::resume_unwind` would: for
    /// callers whose own panic handling (a supervisor, a test) must see it.
    /// A result nobody awaits is reported as with `Report`.
    Propagate,
    /// Abort the process (`std::process::abort`) after logging: for
    /// services that treat any panic as fatal (as `panic = "abort"` would,
    /// but only for this component's work).
    Abort,
}

/// Runs a future, turning a panic inside it into [`Panicked`].
///
/// This is the task boundary every weft component puts around user code. The
/// future is polled as it is (`AssertUnwindSafe`): after a panic it is dropped
/// and never polled again, so no broken state is observed through it.
///
/// The future is dropped inside the boundary too: as soon as it finishes or
/// panics, and when the boundary itself is dropped early (a cancelled
/// task). A panic in that drop does not escape into whoever drops the
/// boundary (a worker, a shutdown). When the future had finished, it is
/// reported like any other panic, as `Err(Panicked)` (the output is dropped
/// with it): the user's code panicked at this boundary. When the boundary
/// is dropped early there is nobody to report it to, so it is ignored
/// after the panic hook has printed it.
///
/// ```
/// use weft_core::catch_unwind;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(catch_unwind(async { 1 + 1 }).await, Ok(2));
/// let err = catch_unwind(async { panic!("oops") }).await.unwrap_err();
/// assert_eq!(err.message(), "oops");
/// # }
/// ```
pub fn catch_unwind<F: Future>(fut: F) -> impl Future<Output = Result<F::Output, Panicked>> {
    CatchUnwind { fut: Some(fut) }
}

pin_project! {
    /// [`catch_unwind`]'s future: one `std::panic::catch_unwind` per poll,
    /// with no adapter layers (it runs around every actor message and
    /// executor task); the inner future is dropped inside the boundary.
    struct CatchUnwind<F> {
        #[pin]
        fut: Option<F>,
    }
    impl<F> PinnedDrop for CatchUnwind<F> {
        fn drop(this: Pin<&mut Self>) {
            drop_contained(this.project().fut);
        }
    }
}

/// Drops the future in `slot` (if still there) inside a panic boundary: a
/// panic in its drop is caught and ignored (the panic hook has printed it).
/// For a future given up before it finished (a cancelled task), whose drop
/// has nobody to report to.
#[inline]
pub fn drop_contained<F>(mut slot: Pin<&mut Option<F>>) {
    if slot.is_some() {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| slot.set(None)));
    }
}

/// Polls the future in `slot` inside a panic boundary and, once it has
/// finished or panicked, drops it inside a boundary too (leaving `None`):
/// the body of [`catch_unwind`], for components that keep their user
/// future in a field of their own. A panic in its poll, or in its drop
/// right after it finished, is `Err(Panicked)` (the output is dropped with
/// it).
///
/// # Panics
/// If `slot` is empty: the future was polled after it completed.
// Always inlined: it is the body of per-call polls (fan-out attempts);
// left to the heuristics it was compiled as a call.
#[inline(always)]
pub fn poll_contained<F: Future>(
    mut slot: Pin<&mut Option<F>>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Panicked>> {
    assert!(
        slot.is_some(),
        "a contained future polled after it completed"
    );
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let inner = slot.as_mut().as_pin_mut().expect("checked above");
        match inner.poll(cx) {
            Poll::Ready(v) => {
                slot.set(None);
                Poll::Ready(v)
            }
            Poll::Pending => Poll::Pending,
        }
    }));
    match polled {
        Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => {
            // It panicked in its poll or its drop: it must not be polled
            // again (nor its drop run twice).
            drop_contained(slot);
            Poll::Ready(Err(Panicked::from_payload(payload.as_ref())))
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Panicked>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        poll_contained(self.project().fut, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_kinds() {
        assert_eq!(Panicked::from_payload(&"static").message(), "static");
        assert_eq!(
            Panicked::from_payload(&String::from("owned")).message(),
            "owned"
        );
        assert_eq!(
            Panicked::from_payload(&42_u32).message(),
            "panic payload was not a string"
        );
    }

    #[tokio::test]
    async fn catch_unwind_passes_values_and_catches_panics() {
        assert_eq!(catch_unwind(async { "ok" }).await, Ok("ok"));
        let err = catch_unwind(async {
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::useless_vec)]
            v[3]
        })
        .await
        .unwrap_err();
        assert!(err.message().contains("index out of bounds"), "{err}");
    }
}

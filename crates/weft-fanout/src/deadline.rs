//! Deadline propagation: a child call gets the smaller of its own timeout and
//! its parent's remaining time.
//!
//! The current deadline lives in a tokio task-local. [`within`] runs a future
//! under `min(now + own, parent)` and fails with [`DeadlineExceeded`] when
//! that passes; everything the future awaits sees the tighter deadline
//! through [`current`] / [`remaining`], so a chain of calls never waits past
//! the outermost caller's budget. [`scatter`](crate::scatter()) in spawned mode
//! carries the deadline into the tasks it spawns; [`DeadlineLayer`] does the
//! same for a tower service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;
use weft_core::BoxError;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The call did not finish before its (possibly inherited) deadline.
///
/// ```
/// use weft_fanout::deadline::DeadlineExceeded;
/// assert_eq!(DeadlineExceeded::new().to_string(), "deadline exceeded");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded {
    _priv: (),
}

impl DeadlineExceeded {
    /// A new `DeadlineExceeded`.
    pub fn new() -> Self {
        DeadlineExceeded { _priv: () }
    }
}

/// `start + d`, capped at about 30 years after `start` (tokio's own "far
/// future") when the sum would overflow the clock.
pub(crate) fn saturating_after(start: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    start.checked_add(d).unwrap_or_else(|| start + FAR)
}

/// The deadline of the current task, if some caller set one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The time left before the current deadline (zero once it has passed), or
/// `None` when no deadline is set.
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// The deadline a child call with timeout `own` gets: the earlier of
/// `now + own` and the current task's deadline. A timeout too large to add
/// to the clock (`Duration::MAX` as "no timeout of my own") is capped at
/// about 30 years from now, as `tokio::time::sleep` does, instead of
/// overflowing.
pub fn effective(own: Duration) -> Instant {
    let mine = saturating_after(Instant::now(), own);
    match current() {
        Some(parent) if parent < mine => parent,
        _ => mine,
    }
}

/// Runs `fut` with timeout `own`, shortened to the parent's remaining time,
/// and makes that deadline the current one while `fut` runs.
///
/// ```
/// use std::time::Duration;
/// use weft_fanout::deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let out = deadline::within(Duration::from_millis(100), async {
///     // The child asks for 1 s but only gets what the parent has left.
///     deadline::within(Duration::from_secs(1), async {
///         assert_eq!(deadline::remaining(), Some(Duration::from_millis(100)));
///         tokio::time::sleep(Duration::from_millis(500)).await;
///     })
///     .await
/// })
/// .await;
/// assert!(matches!(out, Ok(Err(deadline::DeadlineExceeded { .. }))));
/// # }
/// ```
pub async fn within<F: Future>(own: Duration, fut: F) -> Result<F::Output, DeadlineExceeded> {
    at(effective(own), fut).await
}

/// Runs `fut` until the absolute `deadline` (shortened to the parent's
/// deadline if that is earlier), making it the current deadline.
pub async fn at<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, DeadlineExceeded> {
    let deadline = match current() {
        Some(parent) if parent < deadline => parent,
        _ => deadline,
    };
    match tokio::time::timeout_at(deadline, DEADLINE.scope(deadline, fut)).await {
        Ok(out) => Ok(out),
        Err(_) => {
            tracing::debug!("deadline exceeded");
            Err(DeadlineExceeded::new())
        }
    }
}

/// Runs `fut` with the current deadline (if any) as its deadline, without
/// adding a timeout. Used to carry a deadline into a spawned task.
pub(crate) async fn inherit<F: Future>(deadline: Option<Instant>, fut: F) -> F::Output {
    match deadline {
        Some(d) => DEADLINE.scope(d, fut).await,
        None => fut.await,
    }
}

/// A tower layer that gives every call a timeout, shortened to the caller's
/// remaining deadline, and propagates the deadline to what the inner service
/// awaits.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    own: Duration,
}

impl DeadlineLayer {
    /// Each call gets at most `own`, and never more than its caller has left.
    pub fn new(own: Duration) -> Self {
        DeadlineLayer { own }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            own: self.own,
        }
    }
}

/// The service of [`DeadlineLayer`]: calls fail with [`DeadlineExceeded`]
/// (boxed) when the effective deadline passes.
///
/// ```
/// use std::time::Duration;
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_fanout::deadline::{self, DeadlineExceeded, DeadlineLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = service_fn(|()| async {
///     tokio::time::sleep(Duration::from_millis(300)).await;
///     Ok::<_, std::convert::Infallible>("done")
/// });
/// let mut svc = tower::ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_secs(1)))
///     .service(slow);
/// // Own timeout 1 s, but the caller only has 200 ms left.
/// // The deadline is read when `call` is made, so call inside the scope.
/// let out = deadline::within(Duration::from_millis(200), async {
///     svc.ready().await?.call(()).await
/// })
/// .await
/// .unwrap(); // the layer's own error fires first, at 200 ms
/// assert!(out.unwrap_err().downcast_ref::<DeadlineExceeded>().is_some());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    own: Duration,
}

impl<S> Deadline<S> {
    /// Wraps `inner`, giving every call at most `own`.
    pub fn new(inner: S, own: Duration) -> Self {
        Deadline { inner, own }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Deadline<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let deadline = effective(self.own);
        // The inner future is created and polled with the deadline current,
        // so whatever it calls inherits it.
        let inner = DEADLINE.sync_scope(deadline, || self.inner.call(req));
        future::ResponseFuture::new(DEADLINE.scope(deadline, inner), deadline)
    }
}

/// The response future of [`Deadline`].
pub mod future {
    use super::*;

    pin_project! {
        /// Resolves to the inner response, or to [`DeadlineExceeded`] (boxed)
        /// when the deadline passes first.
        pub struct ResponseFuture<F: Future> {
            #[pin]
            inner: tokio::task::futures::TaskLocalFuture<Instant, F>,
            #[pin]
            sleep: Sleep,
        }
    }

    impl<F: Future> ResponseFuture<F> {
        pub(super) fn new(
            inner: tokio::task::futures::TaskLocalFuture<Instant, F>,
            deadline: Instant,
        ) -> Self {
            ResponseFuture {
                inner,
                sleep: tokio::time::sleep_until(deadline),
            }
        }
    }

    impl<F: Future> fmt::Debug for ResponseFuture<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ResponseFuture")
                .field("deadline", &self.sleep.deadline())
                .finish_non_exhaustive()
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
            if let Poll::Ready(out) = this.inner.poll(cx) {
                return Poll::Ready(out.map_err(Into::into));
            }
            ready!(this.sleep.poll(cx));
            tracing::debug!("deadline exceeded");
            Poll::Ready(Err(Box::new(DeadlineExceeded::new())))
        }
    }
}

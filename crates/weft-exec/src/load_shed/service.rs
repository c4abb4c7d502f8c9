use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;
use weft_core::{BoxError, Counter};

use super::future::ResponseFuture;

/// Sheds load: when the inner service is not ready, `poll_ready` still
/// returns ready and the next `call` fails at once with
/// [`Overloaded`](crate::Overloaded) (boxed into a `BoxError`). A shed
/// request is counted ([`stats`](Self::stats)) and logged with
/// `tracing::warn!` (at most one line a second, saying how many more were
/// shed since the last; the others at debug); so is a `call` without a successful `poll_ready`, which
/// is answered `Overloaded` too and never reaches the inner service.
///
/// Dropping a `LoadShed` whose `poll_ready` found the inner service ready
/// drops the inner service with it, and with it any reservation the inner
/// service holds (a [`ConcurrencyLimit`](crate::ConcurrencyLimit)'s slot).
/// A clone starts not ready.
///
/// # The cooperative-budget trap
///
/// tokio gives each task a budget of operations per poll; once it is spent,
/// tokio's own resources (semaphores, channels — what tower's `Buffer` and
/// `ConcurrencyLimit` use in `poll_ready`) report `Pending` even when they
/// have room. tower's `LoadShed` takes that `Pending` for overload and sheds
/// requests that had capacity. This `LoadShed` polls the inner readiness
/// outside the budget (`tokio::task::coop::unconstrained`), so it sheds only
/// when the inner service really is at capacity. The budget is still
/// enforced on the inner *response* futures.
///
/// ```
/// use tower::{Service, ServiceExt, service_fn};
/// use weft_exec::{ConcurrencyLimit, LoadShed, Overloaded};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let slow = service_fn(|_: ()| std::future::pending::<Result<(), std::convert::Infallible>>());
/// let mut svc = LoadShed::new(ConcurrencyLimit::new(slow, 1));
/// let _first = svc.ready().await.unwrap().call(()); // takes the only slot
/// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(err.downcast_ref::<Overloaded>().is_some());
/// assert_eq!(svc.stats().shed, 1);
/// # }
/// ```
pub struct LoadShed<S> {
    inner: S,
    is_ready: bool,
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    name: String,
    shed: Counter,
    m_shed: crate::metrics::Metric,
    /// One `warn!` a second for a flood of shed requests.
    log: crate::throttle::Throttle,
}

impl Shared {
    pub(crate) fn new(name: String) -> Self {
        Shared {
            m_shed: crate::metrics::shed(&name),
            name,
            shed: Counter::new(),
            log: crate::throttle::Throttle::new(),
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("name", &self.name)
            .field("shed", &self.shed.get())
            .finish()
    }
}

/// A snapshot of a [`LoadShed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadShedStats {
    /// Requests failed with `Overloaded`, across clones.
    pub shed: u64,
}

impl<S> LoadShed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self::with_shared(inner, Arc::new(Shared::new("load_shed".to_owned())))
    }

    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>) -> Self {
        LoadShed {
            inner,
            is_ready: false,
            shared,
        }
    }

    /// How many requests were shed.
    pub fn stats(&self) -> LoadShedStats {
        LoadShedStats {
            shed: self.shared.shed.get(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the wrapper, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for LoadShed<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.is_ready {
            return Poll::Ready(Ok(()));
        }
        let inner = &mut self.inner;
        let ready = pin!(tokio::task::coop::unconstrained(std::future::poll_fn(
            |cx| { inner.poll_ready(cx) }
        )))
        .poll(cx);
        match ready {
            Poll::Ready(Ok(())) => self.is_ready = true,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => self.is_ready = false,
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if std::mem::take(&mut self.is_ready) {
            ResponseFuture::called(self.inner.call(req))
        } else {
            self.shared.shed.incr();
            self.shared.m_shed.incr();
            crate::throttle::warn_throttled!(self.shared.log, name = %self.shared.name, "request shed: service overloaded");
            ResponseFuture::overloaded()
        }
    }
}

impl<S: Clone> Clone for LoadShed<S> {
    fn clone(&self) -> Self {
        LoadShed {
            inner: self.inner.clone(),
            is_ready: false,
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("is_ready", &self.is_ready)
            .field("shared", &self.shared)
            .finish()
    }
}

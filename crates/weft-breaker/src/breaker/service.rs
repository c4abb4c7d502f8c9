use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;
use weft_core::{BoxError, Classify, DefaultClassifier};

use super::circuit::{CircuitBreaker, OwnedPermit};
use super::future::ResponseFuture;

/// A tower service guarded by a [`CircuitBreaker`].
///
/// `poll_ready` asks the breaker first: an open breaker fails it with a boxed
/// [`Open`](crate::Open) (carrying the time until the next probe) before the
/// inner service is polled. The admission is held until `call` (or released
/// if the service is dropped first); clones start without one and share the
/// breaker. An admission held while the inner service is not ready is
/// checked again on every `poll_ready`: if the breaker has changed state in
/// the meantime (it tripped, say), the admission is released (counted as
/// cancelled) and the breaker is asked again.
pub struct Breaker<S, C = DefaultClassifier> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
    permit: Option<OwnedPermit>,
}

impl<S> Breaker<S> {
    /// Wraps `inner`, counting every `Err` as a failure.
    pub fn new(inner: S, breaker: CircuitBreaker) -> Self {
        Breaker::with_classifier(inner, breaker, DefaultClassifier)
    }
}

impl<S, C> Breaker<S, C> {
    /// Wraps `inner`, classifying results with `classify`.
    pub fn with_classifier(inner: S, breaker: CircuitBreaker, classify: C) -> Self {
        Breaker {
            inner,
            breaker,
            classify,
            permit: None,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service (an admission held is released).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for Breaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.as_ref().is_some_and(|p| !p.is_current()) {
            // The breaker changed state since the permit was taken (while
            // the inner service was pending, say it tripped): the permit
            // no longer stands for an admission. Drop it (cancelled) and
            // ask again, which an open breaker refuses.
            self.permit = None;
        }
        if self.permit.is_none() {
            match self.breaker.try_acquire_owned() {
                Ok(p) => self.permit = Some(p),
                Err(open) => return Poll::Ready(Err(Box::new(open))),
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // Not the dependency's answer to a call: release, uncounted.
                self.permit = None;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = self.permit.take().expect(
            "Breaker::call without an admission: call poll_ready and wait for Ready(Ok) first",
        );
        ResponseFuture::new(self.inner.call(req), permit, self.classify.clone())
    }
}

impl<S: Clone, C: Clone> Clone for Breaker<S, C> {
    fn clone(&self) -> Self {
        Breaker {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            permit: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Breaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("reserved", &self.permit.is_some())
            .finish()
    }
}

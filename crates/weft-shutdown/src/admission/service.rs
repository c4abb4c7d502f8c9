use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;
use weft_core::BoxError;

use super::ShuttingDown;
use super::future::ResponseFuture;
use super::state::State;

/// The service built by [`ShutdownLayer`](super::ShutdownLayer): refuses
/// requests once shutdown begins and counts the ones in flight.
///
/// `poll_ready` reserves a slot (so a shutdown waits for it); `call` uses it;
/// dropping the service without calling releases it. A clone starts without
/// a reservation.
pub struct Shutdown<S> {
    inner: S,
    state: Arc<State>,
    reservation: Option<Reservation>,
}

impl<S> Shutdown<S> {
    pub(crate) fn new(inner: S, state: Arc<State>) -> Self {
        Shutdown {
            inner,
            state,
            reservation: None,
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

    /// The inner service (releasing any reservation).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A slot in flight: released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation(pub(crate) Arc<State>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<S, Req> Service<Req> for Shutdown<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.reservation.is_none() && self.state.is_closed() {
            self.state.reject();
            return Poll::Ready(Err(ShuttingDown.into()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Ready(Ok(())) => {
                if self.reservation.is_none() {
                    if !self.state.reserve() {
                        return Poll::Ready(Err(ShuttingDown.into()));
                    }
                    self.reservation = Some(Reservation(self.state.clone()));
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let reservation = self.reservation.take().expect(
            "Shutdown::call without a successful poll_ready: call poll_ready (or ServiceExt::ready) first",
        );
        // The inner call first: if it panics, the request was never accepted
        // (no response future will count an outcome for it) and the
        // reservation, dropped while unwinding, releases its slot, so the
        // report still balances. Counted accepted before the response future
        // exists, so before any outcome can be counted for it (the drain's
        // read order relies on that).
        let fut = self.inner.call(req);
        self.state.accepted.incr();
        ResponseFuture::new(fut, reservation)
    }
}

impl<S: Clone> Clone for Shutdown<S> {
    fn clone(&self) -> Self {
        Shutdown {
            inner: self.inner.clone(),
            state: self.state.clone(),
            reservation: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Shutdown<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("inner", &self.inner)
            .field("name", &self.state.name)
            .field("reserved", &self.reservation.is_some())
            .finish()
    }
}

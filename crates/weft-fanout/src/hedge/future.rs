//! The response future of [`Hedge`](super::Hedge).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use weft_core::{BoxError, Panicked};

use super::service::Shared;

pin_project! {
    /// An attempt: a panic while it is made, polled or dropped once done
    /// becomes its output (`Err(Panicked)`), a failed attempt, so it cannot
    /// unwind through the response future.
    #[doc(hidden)]
    pub struct Attempt<F> {
        hedge: bool,
        start: Instant,
        // The call's future, dropped inside the panic boundary once done.
        #[pin]
        fut: Option<F>,
        // The panic of the `call` that was to make it.
        call_panic: Option<Panicked>,
    }
}

impl<F> Attempt<F> {
    /// Makes the attempt with `call` (a `Service::call`), catching a panic
    /// there as the attempt's own failure.
    pub(crate) fn start(hedge: bool, start: Instant, call: impl FnOnce() -> F) -> Self {
        let (fut, call_panic) = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(fut) => (Some(fut), None),
            Err(payload) => (None, Some(Panicked::from_payload(payload.as_ref()))),
        };
        Attempt {
            hedge,
            start,
            fut,
            call_panic,
        }
    }
}

impl<F: Future> Future for Attempt<F> {
    type Output = (bool, Duration, Result<F::Output, Panicked>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.call_panic.take() {
            Some(p) => Err(p),
            None => match weft_core::poll_contained(this.fut, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(out) => out,
            },
        };
        Poll::Ready((*this.hedge, this.start.elapsed(), out))
    }
}

/// Drops the attempts still running (cancels them): their drops are user
/// code, so a panic there is contained, logged and counted like the rest.
fn clear_contained<F>(attempts: &mut FuturesUnordered<Attempt<F>>, shared: &Shared) {
    if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| attempts.clear())) {
        let p = Panicked::from_payload(p.as_ref());
        tracing::error!(
            hedge = shared.name,
            panic = p.message(),
            "a cancelled attempt panicked when dropped"
        );
        shared.panicked.incr();
    }
}

pin_project! {
    /// Resolves to the first successful attempt; the other attempts are
    /// dropped (cancelled) at that moment, or when this future is dropped.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        attempts: FuturesUnordered<Attempt<S::Future>>,
        svc: Option<S>,
        req: Option<Req>,
        delay: Duration,
        extra_left: usize,
        // The timer fired and the budget paid; waiting for `svc` to be ready.
        readying: bool,
        last_err: Option<BoxError>,
        shared: Arc<Shared>,
        #[pin]
        sleep: Sleep,
    }

    impl<S, Req> PinnedDrop for ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let n = this.attempts.len() as u64;
            if n > 0 {
                this.shared.cancelled.add(n);
                clear_contained(this.attempts, this.shared);
            }
            refund_unsent(this.readying, this.shared);
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts.len())
            .field("extra_left", &self.extra_left)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn new(
        primary: Attempt<S::Future>,
        now: Instant,
        svc: Option<S>,
        req: Option<Req>,
        delay: Option<Duration>,
        shared: Arc<Shared>,
    ) -> Self {
        let attempts = FuturesUnordered::new();
        attempts.push(primary);
        let extra_left = if delay.is_some() { shared.max_extra } else { 0 };
        let delay = delay.unwrap_or_default();
        ResponseFuture {
            attempts,
            svc,
            req,
            delay,
            extra_left,
            readying: false,
            last_err: None,
            shared,
            sleep: tokio::time::sleep_until(crate::deadline::saturating_after(now, delay)),
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // 1. Any attempt done?
            while let Poll::Ready(next) = this.attempts.poll_next_unpin(cx) {
                match next {
                    Some((hedge, latency, Ok(Ok(response)))) => {
                        this.shared.record(latency);
                        refund_unsent(this.readying, this.shared);
                        if hedge {
                            this.shared.hedge_wins.incr();
                        }
                        let losers = this.attempts.len() as u64;
                        clear_contained(this.attempts, this.shared);
                        this.shared.cancelled.add(losers);
                        this.svc.take();
                        this.req.take();
                        tracing::debug!(
                            hedge = this.shared.name,
                            hedged_win = hedge,
                            losers,
                            "hedged call answered"
                        );
                        #[cfg(feature = "metrics")]
                        if hedge {
                            this.shared.m_wins.increment(1);
                        }
                        return Poll::Ready(Ok(response));
                    }
                    Some((_, _, Ok(Err(e)))) => {
                        *this.last_err = Some(e.into());
                    }
                    Some((hedge, _, Err(panic))) => {
                        // A failed attempt like any other: another attempt
                        // in flight can still win.
                        tracing::error!(
                            hedge = this.shared.name,
                            hedged_attempt = hedge,
                            %panic,
                            "hedge attempt panicked"
                        );
                        this.shared.panicked.incr();
                        *this.last_err = Some(Box::new(panic));
                    }
                    None => {
                        // Every attempt sent has failed: hedging is not a
                        // retry, so the last error is the answer.
                        let err = this
                            .last_err
                            .take()
                            .expect("a hedged call always has an attempt or an error");
                        refund_unsent(this.readying, this.shared);
                        return Poll::Ready(Err(err));
                    }
                }
            }
            // 2. Time for another attempt?
            if *this.extra_left == 0 {
                return Poll::Pending;
            }
            if !*this.readying {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if !this.shared.budget.withdraw() {
                    this.shared.budget_denied.incr();
                    tracing::debug!(hedge = this.shared.name, "hedge budget spent; not hedging");
                    #[cfg(feature = "metrics")]
                    this.shared.m_denied.increment(1);
                    *this.extra_left = 0;
                    this.svc.take();
                    this.req.take();
                    return Poll::Pending;
                }
                *this.readying = true;
            }
            let svc = this
                .svc
                .as_mut()
                .expect("hedge service kept while hedges remain");
            // The inner `poll_ready` is user code too: a panic there means
            // no hedge, not the end of the attempts in flight.
            let ready = std::panic::catch_unwind(AssertUnwindSafe(|| {
                svc.poll_ready(cx).map_err(Into::into)
            }))
            .unwrap_or_else(|payload| {
                let panic = Panicked::from_payload(payload.as_ref());
                tracing::error!(hedge = this.shared.name, %panic, "hedge poll_ready panicked");
                this.shared.panicked.incr();
                Poll::Ready(Err(Box::new(panic) as BoxError))
            });
            match ready {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(hedge = this.shared.name, error = %e, "service not ready for a hedge; not hedging");
                    *this.extra_left = 0;
                    // The token paid for a hedge that is not sent.
                    refund_unsent(this.readying, this.shared);
                    this.svc.take();
                    this.req.take();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {
                    let req = if *this.extra_left == 1 {
                        this.req.take().expect("request kept while hedges remain")
                    } else {
                        this.req.clone().expect("request kept while hedges remain")
                    };
                    let now = Instant::now();
                    this.attempts
                        .push(Attempt::start(true, now, || svc.call(req)));
                    *this.extra_left -= 1;
                    *this.readying = false;
                    this.shared.hedges.incr();
                    tracing::debug!(hedge = this.shared.name, "hedge sent");
                    #[cfg(feature = "metrics")]
                    this.shared.m_attempts.increment(1);
                    if *this.extra_left == 0 {
                        this.svc.take();
                    } else {
                        this.sleep
                            .as_mut()
                            .reset(crate::deadline::saturating_after(now, *this.delay));
                    }
                    // Loop: the new attempt must be polled once.
                }
            }
        }
    }
}

/// A hedge's token is withdrawn when its delay has passed, before the inner
/// service is ready for it. If the hedge is then not sent (the service
/// errs, another attempt answers, or the caller leaves), the token goes back
/// to the budget: only hedges actually sent spend it.
fn refund_unsent(readying: &mut bool, shared: &Shared) {
    if std::mem::take(readying) {
        shared.budget.refund();
    }
}

//! The response future of [`Hedge`](super::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use weft_core::BoxError;

use super::service::Shared;

pin_project! {
    #[doc(hidden)]
    pub struct Attempt<F> {
        hedge: bool,
        start: Instant,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Attempt<F> {
    type Output = (bool, Duration, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.fut.poll(cx) {
            Poll::Ready(out) => Poll::Ready((*this.hedge, this.start.elapsed(), out)),
            Poll::Pending => Poll::Pending,
        }
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
                this.attempts.clear();
            }
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
        primary: S::Future,
        svc: Option<S>,
        req: Option<Req>,
        delay: Option<Duration>,
        shared: Arc<Shared>,
    ) -> Self {
        let now = Instant::now();
        let attempts = FuturesUnordered::new();
        attempts.push(Attempt {
            hedge: false,
            start: now,
            fut: primary,
        });
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
                    Some((hedge, latency, Ok(response))) => {
                        this.shared.record(latency);
                        if hedge {
                            this.shared.hedge_wins.incr();
                        }
                        let losers = this.attempts.len() as u64;
                        this.attempts.clear();
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
                    Some((_, _, Err(e))) => {
                        *this.last_err = Some(e.into());
                    }
                    None => {
                        // Every attempt sent has failed: hedging is not a
                        // retry, so the last error is the answer.
                        let err = this
                            .last_err
                            .take()
                            .expect("a hedged call always has an attempt or an error");
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
            match svc.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::debug!(hedge = this.shared.name, error = %e, "service not ready for a hedge; not hedging");
                    *this.extra_left = 0;
                    *this.readying = false;
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
                    this.attempts.push(Attempt {
                        hedge: true,
                        start: now,
                        fut: svc.call(req),
                    });
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

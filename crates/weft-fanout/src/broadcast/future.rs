//! The response future of [`Broadcast`](super::Broadcast).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pin_project_lite::pin_project;
use weft_core::BoxError;

use super::error::NoReplicaSucceeded;
use super::gather::Gather;
use super::service::Shared;

pin_project! {
    #[doc(hidden)]
    pub struct Indexed<F> {
        replica: usize,
        #[pin]
        fut: F,
    }
}

impl<F> Indexed<F> {
    pub(super) fn new(replica: usize, fut: F) -> Self {
        Indexed { replica, fut }
    }
}

impl<F: Future> Future for Indexed<F> {
    type Output = (usize, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.fut.poll(cx));
        Poll::Ready((*this.replica, out))
    }
}

/// Resolves once the gather strategy decides; the replica calls still
/// running are dropped at that moment, or when this future is dropped.
pub struct ResponseFuture<F, G> {
    running: FuturesUnordered<Indexed<F>>,
    gather: G,
    shared: Arc<Shared>,
    done: bool,
}

impl<F, G> ResponseFuture<F, G> {
    pub(super) fn new(
        running: FuturesUnordered<Indexed<F>>,
        gather: G,
        shared: Arc<Shared>,
    ) -> Self {
        ResponseFuture {
            running,
            gather,
            shared,
            done: false,
        }
    }

    fn cancel_losers(&mut self) {
        let losers = self.running.len();
        if losers > 0 {
            self.running.clear();
            self.shared.losers_cancelled.add(losers as u64);
            #[cfg(feature = "metrics")]
            self.shared.m.losers.increment(losers as u64);
        }
    }
}

// The replica futures are pinned inside the `FuturesUnordered`, and the
// strategy is never pinned.
impl<F, G> Unpin for ResponseFuture<F, G> {}

impl<F, G> Drop for ResponseFuture<F, G> {
    fn drop(&mut self) {
        self.cancel_losers();
    }
}

impl<F, G> fmt::Debug for ResponseFuture<F, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("running", &self.running.len())
            .field("done", &self.done)
            .finish()
    }
}

impl<F, G, R, E> Future for ResponseFuture<F, G>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    G: Gather<R>,
{
    type Output = Result<G::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // FuturesUnordered pins its futures itself, so `Self: Unpin`.
        let this = self.get_mut();
        assert!(
            !this.done,
            "broadcast ResponseFuture polled after completion"
        );
        loop {
            let decided = match ready!(this.running.poll_next_unpin(cx)) {
                Some((replica, result)) => {
                    let pending = this.running.len();
                    this.gather
                        .on_result(replica, result.map_err(Into::into), pending)
                }
                None => Some(Err(Box::new(NoReplicaSucceeded::new()) as BoxError)),
            };
            if let Some(out) = decided {
                this.done = true;
                this.cancel_losers();
                let ok = out.is_ok();
                if ok {
                    this.shared.succeeded.incr();
                } else {
                    this.shared.failed.incr();
                }
                tracing::debug!(broadcast = this.shared.name, ok, "broadcast decided");
                #[cfg(feature = "metrics")]
                if ok {
                    this.shared.m.success.increment(1);
                } else {
                    this.shared.m.failure.increment(1);
                }
                return Poll::Ready(out);
            }
        }
    }
}

//! The response future of [`Broadcast`](super::Broadcast).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pin_project_lite::pin_project;
use weft_core::{BoxError, Panicked};

use super::error::NoReplicaSucceeded;
use super::gather::Gather;
use super::service::Shared;

pin_project! {
    /// A replica's call with its index; a panic while it is made, polled or
    /// dropped once done becomes its output (`Err(Panicked)`), so it cannot
    /// unwind through the response future.
    #[doc(hidden)]
    pub struct Indexed<F> {
        replica: usize,
        // The call's future, dropped inside the panic boundary once done.
        #[pin]
        fut: Option<F>,
        // The panic of the `call` that was to make it.
        call_panic: Option<Panicked>,
    }
}

impl<F> Indexed<F> {
    /// Makes the replica's call with `call` (a `Service::call`), catching a
    /// panic there as the replica's own failure.
    pub(super) fn start(replica: usize, call: impl FnOnce() -> F) -> Self {
        match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(fut) => Indexed {
                replica,
                fut: Some(fut),
                call_panic: None,
            },
            Err(payload) => Indexed {
                replica,
                fut: None,
                call_panic: Some(Panicked::from_payload(payload.as_ref())),
            },
        }
    }
}

impl<F: Future> Future for Indexed<F> {
    type Output = (usize, Result<F::Output, Panicked>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.call_panic.take() {
            Some(p) => Err(p),
            None => match weft_core::poll_contained(this.fut, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(out) => out,
            },
        };
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
            // Dropping the losers runs their futures' drops: user code,
            // contained like the rest.
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| self.running.clear())) {
                let p = Panicked::from_payload(p.as_ref());
                tracing::error!(
                    broadcast = self.shared.name,
                    panic = p.message(),
                    "a cancelled replica panicked when dropped"
                );
                self.shared.panicked.add(1);
            }
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
                    let result = match result {
                        Ok(answer) => answer.map_err(Into::into),
                        Err(panic) => {
                            // A failed replica like any other: it cannot beat
                            // a success, and counts against `All`/`Quorum`.
                            tracing::error!(
                                broadcast = this.shared.name,
                                replica,
                                %panic,
                                "broadcast replica panicked"
                            );
                            this.shared.panicked.incr();
                            Err(Box::new(panic) as BoxError)
                        }
                    };
                    let pending = this.running.len();
                    this.gather.on_result(replica, result, pending)
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

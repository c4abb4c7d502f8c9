use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;
use weft_core::Counter;

use crate::coordinator::TriggerState;

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: String,
    closed: AtomicBool,
    /// The coordinator's trigger, for layers made by `Coordinator::layer`.
    /// Read with one atomic load per check: `CancellationToken::is_cancelled`
    /// takes a mutex, which has no place on the per-request path.
    trigger: Option<Arc<TriggerState>>,
    /// Reservations plus calls in flight.
    in_flight: AtomicUsize,
    idle: Notify,
    pub(crate) accepted: Counter,
    pub(crate) completed: Counter,
    pub(crate) failed: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) rejected: Counter,
}

impl State {
    pub(crate) fn new(name: String, trigger: Option<Arc<TriggerState>>) -> Self {
        State {
            name,
            closed: AtomicBool::new(false),
            trigger,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            accepted: Counter::new(),
            completed: Counter::new(),
            failed: Counter::new(),
            cancelled: Counter::new(),
            rejected: Counter::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.trigger.as_ref().is_some_and(|t| t.is_fired())
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.idle.notify_waiters();
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Takes a slot; fails (and counts a rejection) once closed. The slot is
    /// taken before the closed check so that a drain that has seen zero in
    /// flight after closing can never be followed by an admitted call.
    pub(crate) fn reserve(&self) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.is_closed() {
            if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
            self.reject();
            return false;
        }
        #[cfg(feature = "metrics")]
        metrics::gauge!("weft_shutdown_in_flight", "name" => self.name.clone()).increment(1.0);
        true
    }

    pub(crate) fn reject(&self) {
        self.rejected.incr();
        tracing::debug!(service = %self.name, "request refused: shutting down");
        #[cfg(feature = "metrics")]
        metrics::counter!("weft_shutdown_rejected_total", "name" => self.name.clone()).increment(1);
    }

    pub(crate) fn release(&self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("weft_shutdown_in_flight", "name" => self.name.clone()).decrement(1.0);
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_closed() {
            self.idle.notify_waiters();
        }
    }

    /// Waits until nothing is in flight or the deadline passes.
    pub(crate) async fn idle_until(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.in_flight() == 0,
            }
        }
    }
}

//! The breaker handle, its permits and its statistics.

use std::borrow::Cow;
use std::fmt;
use std::future::IntoFuture;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::atomic::Ordering as StdOrdering;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use weft_core::{Classify, Counter, DefaultClassifier, Outcome, Panicked};

use super::config::{Builder, Callback};
use super::core::{Core, Kind, Raw, Reject, Ticket, Worth};
use super::error::{BuildError, CallError, Open};
use super::state::{State, Transition};

/// A circuit breaker.
///
/// Cloning is cheap and every clone shares one breaker. In the closed state
/// admitting a call is one atomic load and recording its outcome a handful of
/// relaxed atomic operations: no lock, no allocation.
///
/// ```
/// use weft_breaker::{CallError, CircuitBreaker, State};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let breaker = CircuitBreaker::builder().consecutive_failures(2).build().unwrap();
/// for _ in 0..2 {
///     let r = breaker.call(async { Err::<(), _>("unavailable") }).await;
///     assert!(matches!(r, Err(CallError::Inner("unavailable"))));
/// }
/// assert_eq!(breaker.state(), State::Open);
/// // Rejected without running the future.
/// let r = breaker.call(async { Ok::<_, &str>(1) }).await;
/// assert!(r.unwrap_err().is_open());
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) core: Core,
    name: Cow<'static, str>,
    base: Instant,
    stats: Cells,
    events: broadcast::Sender<Transition>,
    watch: watch::Sender<State>,
    callback: Option<Callback>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::BreakerMetrics,
}

struct Cells {
    /// Successes not recorded in the count window (those are derived:
    /// window total - windowed failures).
    successes: Counter,
    failures: Counter,
    windowed_failures: Counter,
    ignored: Counter,
    cancelled: Counter,
    slow: Counter,
    rejected: Counter,
    passthrough: Counter,
    probes: StdAtomicU64,
    transitions: [StdAtomicU64; 5],
    callback_panics: StdAtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// Admits or rejects a call. A transition made by an admission (the
    /// first half-open probe) is left in `event`, for the caller to publish
    /// once the ticket is inside a permit: whatever unwinds out of
    /// publishing then drops the permit, which frees the probe slot. A
    /// transition made by a rejection is published here.
    #[inline]
    pub(crate) fn acquire(&self, event: &mut Option<Raw>) -> Result<Ticket, Open> {
        let r = self.core.acquire(&mut || self.now(), event);
        match r {
            Ok(t) => {
                match t.kind {
                    Kind::Closed => {}
                    Kind::Probe => {
                        self.stats.probes.fetch_add(1, StdOrdering::Relaxed);
                    }
                    Kind::Passthrough => self.stats.passthrough.incr(),
                }
                Ok(t)
            }
            Err(Reject { state, retry_after }) => {
                if let Some(raw) = event.take() {
                    self.publish(raw);
                }
                self.stats.rejected.incr();
                #[cfg(feature = "metrics")]
                self.metrics.rejected.increment(1);
                tracing::debug!(breaker = %self.name, state = state.as_str(), "call rejected");
                Err(Open {
                    state,
                    retry_after: retry_after.map(Duration::from_nanos),
                })
            }
        }
    }

    #[inline]
    pub(crate) fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let done = self.core.complete(ticket, outcome, &mut || self.now());
        if ticket.kind != Kind::Passthrough {
            match outcome {
                Outcome::Success if done.windowed => {}
                Outcome::Success => self.stats.successes.incr(),
                Outcome::Failure => {
                    self.stats.failures.incr();
                    if done.windowed {
                        self.stats.windowed_failures.incr();
                    }
                }
                Outcome::Ignored => self.stats.ignored.incr(),
            }
            if done.slow {
                self.stats.slow.incr();
            }
            #[cfg(feature = "metrics")]
            self.metrics.outcome(outcome, done.slow);
        }
        if let Some(raw) = done.transition {
            self.publish(raw);
        }
    }

    pub(crate) fn cancel(&self, ticket: Ticket) {
        self.core.cancel(ticket);
        if ticket.kind != Kind::Passthrough {
            self.stats.cancelled.incr();
            #[cfg(feature = "metrics")]
            self.metrics.cancelled.increment(1);
        }
        tracing::debug!(breaker = %self.name, "call cancelled");
    }

    #[cold]
    fn publish(&self, raw: Raw) {
        let t = Transition {
            from: raw.from,
            to: raw.to,
            reason: raw.reason,
            generation: u64::from(raw.generation),
            at: self.base + Duration::from_nanos(raw.at),
            open_for: raw.open_for.map(Duration::from_nanos),
        };
        self.stats.transitions[t.to.as_index()].fetch_add(1, StdOrdering::Relaxed);
        match t.to {
            State::Open | State::ForcedOpen => tracing::warn!(
                breaker = %self.name, from = t.from.as_str(), to = t.to.as_str(),
                reason = t.reason.as_str(), open_for = ?t.open_for, "circuit breaker opened"
            ),
            _ => tracing::info!(
                breaker = %self.name, from = t.from.as_str(), to = t.to.as_str(),
                reason = t.reason.as_str(), "circuit breaker state changed"
            ),
        }
        // Transitions may be published by racing threads out of order; the
        // watch always ends on the state the breaker is actually in.
        let core = &self.core;
        self.watch.send_if_modified(|cur| {
            let now = core.state();
            let changed = *cur != now;
            *cur = now;
            changed
        });
        #[cfg(feature = "metrics")]
        self.metrics.transition(&t, self.core.state());
        let _ = self.events.send(t.clone());
        if let Some(cb) = &self.callback {
            // A panic in the user's callback is contained (DESIGN contract
            // 3): it would otherwise unwind into whichever call happened to
            // make the transition.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| cb(&t))) {
                self.stats
                    .callback_panics
                    .fetch_add(1, StdOrdering::Relaxed);
                let p = Panicked::from_payload(payload.as_ref());
                tracing::error!(
                    breaker = %self.name, from = t.from.as_str(), to = t.to.as_str(),
                    panic = p.message(), "on_transition callback panicked"
                );
            }
        }
    }
}

impl CircuitBreaker {
    /// A builder with resilience4j's defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_builder(b: Builder) -> Result<CircuitBreaker, BuildError> {
        let (params, window) = b.params()?;
        let (events, _) = broadcast::channel(b.event_capacity);
        let (watch, _) = watch::channel(State::Closed);
        Ok(CircuitBreaker {
            shared: Arc::new(Shared {
                core: Core::new(params, window),
                #[cfg(feature = "metrics")]
                metrics: crate::metrics::BreakerMetrics::new(&b.name),
                name: b.name,
                base: Instant::now(),
                stats: Cells {
                    successes: Counter::new(),
                    failures: Counter::new(),
                    windowed_failures: Counter::new(),
                    ignored: Counter::new(),
                    cancelled: Counter::new(),
                    slow: Counter::new(),
                    rejected: Counter::new(),
                    passthrough: Counter::new(),
                    probes: StdAtomicU64::new(0),
                    transitions: Default::default(),
                    callback_panics: StdAtomicU64::new(0),
                },
                events,
                watch,
                callback: b.callback,
            }),
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state. An open breaker whose open duration has passed
    /// still reads [`State::Open`] until the next call makes it half-open.
    pub fn state(&self) -> State {
        self.shared.core.state()
    }

    /// What dropping this breaker would lose, for
    /// [`KeyedBreaker`](crate::KeyedBreaker)'s eviction (a cold path).
    pub(crate) fn worth(&self) -> Worth {
        self.shared.core.worth(&mut || self.shared.now())
    }

    /// Runs `fut` through the breaker, classifying its result with
    /// [`DefaultClassifier`] (every `Err` is a failure).
    ///
    /// If the breaker rejects the call, `fut` is dropped without being
    /// polled. If the returned future is dropped before `fut` completes, the
    /// call counts as cancelled: neither success nor failure, and a
    /// half-open probe slot it held is freed.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: IntoFuture<Output = Result<T, E>>,
    {
        self.call_with(&DefaultClassifier, fut).await
    }

    /// Runs `fut` through the breaker, classifying its result with
    /// `classify` (which decides what counts as a failure, and what is
    /// ignored).
    pub async fn call_with<C, F, T, E>(&self, classify: &C, fut: F) -> Result<T, CallError<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: IntoFuture<Output = Result<T, E>>,
    {
        let mut permit = match self.try_acquire() {
            Ok(p) => p,
            Err(open) => return Err(CallError::Open(open)),
        };
        let result = fut.into_future().await;
        // By reference: moving the permit out of the future's state would
        // copy it through memory on every call.
        permit.finish(classify.classify(&result));
        result.map_err(CallError::Inner)
    }

    /// Asks to start a call by hand; report its outcome on the permit
    /// (dropping the permit unreported counts as cancelled).
    ///
    /// ```
    /// use weft_breaker::CircuitBreaker;
    /// use weft_core::Outcome;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let breaker = CircuitBreaker::builder().build().unwrap();
    /// let permit = breaker.try_acquire().unwrap();
    /// permit.record(Outcome::Success);
    /// assert_eq!(breaker.stats().successes, 1);
    /// # }
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Open> {
        let mut event = None;
        let ticket = self.shared.acquire(&mut event)?;
        if let Some(raw) = event {
            return Ok(self.admitted_with_event(ticket, raw));
        }
        Ok(Permit {
            shared: &self.shared,
            ticket,
            done: false,
        })
    }

    /// An admission that made a transition (the first half-open probe):
    /// the permit exists before the transition is published, so whatever
    /// unwinds out of publishing drops it and frees the probe slot. Out of
    /// line, so that the closed-state path has no unwinding edge to carry.
    #[cold]
    #[inline(never)]
    fn admitted_with_event(&self, ticket: Ticket, raw: Raw) -> Permit<'_> {
        let permit = Permit {
            shared: &self.shared,
            ticket,
            done: false,
        };
        self.shared.publish(raw);
        permit
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a
    /// handle to the breaker (for futures that must be `'static`).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Open> {
        let mut event = None;
        let ticket = self.shared.acquire(&mut event)?;
        let permit = OwnedPermit {
            shared: Some(self.shared.clone()),
            ticket,
        };
        if let Some(raw) = event {
            // As in `admitted_with_event`: the permit first.
            self.shared.publish(raw);
        }
        Ok(permit)
    }

    /// Forces the breaker open: every call is rejected until
    /// [`reset`](Self::reset) or [`disable`](Self::disable).
    pub fn force_open(&self) {
        self.force(State::ForcedOpen);
    }

    /// Disables the breaker: every call passes and nothing is counted,
    /// until [`reset`](Self::reset) or [`force_open`](Self::force_open).
    pub fn disable(&self) {
        self.force(State::Disabled);
    }

    /// Closes the breaker and clears its counts and its open backoff.
    pub fn reset(&self) {
        self.force(State::Closed);
    }

    fn force(&self, to: State) {
        let s = &self.shared;
        if let Some(raw) = s.core.force(to, s.now()) {
            s.publish(raw);
        }
    }

    /// Subscribes to state transitions.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// A watch of the current state.
    pub fn watch(&self) -> watch::Receiver<State> {
        self.shared.watch.subscribe()
    }

    /// A snapshot of the breaker's counts.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let st = &s.stats;
        let (probes_in_flight, probe_successes) = s.core.half_open_counts();
        let tally = s.core.tally(s.now());
        let t = |x: State| st.transitions[x.as_index()].load(StdOrdering::Relaxed);
        Stats {
            state: s.core.state(),
            successes: st.successes.get()
                + s.core
                    .windowed_total()
                    .saturating_sub(st.windowed_failures.get()),
            failures: st.failures.get(),
            ignored: st.ignored.get(),
            cancelled: st.cancelled.get(),
            slow: st.slow.get(),
            rejected: st.rejected.get(),
            passthrough: st.passthrough.get(),
            probes: st.probes.load(StdOrdering::Relaxed),
            probes_in_flight,
            probe_successes,
            consecutive_failures: s.core.consecutive_failures(),
            window_calls: tally.calls,
            window_failures: tally.failures,
            window_slow: tally.slow,
            opened: t(State::Open),
            half_opened: t(State::HalfOpen),
            closed: t(State::Closed),
            forced_open: t(State::ForcedOpen),
            disabled: t(State::Disabled),
            callback_panics: st.callback_panics.load(StdOrdering::Relaxed),
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .field("params", self.shared.core.params())
            .finish()
    }
}

/// A snapshot of a breaker's counts: outcomes (of calls admitted in the
/// closed and half-open states), rejections, and transitions into each state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The state now.
    pub state: State,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls whose outcome the classifier ignored.
    pub ignored: u64,
    /// Calls dropped before they completed.
    pub cancelled: u64,
    /// Calls (of any outcome) slower than the slow-call threshold.
    pub slow: u64,
    /// Calls rejected (open, forced open, or half-open with every slot taken).
    pub rejected: u64,
    /// Calls let through while disabled (not counted in the outcomes).
    pub passthrough: u64,
    /// Probe calls admitted in half-open (their outcomes are in the counts
    /// above too).
    pub probes: u64,
    /// Probes in flight now (half-open only).
    pub probes_in_flight: u32,
    /// Probe successes so far in this half-open period.
    pub probe_successes: u32,
    /// Failures in a row so far (closed only, when counted).
    pub consecutive_failures: u32,
    /// Calls in the sliding window now.
    pub window_calls: u64,
    /// Failures in the sliding window now.
    pub window_failures: u64,
    /// Slow calls in the sliding window now.
    pub window_slow: u64,
    /// Transitions into `Open`.
    pub opened: u64,
    /// Transitions into `HalfOpen`.
    pub half_opened: u64,
    /// Transitions into `Closed`.
    pub closed: u64,
    /// Transitions into `ForcedOpen`.
    pub forced_open: u64,
    /// Transitions into `Disabled`.
    pub disabled: u64,
    /// Panics of the [`on_transition`](Builder::on_transition) callback,
    /// caught and logged (the transition itself stands).
    pub callback_panics: u64,
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Report the outcome with [`record`](Permit::record); dropping the permit
/// without it counts the call as cancelled (neither success nor failure) and
/// frees the half-open probe slot it may hold.
#[must_use = "report the outcome with `record`; dropping the permit counts the call as cancelled"]
pub struct Permit<'a> {
    shared: &'a Shared,
    ticket: Ticket,
    done: bool,
}

impl Permit<'_> {
    /// Reports the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    #[inline]
    fn finish(&mut self, outcome: Outcome) {
        self.done = true;
        self.shared.complete(self.ticket, outcome);
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.kind == Kind::Probe
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.shared.cancel(self.ticket);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.is_probe())
            .finish()
    }
}

/// Permission to make one call, holding its own handle to the breaker; see
/// [`Permit`].
#[must_use = "report the outcome with `record`; dropping the permit counts the call as cancelled"]
pub struct OwnedPermit {
    shared: Option<Arc<Shared>>,
    ticket: Ticket,
}

impl OwnedPermit {
    /// Reports the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(s) = self.shared.take() {
            s.complete(self.ticket, outcome);
        }
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.kind == Kind::Probe
    }

    /// Whether the breaker is still in the state this permit was admitted
    /// in (same generation). Once it is not, the call's outcome would not
    /// be counted, and the state that admitted it is gone: the tower
    /// service drops such a permit and asks again.
    pub(crate) fn is_current(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.core.is_current(self.ticket))
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            s.cancel(self.ticket);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("probe", &self.is_probe())
            .finish()
    }
}

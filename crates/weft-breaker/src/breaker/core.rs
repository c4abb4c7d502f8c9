//! The breaker's state machine: one atomic word, a lock taken only to change
//! state, and the closed-state counters. Time is passed in (nanoseconds
//! since the breaker was built) so that the machine can be model-checked.

use crossbeam_utils::CachePadded;
use weft_core::Outcome;

use super::state::{Reason, State};
use super::window::{CountWindow, Tally, TimeWindow, Window};
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering, lock};

// The state word: | generation (30) | half-open successes (15) |
// half-open probes in flight (15) | state (4) |
const TAG_MASK: u64 = 0xF;
const IN_SHIFT: u32 = 4;
const SUCC_SHIFT: u32 = 19;
const GEN_SHIFT: u32 = 34;
const FIELD_MASK: u64 = (1 << 15) - 1;
const GEN_MASK: u64 = (1 << 30) - 1;
const ONE_IN: u64 = 1 << IN_SHIFT;
const ONE_SUCC: u64 = 1 << SUCC_SHIFT;

/// The largest number of half-open probes (or probe successes) the word can hold.
pub(crate) const MAX_PROBES: u32 = FIELD_MASK as u32;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const DISABLED: u64 = 4;

fn tag(w: u64) -> u64 {
    w & TAG_MASK
}
fn in_flight(w: u64) -> u32 {
    ((w >> IN_SHIFT) & FIELD_MASK) as u32
}
fn successes(w: u64) -> u32 {
    ((w >> SUCC_SHIFT) & FIELD_MASK) as u32
}
fn generation(w: u64) -> u32 {
    ((w >> GEN_SHIFT) & GEN_MASK) as u32
}
fn word(tag: u64, generation: u32, in_flight: u32) -> u64 {
    (u64::from(generation) & GEN_MASK) << GEN_SHIFT | u64::from(in_flight) << IN_SHIFT | tag
}
fn tag_of(s: State) -> u64 {
    s.as_index() as u64
}

/// The numbers the state machine runs on (validated by the builder).
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Trip after this many failures in a row (0: off).
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: f64,
    pub(crate) minimum_calls: u64,
    /// Calls at least this slow (nanoseconds) count as slow.
    pub(crate) slow_threshold: Option<u64>,
    pub(crate) slow_rate: Option<f64>,
    pub(crate) probes: u32,
    pub(crate) probe_successes: u32,
    pub(crate) open_base: u64,
    pub(crate) open_multiplier: f64,
    pub(crate) open_max: u64,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_max_wait: u64,
}

/// The kind of admission a ticket stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Closed,
    Probe,
    Passthrough,
}

/// What a caller holds between admission and outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) generation: u32,
    pub(crate) kind: Kind,
    /// When the call started (only read when slow calls are counted).
    pub(crate) start: u64,
}

/// A rejected admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reject {
    pub(crate) state: State,
    pub(crate) retry_after: Option<u64>,
}

/// A transition that happened, before it is timestamped and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) reason: Reason,
    pub(crate) generation: u32,
    pub(crate) at: u64,
    pub(crate) open_for: Option<u64>,
}

/// What completing a call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Completed {
    pub(crate) slow: bool,
    /// The outcome was recorded in the count window (whose index counts it).
    pub(crate) windowed: bool,
    pub(crate) transition: Option<Raw>,
}

pub(crate) struct Core {
    word: CachePadded<AtomicU64>,
    consecutive: CachePadded<AtomicU32>,
    window: Window,
    transition_lock: Mutex<()>,
    opened_at: AtomicU64,
    open_for: AtomicU64,
    /// When every half-open probe slot was last seen to become taken
    /// (nanoseconds, like every time here); `half_open_max_wait` is measured
    /// from it. Only ever grows.
    full_since: AtomicU64,
    trips: AtomicU32,
    p: Params,
}

/// What dropping a breaker and starting a fresh, closed one in its place
/// would lose; [`KeyedBreaker`](crate::KeyedBreaker) evicts the least
/// first. Ordered: `Healthy < Backoff < Guarding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Worth {
    /// Closed or disabled: at most some closed-state counts.
    Healthy,
    /// Open past its open duration (the next call would be a probe), or
    /// half-open with no probe in flight: the trip count that grows the
    /// next open duration, and the limit of a few probes (a fresh breaker
    /// lets every call through).
    Backoff,
    /// Open within its open duration, half-open with probes in flight, or
    /// forced open: it is holding calls back from a failing dependency now.
    Guarding,
}

/// How the window is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowSpec {
    Count(usize),
    TimeSecs(usize),
    None,
}

impl Core {
    pub(crate) fn new(p: Params, window: WindowSpec) -> Core {
        Core {
            word: CachePadded::new(AtomicU64::new(word(CLOSED, 0, 0))),
            consecutive: CachePadded::new(AtomicU32::new(0)),
            window: match window {
                WindowSpec::Count(n) => Window::Count(CountWindow::new(n)),
                WindowSpec::TimeSecs(s) => Window::Time(TimeWindow::new(s)),
                WindowSpec::None => Window::None,
            },
            transition_lock: Mutex::new(()),
            opened_at: AtomicU64::new(0),
            open_for: AtomicU64::new(0),
            full_since: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            p,
        }
    }

    pub(crate) fn params(&self) -> &Params {
        &self.p
    }

    /// The current state, as stored (an open breaker whose open duration has
    /// passed reads `Open` until a call arrives).
    pub(crate) fn state(&self) -> State {
        State::from_index(tag(self.word.load(Ordering::Acquire)))
    }

    /// Probes in flight and probe successes so far (half-open only).
    pub(crate) fn half_open_counts(&self) -> (u32, u32) {
        let w = self.word.load(Ordering::Acquire);
        if tag(w) == HALF_OPEN {
            (in_flight(w), successes(w))
        } else {
            (0, 0)
        }
    }

    /// What dropping this breaker would lose (see [`Worth`]). `now` is read
    /// only when the breaker is open. A cold path: a few atomic loads.
    pub(crate) fn worth(&self, now: &mut impl FnMut() -> u64) -> Worth {
        let w = self.word.load(Ordering::Acquire);
        match tag(w) {
            OPEN => {
                let until = self
                    .opened_at
                    .load(Ordering::Acquire)
                    .saturating_add(self.open_for.load(Ordering::Acquire));
                if now() < until {
                    Worth::Guarding
                } else {
                    Worth::Backoff
                }
            }
            HALF_OPEN if in_flight(w) > 0 => Worth::Guarding,
            HALF_OPEN => Worth::Backoff,
            FORCED_OPEN => Worth::Guarding,
            _ => Worth::Healthy,
        }
    }

    /// Whether the breaker is still in the state (the generation) that
    /// admitted `ticket`. One load.
    #[inline]
    pub(crate) fn is_current(&self, ticket: Ticket) -> bool {
        generation(self.word.load(Ordering::Acquire)) == ticket.generation
    }

    /// Consecutive failures so far (closed state).
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    pub(crate) fn tally(&self, now: u64) -> Tally {
        match &self.window {
            Window::Count(w) => w.tally(),
            Window::Time(w) => w.tally_at(now),
            Window::None => Tally::default(),
        }
    }

    /// Asks to start a call. `now` is read only when the state needs it.
    #[inline]
    pub(crate) fn acquire(
        &self,
        now: &mut impl FnMut() -> u64,
        event: &mut Option<Raw>,
    ) -> Result<Ticket, Reject> {
        // The closed state is the hot path: one load, kept small enough to
        // inline into every call; the other states go out of line.
        let w = self.word.load(Ordering::Acquire);
        if tag(w) == CLOSED {
            let start = if self.p.slow_threshold.is_some() {
                now()
            } else {
                0
            };
            return Ok(Ticket {
                generation: generation(w),
                kind: Kind::Closed,
                start,
            });
        }
        self.acquire_slow(w, now, event)
    }

    /// [`acquire`](Self::acquire) in any state but a closed one seen first.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &self,
        mut w: u64,
        now: &mut impl FnMut() -> u64,
        event: &mut Option<Raw>,
    ) -> Result<Ticket, Reject> {
        loop {
            match tag(w) {
                CLOSED => {
                    let start = if self.p.slow_threshold.is_some() {
                        now()
                    } else {
                        0
                    };
                    return Ok(Ticket {
                        generation: generation(w),
                        kind: Kind::Closed,
                        start,
                    });
                }
                DISABLED => {
                    return Ok(Ticket {
                        generation: generation(w),
                        kind: Kind::Passthrough,
                        start: 0,
                    });
                }
                FORCED_OPEN => {
                    return Err(Reject {
                        state: State::ForcedOpen,
                        retry_after: None,
                    });
                }
                OPEN => {
                    let t = now();
                    let until = self
                        .opened_at
                        .load(Ordering::Acquire)
                        .saturating_add(self.open_for.load(Ordering::Acquire));
                    if t < until {
                        return Err(Reject {
                            state: State::Open,
                            retry_after: Some(until - t),
                        });
                    }
                    if let Some(raw) =
                        self.transition(OPEN, generation(w), HALF_OPEN, Reason::OpenElapsed, t, 1)
                    {
                        *event = Some(raw);
                        return Ok(Ticket {
                            generation: raw.generation,
                            kind: Kind::Probe,
                            start: t,
                        });
                    }
                    w = self.word.load(Ordering::Acquire);
                }
                HALF_OPEN => {
                    let n = in_flight(w);
                    if n < self.p.probes {
                        // Taking the last slot: record when every slot became
                        // taken, before the CAS that takes it (Release), so
                        // that a caller who finds the slots full (Acquire)
                        // reads this time or a later one. A CAS that then
                        // fails leaves a time that is only too late, which
                        // only delays a timeout; `fetch_max` keeps a caller
                        // with an older reading of the clock from moving it
                        // back.
                        let mut t = None;
                        if n + 1 == self.p.probes {
                            let t0 = now();
                            self.full_since.fetch_max(t0, Ordering::AcqRel);
                            t = Some(t0);
                        }
                        match self.word.compare_exchange_weak(
                            w,
                            w + ONE_IN,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                let start = if self.p.slow_threshold.is_some() {
                                    match t {
                                        Some(t) => t,
                                        None => now(),
                                    }
                                } else {
                                    0
                                };
                                return Ok(Ticket {
                                    generation: generation(w),
                                    kind: Kind::Probe,
                                    start,
                                });
                            }
                            Err(cur) => {
                                w = cur;
                                continue;
                            }
                        }
                    }
                    // Every slot is taken. Read the clock first and only
                    // then check that they still are, so that `t` is a time
                    // at which they were: a caller delayed after loading
                    // `w` must not pair that old word with a later clock
                    // reading, from after a slot was given back and taken
                    // again (and `full_since` moved on).
                    let t = now();
                    let cur = self.word.load(Ordering::Acquire);
                    if cur != w {
                        w = cur;
                        continue;
                    }
                    let since = self.full_since.load(Ordering::Acquire);
                    if t.saturating_sub(since) >= self.p.half_open_max_wait {
                        if let Some(raw) = self.transition(
                            HALF_OPEN,
                            generation(w),
                            OPEN,
                            Reason::HalfOpenTimeout,
                            t,
                            0,
                        ) {
                            *event = Some(raw);
                            return Err(Reject {
                                state: State::Open,
                                retry_after: raw.open_for,
                            });
                        }
                        w = self.word.load(Ordering::Acquire);
                        continue;
                    }
                    return Err(Reject {
                        state: State::HalfOpen,
                        retry_after: None,
                    });
                }
                _ => unreachable!("invalid breaker state word {w:#x}"),
            }
        }
    }

    /// Reports the outcome of an admitted call.
    #[inline]
    pub(crate) fn complete(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        now: &mut impl FnMut() -> u64,
    ) -> Completed {
        match ticket.kind {
            Kind::Passthrough => Completed::default(),
            Kind::Closed => self.complete_closed(ticket, outcome, now),
            Kind::Probe => self.complete_probe(ticket, outcome, now),
        }
    }

    /// A call was dropped before it completed: neither success nor failure.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        if ticket.kind == Kind::Probe {
            self.release_probe(ticket.generation);
        }
    }

    fn is_slow(&self, ticket: Ticket, now: &mut impl FnMut() -> u64) -> (bool, u64) {
        match self.p.slow_threshold {
            Some(th) => {
                let t = now();
                (t.saturating_sub(ticket.start) >= th, t)
            }
            None => (false, u64::MAX),
        }
    }

    #[inline]
    fn complete_closed(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        now: &mut impl FnMut() -> u64,
    ) -> Completed {
        let w = self.word.load(Ordering::Relaxed);
        if tag(w) != CLOSED || generation(w) != ticket.generation || outcome == Outcome::Ignored {
            // Admitted before the breaker last changed state, or not counted.
            return Completed::default();
        }
        let (slow, t) = self.is_slow(ticket, now);
        let mut t = t;
        let mut clock = || {
            if t == u64::MAX {
                t = now();
            }
            t
        };
        let fail = outcome == Outcome::Failure;
        let mut reason = None;
        if self.p.consecutive_failures > 0 {
            if fail {
                let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.p.consecutive_failures {
                    reason = Some(Reason::ConsecutiveFailures);
                }
            } else if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
        }
        let mut windowed = false;
        let tally = match &self.window {
            Window::Count(win) => {
                if !fail && !slow && win.clean() {
                    None
                } else {
                    windowed = true;
                    win.record(fail, slow)
                }
            }
            Window::Time(win) => win.record(clock(), fail, slow),
            Window::None => None,
        };
        if reason.is_none() {
            if let Some(tally) = tally {
                reason = self.judge(tally);
            }
        }
        let transition = reason.and_then(|reason| {
            self.transition(CLOSED, ticket.generation, OPEN, reason, clock(), 0)
        });
        Completed {
            slow,
            windowed,
            transition,
        }
    }

    /// Closed-state outcomes recorded in the count window, ever.
    pub(crate) fn windowed_total(&self) -> u64 {
        match &self.window {
            Window::Count(w) => w.total(),
            _ => 0,
        }
    }

    fn judge(&self, t: Tally) -> Option<Reason> {
        if t.calls == 0 || t.calls < self.p.minimum_calls {
            return None;
        }
        let calls = t.calls as f64;
        if t.failures as f64 >= self.p.failure_rate * calls {
            return Some(Reason::FailureRate);
        }
        match self.p.slow_rate {
            Some(r) if t.slow as f64 >= r * calls => Some(Reason::SlowCallRate),
            _ => None,
        }
    }

    fn complete_probe(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        now: &mut impl FnMut() -> u64,
    ) -> Completed {
        let (slow, t) = self.is_slow(ticket, now);
        let bad = outcome == Outcome::Failure
            || (outcome == Outcome::Success && slow && self.p.slow_rate.is_some());
        let transition = match outcome {
            Outcome::Ignored => {
                self.release_probe(ticket.generation);
                None
            }
            _ if bad => {
                let t = if t == u64::MAX { now() } else { t };
                self.transition(
                    HALF_OPEN,
                    ticket.generation,
                    OPEN,
                    Reason::ProbeFailed,
                    t,
                    0,
                )
            }
            _ => {
                let mut w = self.word.load(Ordering::Acquire);
                loop {
                    if tag(w) != HALF_OPEN || generation(w) != ticket.generation {
                        break None;
                    }
                    if successes(w) + 1 >= self.p.probe_successes {
                        let t = if t == u64::MAX { now() } else { t };
                        break self.transition(
                            HALF_OPEN,
                            ticket.generation,
                            CLOSED,
                            Reason::ProbesSucceeded,
                            t,
                            0,
                        );
                    }
                    match self.word.compare_exchange_weak(
                        w,
                        w - ONE_IN + ONE_SUCC,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break None,
                        Err(cur) => w = cur,
                    }
                }
            }
        };
        Completed {
            slow,
            windowed: false,
            transition,
        }
    }

    fn release_probe(&self, generation_: u32) {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if tag(w) != HALF_OPEN || generation(w) != generation_ || in_flight(w) == 0 {
                return;
            }
            match self.word.compare_exchange_weak(
                w,
                w - ONE_IN,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(cur) => w = cur,
            }
        }
    }

    fn open_duration(&self, trips: u32) -> u64 {
        let p = &self.p;
        let growth = p
            .open_multiplier
            .powi(trips.saturating_sub(1).min(1_000) as i32);
        let d = (p.open_base as f64 * growth).min(p.open_max as f64);
        let d = if p.open_jitter > 0.0 {
            d * (1.0 - p.open_jitter * rand::random::<f64>())
        } else {
            d
        };
        (d as u64).max(1)
    }

    /// Moves from (`from`, `from_gen`) to `to`, if the breaker is still
    /// there. Serialised by the transition lock; the hot paths never take it.
    fn transition(
        &self,
        from: u64,
        from_gen: u32,
        to: u64,
        reason: Reason,
        now: u64,
        first_probes: u32,
    ) -> Option<Raw> {
        let _g = lock(&self.transition_lock);
        // Only transitions change the tag and the generation, and they all
        // hold the lock: once checked here, (from, from_gen) stays put, and
        // the timing fields below are written for the right period.
        let w0 = self.word.load(Ordering::Acquire);
        if tag(w0) != from || generation(w0) != from_gen {
            return None;
        }
        let trips = if from == HALF_OPEN {
            self.trips.load(Ordering::Relaxed).saturating_add(1)
        } else {
            1
        };
        let mut open_for = None;
        if to == OPEN {
            let d = self.open_duration(trips);
            open_for = Some(d);
            self.opened_at.store(now, Ordering::Release);
            self.open_for.store(d, Ordering::Release);
        } else if to == HALF_OPEN {
            // The caller takes the first slot: with one probe, every slot
            // is taken from now on.
            self.full_since.fetch_max(now, Ordering::AcqRel);
        }
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if tag(w) != from || generation(w) != from_gen {
                return None;
            }
            let next_gen = generation(w).wrapping_add(1) & GEN_MASK as u32;
            let new = word(to, next_gen, first_probes);
            match self
                .word
                .compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.after_transition(from, to, trips);
                    return Some(Raw {
                        from: State::from_index(from),
                        to: State::from_index(to),
                        reason,
                        generation: next_gen,
                        at: now,
                        open_for,
                    });
                }
                Err(cur) => w = cur,
            }
        }
    }

    fn after_transition(&self, from: u64, to: u64, trips: u32) {
        if to == OPEN {
            self.trips.store(trips, Ordering::Relaxed);
        } else if to == CLOSED {
            self.trips.store(0, Ordering::Relaxed);
        }
        if from == CLOSED {
            self.consecutive.store(0, Ordering::Relaxed);
            match &self.window {
                Window::Count(w) => w.reset(),
                Window::Time(w) => w.reset(),
                Window::None => {}
            }
        }
    }

    /// Sets a state by hand (`Closed` resets the breaker).
    pub(crate) fn force(&self, to: State, now: u64) -> Option<Raw> {
        let to = tag_of(to);
        let _g = lock(&self.transition_lock);
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if tag(w) == to && (to != CLOSED || self.trips.load(Ordering::Relaxed) == 0) {
                return None;
            }
            let next_gen = generation(w).wrapping_add(1) & GEN_MASK as u32;
            match self.word.compare_exchange(
                w,
                word(to, next_gen, 0),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let from = tag(w);
                    if to == CLOSED || to == DISABLED {
                        self.trips.store(0, Ordering::Relaxed);
                    }
                    if from == CLOSED {
                        self.after_transition(from, to, 0);
                    }
                    return Some(Raw {
                        from: State::from_index(from),
                        to: State::from_index(to),
                        reason: Reason::Forced,
                        generation: next_gen,
                        at: now,
                        open_for: None,
                    });
                }
                Err(cur) => w = cur,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            consecutive_failures: 3,
            failure_rate: 0.5,
            minimum_calls: 4,
            slow_threshold: None,
            slow_rate: None,
            probes: 2,
            probe_successes: 2,
            open_base: 100,
            open_multiplier: 2.0,
            open_max: 350,
            open_jitter: 0.0,
            half_open_max_wait: 1_000,
        }
    }

    fn acquire(c: &Core, t: u64) -> (Result<Ticket, Reject>, Option<Raw>) {
        let mut ev = None;
        let r = c.acquire(&mut || t, &mut ev);
        (r, ev)
    }

    #[test]
    fn word_packs_and_unpacks() {
        let w = word(HALF_OPEN, 12345, 7) + 3 * ONE_SUCC;
        assert_eq!(
            (tag(w), generation(w), in_flight(w), successes(w)),
            (HALF_OPEN, 12345, 7, 3)
        );
    }

    #[test]
    fn full_cycle_with_growing_open_duration() {
        let c = Core::new(params(), WindowSpec::None);
        for _ in 0..2 {
            let t = acquire(&c, 0).0.unwrap();
            assert!(
                c.complete(t, Outcome::Failure, &mut || 0)
                    .transition
                    .is_none()
            );
        }
        let t = acquire(&c, 0).0.unwrap();
        let raw = c
            .complete(t, Outcome::Failure, &mut || 10)
            .transition
            .unwrap();
        assert_eq!(
            (raw.to, raw.reason, raw.open_for),
            (State::Open, Reason::ConsecutiveFailures, Some(100))
        );
        assert_eq!(acquire(&c, 50).0.unwrap_err().retry_after, Some(60));
        // Open elapsed: the caller becomes the first probe.
        let (p1, ev) = acquire(&c, 110);
        assert_eq!(ev.unwrap().to, State::HalfOpen);
        let p1 = p1.unwrap();
        let p2 = acquire(&c, 110).0.unwrap();
        assert_eq!(acquire(&c, 110).0.unwrap_err().state, State::HalfOpen);
        // A probe failure reopens, for twice as long.
        let raw = c
            .complete(p1, Outcome::Failure, &mut || 120)
            .transition
            .unwrap();
        assert_eq!((raw.to, raw.open_for), (State::Open, Some(200)));
        // The other probe's late outcome is ignored.
        assert!(
            c.complete(p2, Outcome::Success, &mut || 121)
                .transition
                .is_none()
        );
        assert_eq!(c.state(), State::Open);
        // Third trip is capped.
        let p = acquire(&c, 320).0.unwrap();
        let raw = c
            .complete(p, Outcome::Failure, &mut || 320)
            .transition
            .unwrap();
        assert_eq!(raw.open_for, Some(350));
        let p = acquire(&c, 670).0.unwrap();
        let q = acquire(&c, 670).0.unwrap();
        assert!(
            c.complete(p, Outcome::Success, &mut || 671)
                .transition
                .is_none()
        );
        let raw = c
            .complete(q, Outcome::Success, &mut || 672)
            .transition
            .unwrap();
        assert_eq!((raw.from, raw.to), (State::HalfOpen, State::Closed));
        // Closing resets the open duration.
        for i in 0..3 {
            let t = acquire(&c, 700).0.unwrap();
            let r = c.complete(t, Outcome::Failure, &mut || 700).transition;
            assert_eq!(r.is_some(), i == 2);
            if let Some(raw) = r {
                assert_eq!(raw.open_for, Some(100));
            }
        }
    }

    #[test]
    fn cancelled_probe_frees_its_slot_and_hung_probe_times_out() {
        let c = Core::new(params(), WindowSpec::None);
        c.force(State::Closed, 0);
        for _ in 0..3 {
            let t = acquire(&c, 0).0.unwrap();
            c.complete(t, Outcome::Failure, &mut || 0);
        }
        let p1 = acquire(&c, 100).0.unwrap();
        let _hung = acquire(&c, 100).0.unwrap();
        assert!(acquire(&c, 100).0.is_err());
        c.cancel(p1);
        let _p3 = acquire(&c, 100).0.unwrap();
        assert_eq!(c.half_open_counts(), (2, 0));
        // Both slots held past the max wait: the breaker reopens.
        assert_eq!(acquire(&c, 1_099).0.unwrap_err().state, State::HalfOpen);
        let (r, ev) = acquire(&c, 1_100);
        assert_eq!(r.unwrap_err().state, State::Open);
        assert_eq!(ev.unwrap().reason, Reason::HalfOpenTimeout);
    }

    #[test]
    fn failure_rate_needs_minimum_calls_and_success_never_trips() {
        let mut p = params();
        p.consecutive_failures = 0;
        let c = Core::new(p, WindowSpec::Count(4));
        let outcomes = [Outcome::Failure, Outcome::Success, Outcome::Failure];
        for o in outcomes {
            let t = acquire(&c, 0).0.unwrap();
            assert!(c.complete(t, o, &mut || 0).transition.is_none());
        }
        let t = acquire(&c, 0).0.unwrap();
        // 4th call, 2/4 failed = 50%: but a success never trips.
        assert!(
            c.complete(t, Outcome::Success, &mut || 0)
                .transition
                .is_none()
        );
        let t = acquire(&c, 0).0.unwrap();
        let raw = c
            .complete(t, Outcome::Failure, &mut || 0)
            .transition
            .unwrap();
        assert_eq!(raw.reason, Reason::FailureRate);
    }

    #[test]
    fn forced_states() {
        let c = Core::new(params(), WindowSpec::Count(4));
        assert_eq!(c.force(State::ForcedOpen, 0).unwrap().to, State::ForcedOpen);
        assert!(c.force(State::ForcedOpen, 0).is_none());
        assert_eq!(
            acquire(&c, 0).0.unwrap_err(),
            Reject {
                state: State::ForcedOpen,
                retry_after: None
            }
        );
        c.force(State::Disabled, 0);
        for _ in 0..10 {
            let t = acquire(&c, 0).0.unwrap();
            assert!(
                c.complete(t, Outcome::Failure, &mut || 0)
                    .transition
                    .is_none()
            );
        }
        c.force(State::Closed, 0);
        assert_eq!(c.state(), State::Closed);
    }
}

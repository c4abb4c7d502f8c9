//! Property test: the atomic state machine against a plain sequential model.

use std::collections::VecDeque;

use proptest::prelude::*;
use weft_core::Outcome;

use super::core::{Core, Kind, Params, Ticket, WindowSpec};
use super::state::{Reason, State};

const WINDOW: usize = 6;

/// A transition as (from, to, reason).
type Ev = (State, State, Reason);

/// The time-window variant runs in units of 10 ms (so that a few advances
/// cross the window's one-second buckets); the count variant in nanoseconds.
const TIME_SCALE: u64 = 10_000_000;
const TIME_WINDOW_SECS: u64 = 3;
const NANOS: u64 = 1_000_000_000;

fn params(consecutive: u32, probes: u32, successes: u32, slow: bool, scale: u64) -> Params {
    Params {
        consecutive_failures: consecutive,
        failure_rate: 0.5,
        minimum_calls: 4,
        slow_threshold: slow.then_some(30 * scale),
        slow_rate: slow.then_some(0.5),
        probes,
        probe_successes: successes,
        open_base: 100 * scale,
        open_multiplier: 2.0,
        open_max: 1_000 * scale,
        open_jitter: 0.0,
        half_open_max_wait: 500 * scale,
    }
}

/// The breaker as a textbook would write it: one thread, plain fields.
#[derive(Debug)]
struct Model {
    p: Params,
    state: State,
    generation: u32,
    in_flight: u32,
    successes: u32,
    consecutive: u32,
    /// (when, failed, slow), oldest first.
    window: VecDeque<(u64, bool, bool)>,
    /// `Some(secs)`: a time window of whole seconds; `None`: the last
    /// `WINDOW` calls.
    time_window: Option<u64>,
    opened_at: u64,
    open_for: u64,
    /// When every half-open probe slot last became taken.
    full_since: u64,
    trips: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MTicket {
    generation: u32,
    kind: Kind,
    start: u64,
}

impl Model {
    fn new(p: Params, time_window: Option<u64>) -> Self {
        Model {
            p,
            state: State::Closed,
            generation: 0,
            in_flight: 0,
            successes: 0,
            consecutive: 0,
            window: VecDeque::new(),
            time_window,
            opened_at: 0,
            open_for: 0,
            full_since: 0,
            trips: 0,
        }
    }

    fn go(&mut self, to: State, reason: Reason, now: u64) -> Ev {
        let from = self.state;
        if from == State::Closed {
            self.window.clear();
            self.consecutive = 0;
        }
        match to {
            State::Open => {
                self.trips = if from == State::HalfOpen {
                    self.trips + 1
                } else {
                    1
                };
                let d = (self.p.open_base as f64
                    * self.p.open_multiplier.powi(self.trips as i32 - 1))
                .min(self.p.open_max as f64);
                self.open_for = d as u64;
                self.opened_at = now;
            }
            State::HalfOpen => self.full_since = now,
            State::Closed => self.trips = 0,
            _ => {}
        }
        if reason == Reason::Forced && matches!(to, State::Closed | State::Disabled) {
            self.trips = 0;
        }
        self.state = to;
        self.generation += 1;
        self.in_flight = 0;
        self.successes = 0;
        (from, to, reason)
    }

    fn acquire(&mut self, now: u64) -> (Result<MTicket, State>, Option<Ev>) {
        let gen_ = self.generation;
        match self.state {
            State::Closed => (
                Ok(MTicket {
                    generation: gen_,
                    kind: Kind::Closed,
                    start: now,
                }),
                None,
            ),
            State::Disabled => (
                Ok(MTicket {
                    generation: gen_,
                    kind: Kind::Passthrough,
                    start: 0,
                }),
                None,
            ),
            State::ForcedOpen => (Err(State::ForcedOpen), None),
            State::Open => {
                if now < self.opened_at + self.open_for {
                    return (Err(State::Open), None);
                }
                let ev = self.go(State::HalfOpen, Reason::OpenElapsed, now);
                self.in_flight = 1;
                (
                    Ok(MTicket {
                        generation: self.generation,
                        kind: Kind::Probe,
                        start: now,
                    }),
                    Some(ev),
                )
            }
            State::HalfOpen => {
                if self.in_flight < self.p.probes {
                    self.in_flight += 1;
                    if self.in_flight == self.p.probes {
                        self.full_since = now;
                    }
                    return (
                        Ok(MTicket {
                            generation: gen_,
                            kind: Kind::Probe,
                            start: now,
                        }),
                        None,
                    );
                }
                if now - self.full_since >= self.p.half_open_max_wait {
                    let ev = self.go(State::Open, Reason::HalfOpenTimeout, now);
                    return (Err(State::Open), Some(ev));
                }
                (Err(State::HalfOpen), None)
            }
        }
    }

    fn complete(&mut self, t: MTicket, o: Outcome, now: u64) -> Option<Ev> {
        let slow = self.p.slow_threshold.is_some_and(|th| now - t.start >= th);
        match t.kind {
            Kind::Passthrough => None,
            Kind::Closed => {
                if self.state != State::Closed
                    || self.generation != t.generation
                    || o == Outcome::Ignored
                {
                    return None;
                }
                let fail = o == Outcome::Failure;
                let mut reason = None;
                if self.p.consecutive_failures > 0 {
                    if fail {
                        self.consecutive += 1;
                        if self.consecutive >= self.p.consecutive_failures {
                            reason = Some(Reason::ConsecutiveFailures);
                        }
                    } else {
                        self.consecutive = 0;
                    }
                }
                self.window.push_back((now, fail, slow));
                if self.time_window.is_none() && self.window.len() > WINDOW {
                    self.window.pop_front();
                }
                if reason.is_none() && (fail || slow) {
                    let (calls, f, s) = self.tally(now);
                    let (f, s) = (f as f64, s as f64);
                    if calls >= self.p.minimum_calls {
                        if f >= self.p.failure_rate * calls as f64 {
                            reason = Some(Reason::FailureRate);
                        } else if self.p.slow_rate.is_some_and(|r| s >= r * calls as f64) {
                            reason = Some(Reason::SlowCallRate);
                        }
                    }
                }
                reason.map(|r| self.go(State::Open, r, now))
            }
            Kind::Probe => {
                if self.state != State::HalfOpen || self.generation != t.generation {
                    return None;
                }
                let bad = o == Outcome::Failure
                    || (o == Outcome::Success && slow && self.p.slow_rate.is_some());
                match o {
                    Outcome::Ignored => {
                        self.in_flight -= 1;
                        None
                    }
                    _ if bad => Some(self.go(State::Open, Reason::ProbeFailed, now)),
                    _ => {
                        if self.successes + 1 >= self.p.probe_successes {
                            Some(self.go(State::Closed, Reason::ProbesSucceeded, now))
                        } else {
                            self.in_flight -= 1;
                            self.successes += 1;
                            None
                        }
                    }
                }
            }
        }
    }

    /// (calls, failures, slow) in the window at `now`.
    fn tally(&self, now: u64) -> (u64, u64, u64) {
        let inside = |t: u64| match self.time_window {
            Some(secs) => t / NANOS + secs > now / NANOS,
            None => true,
        };
        let w = self.window.iter().filter(|x| inside(x.0));
        let (mut c, mut f, mut s) = (0, 0, 0);
        for x in w {
            c += 1;
            f += u64::from(x.1);
            s += u64::from(x.2);
        }
        (c, f, s)
    }

    fn cancel(&mut self, t: MTicket) {
        if t.kind == Kind::Probe && self.state == State::HalfOpen && self.generation == t.generation
        {
            self.in_flight -= 1;
        }
    }

    fn force(&mut self, to: State, now: u64) -> Option<Ev> {
        if self.state == to && (to != State::Closed || self.trips == 0) {
            return None;
        }
        Some(self.go(to, Reason::Forced, now))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Complete(usize, Outcome),
    Cancel(usize),
    Advance(u64),
    Force(State),
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Failure),
        3 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ];
    prop_oneof![
        6 => Just(Op::Acquire),
        6 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Complete(i, o)),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (0u64..200).prop_map(Op::Advance),
        1 => prop_oneof![
            Just(State::Closed),
            Just(State::ForcedOpen),
            Just(State::Disabled),
        ]
        .prop_map(Op::Force),
    ]
}

fn same(t: &Ticket, m: &MTicket) -> bool {
    t.generation == m.generation && t.kind == m.kind
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn core_matches_model(
        consecutive in prop_oneof![Just(0u32), 1u32..5],
        probes in 1u32..4,
        successes in 1u32..4,
        slow in any::<bool>(),
        time in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let scale = if time { TIME_SCALE } else { 1 };
        let p = params(consecutive, probes, successes, slow, scale);
        let (spec, tw) = if time {
            (WindowSpec::TimeSecs(TIME_WINDOW_SECS as usize), Some(TIME_WINDOW_SECS))
        } else {
            (WindowSpec::Count(WINDOW), None)
        };
        let core = Core::new(p.clone(), spec);
        let mut model = Model::new(p, tw);
        let mut now = 0u64;
        let mut held: Vec<(Ticket, MTicket)> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let mut ev = None;
                    let r = core.acquire(&mut || now, &mut ev);
                    let (mr, mev) = model.acquire(now);
                    prop_assert_eq!(ev.map(|e| (e.from, e.to, e.reason)), mev);
                    match (r, mr) {
                        (Ok(t), Ok(m)) => {
                            prop_assert!(same(&t, &m), "{:?} vs {:?}", t, m);
                            held.push((t, m));
                        }
                        (Err(rej), Err(ms)) => prop_assert_eq!(rej.state, ms),
                        (r, mr) => prop_assert!(false, "core {:?} vs model {:?}", r, mr),
                    }
                }
                Op::Complete(i, o) if !held.is_empty() => {
                    let (t, m) = held.swap_remove(i % held.len());
                    let done = core.complete(t, o, &mut || now);
                    let mev = model.complete(m, o, now);
                    prop_assert_eq!(done.transition.map(|e| (e.from, e.to, e.reason)), mev);
                }
                Op::Cancel(i) if !held.is_empty() => {
                    let (t, m) = held.swap_remove(i % held.len());
                    core.cancel(t);
                    model.cancel(m);
                }
                Op::Advance(d) => now += d * scale,
                Op::Force(s) => {
                    let ev = core.force(s, now);
                    let mev = model.force(s, now);
                    prop_assert_eq!(ev.map(|e| (e.from, e.to, e.reason)), mev);
                }
                _ => {}
            }
            prop_assert_eq!(core.state(), model.state);
            if model.state == State::HalfOpen {
                prop_assert_eq!(core.half_open_counts(), (model.in_flight, model.successes));
                prop_assert!(model.in_flight <= probes);
            }
            if model.state == State::Closed {
                let t = core.tally(now);
                let (calls, failures, slow_calls) = model.tally(now);
                prop_assert_eq!((t.calls, t.failures, t.slow), (calls, failures, slow_calls));
            }
        }
    }
}

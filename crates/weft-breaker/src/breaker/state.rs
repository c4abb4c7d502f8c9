//! The breaker's states and the transitions between them.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are counted; the breaker trips to
    /// [`Open`](State::Open) when a trip condition holds.
    Closed,
    /// Calls are rejected until the open duration has passed; the first call
    /// after it moves the breaker to [`HalfOpen`](State::HalfOpen).
    Open,
    /// A limited number of probe calls pass at a time; enough successes close
    /// the breaker, a failure (or every probe slot staying taken for the
    /// half-open max wait) opens it again.
    HalfOpen,
    /// Set by hand: every call is rejected until the breaker is reset.
    ForcedOpen,
    /// Set by hand: every call passes and nothing is counted.
    Disabled,
}

impl State {
    /// A short lowercase name (`closed`, `open`, `half_open`, `forced_open`,
    /// `disabled`), as used in tracing events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// The state's index, as used by the `weft_breaker_state` gauge:
    /// closed 0, open 1, half-open 2, forced open 3, disabled 4.
    pub fn as_index(self) -> usize {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    pub(crate) fn from_index(i: u64) -> State {
        match i {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// As many failures in a row as configured.
    ConsecutiveFailures,
    /// The failure rate over the window reached the threshold.
    FailureRate,
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate,
    /// The open duration passed and a call arrived: it became the first probe.
    OpenElapsed,
    /// A probe failed (or was slow, when slow calls are counted).
    ProbeFailed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// Every probe slot stayed taken, none given back, for the half-open
    /// max wait (a probe never completed).
    HalfOpenTimeout,
    /// Set by hand ([`force_open`](crate::CircuitBreaker::force_open),
    /// [`disable`](crate::CircuitBreaker::disable),
    /// [`reset`](crate::CircuitBreaker::reset)).
    Forced,
}

impl Reason {
    /// A short lowercase name, as used in tracing events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::FailureRate => "failure_rate",
            Reason::SlowCallRate => "slow_call_rate",
            Reason::OpenElapsed => "open_elapsed",
            Reason::ProbeFailed => "probe_failed",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::HalfOpenTimeout => "half_open_timeout",
            Reason::Forced => "forced",
        }
    }
}

/// One state change, as delivered to the callback, the broadcast channel and
/// tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// Increases by one with every transition of this breaker, so that
    /// subscribers can order transitions that raced.
    pub generation: u64,
    /// When it happened (tokio time).
    pub at: Instant,
    /// For a transition to [`State::Open`]: how long the breaker stays open.
    pub open_for: Option<Duration>,
}

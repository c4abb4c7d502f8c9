//! The breaker's errors.

use std::fmt;
use std::time::Duration;

use super::state::State;

/// The breaker rejected a call without running it.
///
/// Returned by [`CircuitBreaker::call`](crate::CircuitBreaker::call) (inside
/// [`CallError::Open`]) and, boxed, by the [`Breaker`](crate::Breaker)
/// service's `poll_ready`; find it with `downcast_ref::<Open>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub(crate) state: State,
    pub(crate) retry_after: Option<Duration>,
}

impl Open {
    /// The state that rejected the call: [`State::Open`],
    /// [`State::HalfOpen`] (every probe slot taken) or [`State::ForcedOpen`].
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker lets the next probe through, when that is
    /// known (`None` when forced open or when the half-open probe slots are
    /// all taken).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after) {
            (State::HalfOpen, _) => {
                f.write_str("circuit breaker is half-open and every probe slot is taken")
            }
            (State::ForcedOpen, _) => f.write_str("circuit breaker is forced open"),
            (_, Some(d)) => write!(f, "circuit breaker is open; next probe in {d:?}"),
            (_, None) => f.write_str("circuit breaker is open"),
        }
    }
}

impl std::error::Error for Open {}

/// The error of [`CircuitBreaker::call`](crate::CircuitBreaker::call): the
/// breaker rejected the call, or the call ran and failed.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The breaker rejected the call; the future was not polled.
    #[error(transparent)]
    Open(Open),
    /// The call ran and returned this error.
    #[error("call failed: {0}")]
    Inner(E),
}

impl<E> CallError<E> {
    /// The call's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Inner(e) => Some(e),
            CallError::Open(_) => None,
        }
    }

    /// Whether the breaker rejected the call.
    pub fn is_open(&self) -> bool {
        matches!(self, CallError::Open(_))
    }
}

impl<E: fmt::Debug> fmt::Debug for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Open(o) => f.debug_tuple("Open").field(o).finish(),
            CallError::Inner(e) => f.debug_tuple("Inner").field(e).finish(),
        }
    }
}

/// A breaker configuration that cannot work; the message says what to pass
/// instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A count-based window of 0 calls, or more than 1,000,000.
    #[error("count window of {0} calls: pass between 1 and 1000000")]
    CountWindow(usize),
    /// A time-based window shorter than a second, longer than an hour, or
    /// not a whole number of seconds.
    #[error("time window of {0:?}: pass a whole number of seconds between 1 s and 3600 s")]
    TimeWindow(Duration),
    /// A rate outside `(0, 1]`.
    #[error("{what} of {value}: pass a fraction in (0, 1], for example 0.5")]
    Rate {
        /// Which rate.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count that must be at least one was zero (or too large).
    #[error("{what} of {value}: pass between 1 and {max}")]
    Count {
        /// Which count.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// `minimum_calls` larger than a count-based window can ever hold.
    #[error("minimum calls {minimum} exceed the count window of {window}: pass at most {window}")]
    MinimumCalls {
        /// The minimum given.
        minimum: u64,
        /// The window size.
        window: usize,
    },
    /// A duration that must be positive was zero.
    #[error("{0} of zero: pass a positive duration")]
    ZeroDuration(&'static str),
    /// An open-duration multiplier below 1 or not finite.
    #[error("open backoff multiplier {0}: pass a finite number >= 1.0")]
    Multiplier(f64),
    /// A jitter fraction outside `[0, 1]`.
    #[error("open jitter {0}: pass a fraction in [0, 1]")]
    Jitter(f64),
    /// No trip condition: the breaker could never open.
    #[error("no trip condition: set consecutive_failures or a sliding window")]
    NoTripCondition,
}

//! The breaker's builder.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::circuit::CircuitBreaker;
use super::core::{MAX_PROBES, Params, WindowSpec};
use super::error::BuildError;
use super::state::Transition;

/// The window over which the failure rate and the slow-call rate are
/// measured in the closed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `n` calls. Lock-free.
    Count(usize),
    /// The calls of the last `d` (whole seconds, one bucket per second).
    /// Lock-free except for starting a new second in a bucket, once a second.
    Time(Duration),
    /// No window: only `consecutive_failures` trips the breaker.
    Disabled,
}

pub(crate) type Callback = Arc<dyn Fn(&Transition) + Send + Sync>;

/// Builds a [`CircuitBreaker`]. Defaults follow resilience4j's, which users
/// of circuit breakers already know.
///
/// ```
/// use std::time::Duration;
/// use weft_breaker::{CircuitBreaker, SlidingWindow};
///
/// let breaker = CircuitBreaker::builder()
///     .name("payments")
///     .consecutive_failures(5)
///     .sliding_window(SlidingWindow::Count(50))
///     .minimum_calls(20)
///     .failure_rate(0.5)
///     .open_duration(Duration::from_secs(10))
///     .open_backoff(2.0, Duration::from_secs(300))
///     .half_open_probes(3)
///     .build()
///     .unwrap();
/// assert_eq!(breaker.name(), "payments");
/// ```
#[derive(Clone)]
pub struct Builder {
    pub(crate) name: Cow<'static, str>,
    consecutive_failures: u32,
    window: SlidingWindow,
    failure_rate: f64,
    minimum_calls: u64,
    slow: Option<(Duration, f64)>,
    probes: u32,
    probe_successes: Option<u32>,
    open_duration: Duration,
    open_multiplier: f64,
    open_max: Duration,
    open_jitter: f64,
    half_open_max_wait: Duration,
    pub(crate) event_capacity: usize,
    pub(crate) callback: Option<Callback>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("window", &self.window)
            .field("failure_rate", &self.failure_rate)
            .field("minimum_calls", &self.minimum_calls)
            .field("slow", &self.slow)
            .field("probes", &self.probes)
            .field("probe_successes", &self.probe_successes)
            .field("open_duration", &self.open_duration)
            .field("open_multiplier", &self.open_multiplier)
            .field("open_max", &self.open_max)
            .field("open_jitter", &self.open_jitter)
            .field("half_open_max_wait", &self.half_open_max_wait)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

fn rate(what: &'static str, value: f64) -> Result<f64, BuildError> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(BuildError::Rate { what, value })
    }
}

fn count(what: &'static str, value: u64, max: u64) -> Result<u64, BuildError> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(BuildError::Count { what, value, max })
    }
}

/// The largest [`Builder::event_capacity`] accepted.
const MAX_EVENT_CAPACITY: usize = 1 << 20;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Builder {
    /// A builder with the defaults listed on each setter.
    pub fn new() -> Self {
        Builder {
            name: Cow::Borrowed("breaker"),
            consecutive_failures: 0,
            window: SlidingWindow::Count(100),
            failure_rate: 0.5,
            minimum_calls: 100,
            slow: None,
            probes: 10,
            probe_successes: None,
            open_duration: Duration::from_secs(60),
            open_multiplier: 1.0,
            open_max: Duration::from_secs(600),
            open_jitter: 0.0,
            half_open_max_wait: Duration::from_secs(60),
            event_capacity: 32,
            callback: None,
        }
    }

    /// The name used in tracing events and the `name` metric label.
    /// Default `"breaker"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Trip after `n` failures in a row (a success resets the count;
    /// ignored outcomes do not). Default: off, the window decides.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The window the rates are measured over. Default
    /// `SlidingWindow::Count(100)` (resilience4j's): large enough that one
    /// unlucky burst does not trip, small enough to react within 100 calls.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// Trip when at least this fraction of the window's calls failed.
    /// Default 0.5.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// The rates are judged only once the window holds this many calls.
    /// Default 100 (a full default window), so that the first few calls
    /// after start cannot trip the breaker on their own.
    pub fn minimum_calls(mut self, n: u64) -> Self {
        self.minimum_calls = n;
        self
    }

    /// Count calls that take at least `threshold` as slow, and trip when at
    /// least `rate` of the window's calls were slow. In half-open, a slow
    /// probe counts as a failed one. Default: off (timing a call reads the
    /// clock twice; only pay for it when asked).
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.slow = Some((threshold, rate));
        self
    }

    /// How many probe calls half-open admits at a time. Default 10.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.probes = n;
        self
    }

    /// How many probes must succeed before the breaker closes. Default: the
    /// number of probes.
    pub fn probe_successes(mut self, n: u32) -> Self {
        self.probe_successes = Some(n);
        self
    }

    /// How long the breaker stays open after a trip. Default 60 s.
    pub fn open_duration(mut self, d: Duration) -> Self {
        self.open_duration = d;
        self
    }

    /// On repeated trips (half-open reopening without closing in between),
    /// multiply the open duration by `multiplier` each time, up to `max`.
    /// Default: multiplier 1.0 (constant), max 600 s.
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.open_multiplier = multiplier;
        self.open_max = max;
        self
    }

    /// Shorten each open duration by a random fraction up to `fraction`, so
    /// that many clients' breakers do not probe in lockstep. Default 0.
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.open_jitter = fraction;
        self
    }

    /// The longest the breaker stays half-open with every probe slot taken:
    /// once every slot has been taken for this long without one being given
    /// back, a caller finding no slot reopens the breaker (reason
    /// [`HalfOpenTimeout`](crate::Reason::HalfOpenTimeout)), so a probe that
    /// never completes cannot hold its slot forever. It is measured from
    /// the moment the last free slot was taken, not from entering
    /// half-open: a long half-open period whose probes keep completing
    /// never times out. Default 60 s.
    pub fn half_open_max_wait(mut self, d: Duration) -> Self {
        self.half_open_max_wait = d;
        self
    }

    /// Calls `f` on every state transition (after the transition, outside
    /// any lock; keep it quick). It runs on the thread of the call that made
    /// the transition. A panic in `f` is caught, logged with
    /// `tracing::error!` and counted in
    /// [`Stats::callback_panics`](crate::Stats::callback_panics): it never
    /// reaches that call, and the transition stands.
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }

    /// The capacity of the broadcast channel behind
    /// [`CircuitBreaker::subscribe`]; a subscriber that falls further behind
    /// misses transitions (and is told so). Between 1 and 1,048,576
    /// (`1 << 20`; the buffer is allocated when the breaker is built): `build`
    /// refuses anything else. Default 32.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    pub(crate) fn params(&self) -> Result<(Params, WindowSpec), BuildError> {
        let window = match self.window {
            SlidingWindow::Count(n) => {
                if !(1..=1_000_000).contains(&n) {
                    return Err(BuildError::CountWindow(n));
                }
                WindowSpec::Count(n)
            }
            SlidingWindow::Time(d) => {
                if d < Duration::from_secs(1)
                    || d > Duration::from_secs(3600)
                    || d.subsec_nanos() != 0
                {
                    return Err(BuildError::TimeWindow(d));
                }
                WindowSpec::TimeSecs(d.as_secs() as usize)
            }
            SlidingWindow::Disabled => WindowSpec::None,
        };
        if window == WindowSpec::None && self.consecutive_failures == 0 {
            return Err(BuildError::NoTripCondition);
        }
        let failure_rate = rate("failure rate", self.failure_rate)?;
        let minimum_calls = count("minimum calls", self.minimum_calls, u64::from(u32::MAX))?;
        if let WindowSpec::Count(n) = window {
            if minimum_calls > n as u64 {
                return Err(BuildError::MinimumCalls {
                    minimum: minimum_calls,
                    window: n,
                });
            }
        }
        let (slow_threshold, slow_rate) = match self.slow {
            Some((th, r)) => {
                if th.is_zero() {
                    return Err(BuildError::ZeroDuration("slow call threshold"));
                }
                (Some(nanos(th)), Some(rate("slow call rate", r)?))
            }
            None => (None, None),
        };
        let max = u64::from(MAX_PROBES);
        let probes = count("half-open probes", u64::from(self.probes), max)? as u32;
        let probe_successes = count(
            "probe successes",
            u64::from(self.probe_successes.unwrap_or(self.probes)),
            max,
        )? as u32;
        if self.open_duration.is_zero() {
            return Err(BuildError::ZeroDuration("open duration"));
        }
        if self.half_open_max_wait.is_zero() {
            return Err(BuildError::ZeroDuration("half-open max wait"));
        }
        if !(self.open_multiplier.is_finite() && self.open_multiplier >= 1.0) {
            return Err(BuildError::Multiplier(self.open_multiplier));
        }
        if !(0.0..=1.0).contains(&self.open_jitter) {
            return Err(BuildError::Jitter(self.open_jitter));
        }
        count(
            "event capacity",
            u64::try_from(self.event_capacity).unwrap_or(u64::MAX),
            MAX_EVENT_CAPACITY as u64,
        )?;
        Ok((
            Params {
                consecutive_failures: self.consecutive_failures,
                failure_rate,
                minimum_calls,
                slow_threshold,
                slow_rate,
                probes,
                probe_successes,
                open_base: nanos(self.open_duration),
                open_multiplier: self.open_multiplier,
                open_max: nanos(self.open_max.max(self.open_duration)),
                open_jitter: self.open_jitter,
                half_open_max_wait: nanos(self.half_open_max_wait),
            },
            window,
        ))
    }

    /// Builds the breaker, or says which setting cannot work.
    pub fn build(self) -> Result<CircuitBreaker, BuildError> {
        CircuitBreaker::from_builder(self)
    }
}

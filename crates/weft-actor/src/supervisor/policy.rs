//! Restart policies: strategy, restart type, intensity and backoff.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Which children are restarted when one fails (Erlang/OTP strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the failed child is restarted. The default.
    #[default]
    OneForOne,
    /// Every child is stopped (in reverse start order) and all are restarted
    /// (in start order): for children that only make sense together.
    OneForAll,
    /// The failed child and every child started after it are stopped (in
    /// reverse order) and restarted (in order): for children that depend on
    /// the ones before them.
    RestForOne,
}

/// When a child is restarted after its incarnation ends (Erlang/OTP restart
/// types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Restart {
    /// Always restarted, whatever the exit (even `ctx.stop()`). The default.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (panic, failed start, kill).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// Whether a child with this restart type is restarted after `exit`.
    pub fn restarts_after(self, exit: &crate::Exit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => exit.is_abnormal(),
            Restart::Temporary => false,
        }
    }
}

/// At most `max_restarts` restarts within `period`; one more and the
/// supervisor gives up: it stops its children and exits with
/// [`Exit::Escalated`](crate::Exit::Escalated), which its own supervisor
/// sees as a failure.
///
/// The default, 3 restarts in 5 s, follows OTP's spirit (OTP's own default
/// is 1 in 5 s; 3 tolerates a short burst of bad messages).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use weft_actor::supervisor::Intensity;
///
/// let mut i = Intensity::new(2, Duration::from_secs(5));
/// let t = Instant::now();
/// assert!(i.record(t));
/// assert!(i.record(t + Duration::from_secs(1)));
/// assert!(!i.record(t + Duration::from_secs(2)), "a third restart within 5 s escalates");
/// ```
#[derive(Debug, Clone)]
pub struct Intensity {
    max_restarts: u32,
    period: Duration,
    history: VecDeque<Instant>,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::new(3, Duration::from_secs(5))
    }
}

impl Intensity {
    /// At most `max_restarts` within `period`.
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Intensity {
            max_restarts,
            period,
            history: VecDeque::new(),
        }
    }

    /// The allowed restarts per period.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Records a restart at `now`; `false` if it exceeds the intensity (the
    /// supervisor must escalate instead of restarting).
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.history.front() {
            if now.saturating_duration_since(t) >= self.period {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.history.push_back(now);
        self.history.len() <= self.max_restarts as usize
    }

    /// Forgets every recorded restart (a fresh supervisor incarnation).
    pub fn reset(&mut self) {
        self.history.clear();
    }
}

/// Delay before a restart, growing exponentially with the child's recent
/// failures, with random jitter so that many children failing together do
/// not restart in lockstep (Akka's `restartWithBackoff`).
///
/// `delay(n) = min(max, min * factor^n) * (1 ± jitter)`, where `n` is the
/// number of restarts of that child within the intensity period before this
/// one.
///
/// ```
/// use std::time::Duration;
/// use weft_actor::supervisor::Backoff;
///
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0);
/// assert_eq!(b.delay(0), Duration::from_millis(100));
/// assert_eq!(b.delay(2), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// assert_eq!(Backoff::none().delay(5), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
}

impl Default for Backoff {
    /// 10 ms doubling up to 1 s, ±20 % jitter: a crash loop does not spin a
    /// core, and a one-off failure is restarted almost at once.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Backoff {
    /// Exponential backoff from `min` to `max` (factor 2, ±20 % jitter).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            factor: 2.0,
            jitter: 0.2,
        }
    }

    /// Restart at once (OTP's behaviour).
    pub fn none() -> Self {
        Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
            factor: 1.0,
            jitter: 0.0,
        }
    }

    /// The growth factor per recent failure (default 2; at least 1).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// The random jitter, as a fraction of the delay (default 0.2; clamped
    /// to 0..=1).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The delay before the restart that follows `recent` earlier restarts.
    pub fn delay(&self, recent: u32) -> Duration {
        if self.max.is_zero() {
            return Duration::ZERO;
        }
        let base = self.min.as_secs_f64() * self.factor.powi(recent.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let scaled = if self.jitter > 0.0 {
            capped * (1.0 + rand::rng().random_range(-self.jitter..=self.jitter))
        } else {
            capped
        };
        // A huge `max` (`Duration::MAX` for "no cap") plus jitter can land
        // past what a `Duration` holds: stay at the cap then.
        Duration::try_from_secs_f64(scaled.max(0.0)).unwrap_or(self.max)
    }
}

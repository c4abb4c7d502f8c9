use std::time::Duration;

use super::algorithm::check_bounds;
use super::{Algorithm, Sample};

/// Additive increase, multiplicative decrease: +1 after a success while the
/// limit is in use, ×`backoff` after a drop (an error, or a response slower
/// than `latency_threshold`).
///
/// Defaults (weft's): initial 20, min 1, max 200, backoff 0.9, latency
/// threshold 5 s. Netflix's `AIMDLimit` uses the same except a min of 20
/// (and it allows a backoff only in [0.5, 1)).
///
/// AIMD reacts to failure, not to queueing: with no errors and a generous
/// threshold it climbs to `max`. Give it a latency threshold near the
/// latency you expect (or use [`Vegas`](crate::Vegas)) to stop it at the
/// downstream's capacity. Even then it saw-tooths (that is what AIMD is):
/// +1 per window up to where latency crosses the threshold, then one cut.
/// A window of samples that includes requests admitted under a higher
/// limit than the current one (in flight before the last cut) does not cut
/// again: one cut per overload, not one per window that still drains it.
///
/// ```
/// use std::time::Duration;
/// use weft_exec::{Aimd, Algorithm, Sample};
///
/// let mut a = Aimd::new().initial(10);
/// let ok = Sample::new(Duration::from_millis(5), 10, false);
/// let failed = Sample::new(Duration::from_millis(5), 10, true);
/// assert_eq!(a.update(10, ok), 11);
/// assert_eq!(a.update(11, failed), 9); // floor(11 * 0.9)
/// ```
///
/// # Panics
///
/// The setters panic on a value that makes no sense on its own (a limit of
/// 0, a backoff outside (0, 1), a zero threshold). Settings that contradict
/// each other (`min` above `max`, an `initial` set outside `[min, max]`) are
/// refused when the adaptive limit is built, since the setters may come in
/// any order.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// `None`: the default, 20, brought within `[min, max]`.
    initial: Option<usize>,
    min: usize,
    max: usize,
    backoff: f64,
    threshold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            initial: None,
            min: 1,
            max: 200,
            backoff: 0.9,
            threshold: Duration::from_secs(5),
        }
    }
}

impl Aimd {
    /// AIMD with the defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The starting limit, within `[min, max]` (default 20, or the nearest
    /// bound when 20 is outside them).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    #[track_caller]
    pub fn initial(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "Aimd initial limit must be at least 1 (got 0): pass the limit to start with"
        );
        self.initial = Some(n);
        self
    }

    /// The lowest limit (default 1: the limit may fall as far as one
    /// request at a time).
    ///
    /// # Panics
    ///
    /// If `n` is 0 (a limit of 0 admits nothing, ever again).
    #[track_caller]
    pub fn min(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "Aimd min must be at least 1 (got 0): pass the lowest limit the algorithm may set"
        );
        self.min = n;
        self
    }

    /// The highest limit (default 200: a ceiling for a downstream whose
    /// capacity is unknown; raise it for one that serves more).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    #[track_caller]
    pub fn max(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "Aimd max must be at least 1 (got 0): pass the highest limit the algorithm may set"
        );
        self.max = n;
        self
    }

    /// The factor applied on a drop, in (0, 1) (default 0.9: a gentle cut,
    /// as the additive increase is slow).
    ///
    /// # Panics
    ///
    /// If `f` is not in (0, 1) (or is NaN).
    #[track_caller]
    pub fn backoff(mut self, f: f64) -> Self {
        assert!(
            f > 0.0 && f < 1.0,
            "Aimd backoff must be in (0, 1) (got {f}): pass the factor applied to the limit on a drop, such as 0.9"
        );
        self.backoff = f;
        self
    }

    /// A response slower than this counts as a drop (default 5 s: only
    /// responses that are clearly failing).
    ///
    /// # Panics
    ///
    /// If `d` is zero (every response would count as a drop).
    #[track_caller]
    pub fn latency_threshold(mut self, d: Duration) -> Self {
        assert!(
            !d.is_zero(),
            "Aimd latency_threshold must be above zero: pass the latency above which a response counts as a drop"
        );
        self.threshold = d;
        self
    }
}

impl Algorithm for Aimd {
    fn initial_limit(&self) -> usize {
        check_bounds("Aimd", self.initial, self.min, self.max)
    }

    fn update(&mut self, limit: usize, s: Sample) -> usize {
        let new = if s.dropped || s.rtt > self.threshold {
            if s.in_flight > limit {
                // The window holds requests admitted under a higher limit,
                // before the last cut: its drops are that cut's news. One cut per round
                // trip (as TCP's fast recovery), or the limit would fall
                // twice for one overload.
                return limit;
            }
            (limit as f64 * self.backoff).floor() as usize
        } else if s.in_flight * 2 >= limit {
            limit + 1
        } else {
            limit
        };
        new.clamp(self.min, self.max.max(self.min))
    }
}

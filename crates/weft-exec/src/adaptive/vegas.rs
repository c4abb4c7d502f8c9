use std::time::Duration;

use super::algorithm::check_bounds;
use super::{Algorithm, Sample};

/// TCP Vegas applied to concurrency (after Netflix's `VegasLimit`):
/// estimates the queue building up downstream from how much slower a
/// request is than the fastest seen (`queue = limit × (1 − rtt_min / rtt)`),
/// grows the limit while that queue is small and shrinks it when it grows.
///
/// With limit `L` and log = max(1, log10 L): queue ≤ log → L + β; queue < α →
/// L + log; queue > β → L − log; a drop → L − log; where α = `alpha`·log and
/// β = `beta`·log. So the limit settles a few requests (α..β) above the
/// downstream's real concurrency.
///
/// Defaults (weft's): initial 20, min 1, max 200, alpha 3, beta 6. Netflix's
/// `VegasLimit` also starts at 20 with alpha 3 and beta 6 (× log10 of the
/// limit), but caps the limit at 1,000 (`maxConcurrency`) and probes for a
/// new `rtt_min` by default; weft's max of 200 is a ceiling for a
/// downstream whose capacity is unknown: raise it for one that serves more.
/// `rtt_min` is the smallest latency seen. [`probe_every`](Self::probe_every)
/// (off by default) forgets it every N samples so that a downstream that got
/// permanently slower is not read as congested forever — at the cost of
/// re-learning a congested latency as the baseline if the probe lands while
/// the downstream is queueing, which lets the limit ratchet up. Leave it off
/// unless the downstream's unloaded latency really changes.
///
/// ```
/// use std::time::Duration;
/// use weft_exec::{Algorithm, Sample, Vegas};
///
/// let mut v = Vegas::new();
/// let ms = Duration::from_millis;
/// // The first sample sets rtt_min.
/// assert_eq!(v.update(20, Sample::new(ms(10), 20, false)), 20);
/// // No queueing: grow by beta.
/// assert!(v.update(20, Sample::new(ms(10), 20, false)) > 20);
/// // Twice as slow at a full limit: half of it is queue: shrink.
/// assert!(v.update(100, Sample::new(ms(20), 100, false)) < 100);
/// ```
///
/// # Panics
///
/// The setters panic on a value that makes no sense on its own (a limit of
/// 0, a negative or NaN alpha or beta). Settings that contradict each other
/// (`min` above `max`, an `initial` set outside `[min, max]`, `alpha` above
/// `beta`) are refused when the adaptive limit is built, since the setters
/// may come in any order.
#[derive(Debug, Clone)]
pub struct Vegas {
    /// `None`: the default, 20, brought within `[min, max]`.
    initial: Option<usize>,
    min: usize,
    max: usize,
    alpha: f64,
    beta: f64,
    probe_every: u64,
    rtt_min: Option<Duration>,
    samples: u64,
}

impl Default for Vegas {
    fn default() -> Self {
        Vegas {
            initial: None,
            min: 1,
            max: 200,
            alpha: 3.0,
            beta: 6.0,
            probe_every: 0,
            rtt_min: None,
            samples: 0,
        }
    }
}

impl Vegas {
    /// Vegas with the defaults above.
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
            "Vegas initial limit must be at least 1 (got 0): pass the limit to start with"
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
            "Vegas min must be at least 1 (got 0): pass the lowest limit the algorithm may set"
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
            "Vegas max must be at least 1 (got 0): pass the highest limit the algorithm may set"
        );
        self.max = n;
        self
    }

    /// Queue (in multiples of log10 limit) below which the limit grows
    /// (default 3), at most `beta`.
    ///
    /// # Panics
    ///
    /// If `a` is negative or not a finite number.
    #[track_caller]
    pub fn alpha(mut self, a: f64) -> Self {
        assert!(
            a.is_finite() && a >= 0.0,
            "Vegas alpha must be a finite number >= 0 (got {a}): pass the queue, in multiples of log10 limit, below which the limit grows, such as 3"
        );
        self.alpha = a;
        self
    }

    /// Queue (in multiples of log10 limit) above which the limit shrinks
    /// (default 6), at least `alpha`.
    ///
    /// # Panics
    ///
    /// If `b` is negative or not a finite number.
    #[track_caller]
    pub fn beta(mut self, b: f64) -> Self {
        assert!(
            b.is_finite() && b >= 0.0,
            "Vegas beta must be a finite number >= 0 (got {b}): pass the queue, in multiples of log10 limit, above which the limit shrinks, such as 6"
        );
        self.beta = b;
        self
    }

    /// Forget `rtt_min` every this many samples (default 0 = never).
    pub fn probe_every(mut self, n: u64) -> Self {
        self.probe_every = n;
        self
    }

    /// The smallest latency seen since the last probe.
    pub fn rtt_min(&self) -> Option<Duration> {
        self.rtt_min
    }
}

impl Algorithm for Vegas {
    fn initial_limit(&self) -> usize {
        assert!(
            self.alpha <= self.beta,
            "Vegas alpha ({}) is above beta ({}): pass an alpha no higher than the beta",
            self.alpha,
            self.beta
        );
        check_bounds("Vegas", self.initial, self.min, self.max)
    }

    fn update(&mut self, limit: usize, s: Sample) -> usize {
        self.samples += 1;
        if self.probe_every > 0 && self.samples % self.probe_every == 0 {
            self.rtt_min = None;
        }
        let rtt = s.rtt.max(Duration::from_nanos(1));
        let rtt_min = match self.rtt_min {
            Some(m) if m <= rtt => m,
            _ => {
                self.rtt_min = Some(rtt);
                return limit;
            }
        };
        let l = limit as f64;
        let log = l.log10().max(1.0);
        let new = if s.dropped {
            l - log
        } else if (s.in_flight * 2) < limit {
            // Not using the limit: the latency says nothing about it.
            return limit;
        } else {
            let queue = (l * (1.0 - rtt_min.as_secs_f64() / rtt.as_secs_f64())).ceil();
            let (alpha, beta) = (self.alpha * log, self.beta * log);
            if queue <= log {
                l + beta
            } else if queue < alpha {
                l + log
            } else if queue > beta {
                l - log
            } else {
                return limit;
            }
        };
        (new.round().max(0.0) as usize).clamp(self.min, self.max.max(self.min))
    }
}

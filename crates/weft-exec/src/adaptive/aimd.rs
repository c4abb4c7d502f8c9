use std::time::Duration;

use super::{Algorithm, Sample};

/// Additive increase, multiplicative decrease: +1 after a success while the
/// limit is in use, ×`backoff` after a drop (an error, or a response slower
/// than `latency_threshold`).
///
/// Defaults (Netflix's): initial 20, min 1, max 200, backoff 0.9,
/// latency threshold 5 s. AIMD reacts to failure, not to queueing: with no
/// errors and a generous threshold it climbs to `max`. Give it a latency
/// threshold near the latency you expect (or use [`Vegas`](crate::Vegas))
/// to stop it at the downstream's capacity.
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
#[derive(Debug, Clone)]
pub struct Aimd {
    initial: usize,
    min: usize,
    max: usize,
    backoff: f64,
    threshold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            initial: 20,
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

    /// The starting limit (default 20).
    pub fn initial(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }

    /// The lowest limit (default 1).
    pub fn min(mut self, n: usize) -> Self {
        self.min = n.max(1);
        self
    }

    /// The highest limit (default 200).
    pub fn max(mut self, n: usize) -> Self {
        self.max = n;
        self
    }

    /// The factor applied on a drop, in (0, 1) (default 0.9).
    pub fn backoff(mut self, f: f64) -> Self {
        self.backoff = f.clamp(0.01, 0.99);
        self
    }

    /// A response slower than this counts as a drop (default 5 s).
    pub fn latency_threshold(mut self, d: Duration) -> Self {
        self.threshold = d;
        self
    }
}

impl Algorithm for Aimd {
    fn initial_limit(&self) -> usize {
        self.initial.clamp(self.min, self.max.max(self.min))
    }

    fn update(&mut self, limit: usize, s: Sample) -> usize {
        let new = if s.dropped || s.rtt > self.threshold {
            (limit as f64 * self.backoff).floor() as usize
        } else if s.in_flight * 2 >= limit {
            limit + 1
        } else {
            limit
        };
        new.clamp(self.min, self.max.max(self.min))
    }
}

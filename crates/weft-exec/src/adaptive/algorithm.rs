use std::time::Duration;

/// One completed request, as an adaptive limit algorithm sees it.
///
/// Cancelled requests (the response future dropped before it finished)
/// produce no sample: they say nothing about the downstream and are **not**
/// counted as drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// How long the request took.
    pub rtt: Duration,
    /// Requests in flight when this one started (itself included).
    pub in_flight: usize,
    /// Whether it failed (the inner service returned an error).
    pub dropped: bool,
}

impl Sample {
    /// A sample (for testing algorithms).
    pub fn new(rtt: Duration, in_flight: usize, dropped: bool) -> Self {
        Sample {
            rtt,
            in_flight,
            dropped,
        }
    }
}

/// How an adaptive limit moves: given the current limit and a sample, the
/// new limit.
///
/// Implement it to plug in your own algorithm:
///
/// ```
/// use weft_exec::{Algorithm, Sample};
///
/// /// Halve on error, +1 on success.
/// struct Halving(usize);
///
/// impl Algorithm for Halving {
///     fn initial_limit(&self) -> usize { self.0 }
///     fn update(&mut self, limit: usize, s: Sample) -> usize {
///         if s.dropped { (limit / 2).max(1) } else { limit + 1 }
///     }
/// }
///
/// let mut h = Halving(10);
/// let s = Sample::new(std::time::Duration::from_millis(5), 3, true);
/// assert_eq!(h.update(10, s), 5);
/// ```
pub trait Algorithm: Send + 'static {
    /// The limit to start with.
    fn initial_limit(&self) -> usize;

    /// The new limit after `sample`, given the current `limit`.
    fn update(&mut self, limit: usize, sample: Sample) -> usize;
}

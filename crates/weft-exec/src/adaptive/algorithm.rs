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
    /// The limit to start with. Called once, when the
    /// [`AdaptiveLimitLayer`](crate::AdaptiveLimitLayer) or
    /// [`AdaptiveLimit`](crate::AdaptiveLimit) is built, which panics if it
    /// is 0 (a limit that would never admit anything). weft's algorithms
    /// also panic here if their settings contradict each other (`min` above
    /// `max`, an initial limit outside `[min, max]`), since their setters
    /// may come in any order.
    fn initial_limit(&self) -> usize;

    /// The new limit after `sample`, given the current `limit`.
    fn update(&mut self, limit: usize, sample: Sample) -> usize;
}

/// Refuses bounds that contradict each other, when the limit is built: `min`
/// above `max`, or an initial limit the user set outside `[min, max]`. The
/// default initial limit (`None`: 20) is brought within the bounds instead,
/// so that lowering only `max` (or raising only `min`) just works.
pub(crate) fn check_bounds(
    algorithm: &str,
    initial: Option<usize>,
    min: usize,
    max: usize,
) -> usize {
    assert!(
        min <= max,
        "{algorithm} min ({min}) is above max ({max}): pass a min no higher than the max"
    );
    let Some(initial) = initial else {
        return 20.clamp(min, max);
    };
    assert!(
        (min..=max).contains(&initial),
        "{algorithm} initial limit {initial} is outside [min, max] = [{min}, {max}]: pass an initial limit between them"
    );
    initial
}

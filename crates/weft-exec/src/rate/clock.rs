use governor::clock::Clock;
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A governor clock that reads `tokio::time`, so that paused-time tests
/// (`#[tokio::test(start_paused = true)]`) drive rate limits too.
///
/// It measures nanoseconds since the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Instant,
}

impl TokioClock {
    /// A clock starting now.
    pub fn new() -> Self {
        TokioClock {
            base: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        Nanos::from(Instant::now().saturating_duration_since(self.base))
    }
}

//! Keeps a flood of one warning from becoming a flood of log lines.
//!
//! Under overload a limit may refuse thousands of calls a second; a `warn!`
//! for each would add I/O to the overload and bury everything else in the
//! log. [`Throttle`] lets one line a second through and counts the rest,
//! so the next line says how many it stands for (every refusal is still
//! counted in `stats()` and the metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How often a throttled warning may be logged.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Throttle {
    born: Instant,
    /// When (ms after `born`) the next line may be logged.
    next: AtomicU64,
    /// Events not logged since the last line.
    skipped: AtomicU64,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle {
            born: Instant::now(),
            next: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this event should be logged, `n` being how many were
    /// left unlogged since the last line; `None` (and counted) otherwise.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = self.born.elapsed().as_millis() as u64;
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::warn!` (with `more_since_last_line`) when `$throttle` lets
/// this event through, `tracing::debug!` otherwise; same fields and message.
macro_rules! warn_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        match $throttle.admit() {
            Some(more) => tracing::warn!(more_since_last_line = more, $($arg)+),
            None => tracing::debug!($($arg)+),
        }
    };
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_a_second_saying_how_many_it_stands_for() {
        let t = Throttle::new();
        assert_eq!(t.admit(), Some(0));
        for _ in 0..999 {
            assert_eq!(t.admit(), None);
        }
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(t.admit(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.admit(), Some(1000));
        assert_eq!(t.admit(), None);
        tokio::time::advance(EVERY).await;
        assert_eq!(t.admit(), Some(1));
    }
}

//! Keeps a flood of one warning from becoming a flood of log lines.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Lets one log line a second through and counts the rest, so that the next
/// line can say how many it stands for.
///
/// Under overload a limit may refuse thousands of calls a second; a
/// `warn!` for each would add I/O to the overload and bury everything else
/// in the log. weft's components log such events through a `LogThrottle`
/// (every event is still counted in their `stats()` and metrics): the
/// admitted one at `warn`, the others at `debug`. It reads tokio's clock,
/// so paused-time tests see it move with `tokio::time::advance`.
///
/// ```
/// use weft_core::LogThrottle;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let log = LogThrottle::new();
/// assert_eq!(log.admit(), Some(0)); // the first event is logged
/// assert_eq!(log.admit(), None); // within the second: counted, not logged
/// tokio::time::advance(std::time::Duration::from_secs(1)).await;
/// assert_eq!(log.admit(), Some(1)); // logged, standing for 1 more
/// # }
/// ```
pub struct LogThrottle {
    born: Instant,
    /// When (ms after `born`) the next line may be logged.
    next: AtomicU64,
    /// Events not logged since the last line.
    skipped: AtomicU64,
}

/// How often a throttled line may be logged.
const EVERY: Duration = Duration::from_secs(1);

impl LogThrottle {
    /// A throttle whose first event is admitted.
    pub fn new() -> Self {
        LogThrottle {
            born: Instant::now(),
            next: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this event should be logged, `n` being how many events
    /// were not logged since the last line; `None` (and counted) otherwise.
    /// At most one event a second is admitted, whatever the number of
    /// threads calling.
    pub fn admit(&self) -> Option<u64> {
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

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LogThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogThrottle")
            .field("skipped", &self.skipped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_a_second_saying_how_many_it_stands_for() {
        let t = LogThrottle::new();
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

    #[test]
    fn one_admitted_among_racing_threads() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let t = rt.block_on(async { LogThrottle::new() });
        let admitted = std::sync::atomic::AtomicU64::new(0);
        let handle = rt.handle();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let _g = handle.enter();
                    for _ in 0..1000 {
                        if t.admit().is_some() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // The clock is paused: every event falls in the first second.
        assert_eq!(admitted.load(Ordering::Relaxed), 1);
        let _g = handle.enter();
        assert_eq!(t.admit(), None);
        assert_eq!(t.skipped.load(Ordering::Relaxed), 4000);
    }
}

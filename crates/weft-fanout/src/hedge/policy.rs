use std::time::Duration;

#[cfg(loom)]
use loom::sync::Mutex;
#[cfg(loom)]
use loom::sync::atomic::{AtomicI64, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::Mutex;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Where the hedge delay comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DelaySource {
    Fixed(Duration),
    Percentile {
        p: f64,
        min_samples: usize,
        window: usize,
    },
}

const NO_DELAY: u64 = u64::MAX;
/// Recompute the percentile once per this many recorded latencies.
const RECOMPUTE_EVERY: u64 = 16;

/// A ring of recent latencies (nanoseconds) and the cached percentile.
#[derive(Debug)]
pub(crate) struct Latencies {
    p: f64,
    min_samples: usize,
    ring: Mutex<Ring>,
    cached: AtomicU64,
    recorded: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    buf: Vec<u64>,
    next: usize,
    cap: usize,
}

impl Latencies {
    pub(crate) fn new(p: f64, min_samples: usize, window: usize) -> Self {
        Latencies {
            p,
            min_samples,
            ring: Mutex::new(Ring {
                buf: Vec::with_capacity(window),
                next: 0,
                cap: window,
            }),
            cached: AtomicU64::new(NO_DELAY),
            recorded: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1);
        let n = self.recorded.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.buf.len() < ring.cap {
            ring.buf.push(nanos);
        } else {
            let i = ring.next;
            ring.buf[i] = nanos;
        }
        ring.next = (ring.next + 1) % ring.cap;
        let len = ring.buf.len();
        if len >= self.min_samples && (n % RECOMPUTE_EVERY == 0 || len == self.min_samples) {
            let mut sorted = ring.buf.clone();
            drop(ring);
            let rank = ((self.p * len as f64).ceil() as usize).clamp(1, len) - 1;
            let (_, v, _) = sorted.select_nth_unstable(rank);
            self.cached.store(*v, Ordering::Relaxed);
        }
    }

    /// The current percentile, once `min_samples` latencies were recorded.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.cached.load(Ordering::Relaxed) {
            NO_DELAY => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

/// A token bucket in thousandths of a hedge: each request deposits `ratio`,
/// each hedge withdraws one, the balance is capped at `burst`. So over any
/// stretch, hedges <= ratio * requests + burst.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: AtomicI64,
    deposit: i64,
    cap: i64,
}

const ONE: i64 = 1000;

impl Budget {
    pub(crate) fn new(ratio: f64, burst: u32) -> Self {
        let cap = i64::from(burst) * ONE;
        Budget {
            tokens: AtomicI64::new(cap),
            deposit: (ratio * ONE as f64).round() as i64,
            cap,
        }
    }

    pub(crate) fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < self.cap).then(|| (t + self.deposit).min(self.cap))
            });
    }

    /// Gives back a token withdrawn for a hedge that was not sent after
    /// all (capped at the burst, like a deposit).
    pub(crate) fn refund(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + ONE).min(self.cap))
            });
    }

    pub(crate) fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= ONE).then_some(t - ONE)
            })
            .is_ok()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_window() {
        let l = Latencies::new(0.9, 10, 100);
        for i in 1..=9 {
            l.record(Duration::from_millis(i));
            assert_eq!(l.delay(), None, "no delay before min_samples");
        }
        l.record(Duration::from_millis(10));
        assert_eq!(l.delay(), Some(Duration::from_millis(9)));
    }

    #[test]
    fn window_forgets_old_latencies() {
        let l = Latencies::new(0.5, 4, 4);
        for _ in 0..4 {
            l.record(Duration::from_millis(100));
        }
        assert_eq!(l.delay(), Some(Duration::from_millis(100)));
        for _ in 0..(RECOMPUTE_EVERY * 2) {
            l.record(Duration::from_millis(5));
        }
        assert_eq!(l.delay(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn budget_bounds_hedges() {
        let b = Budget::new(0.1, 2);
        let mut hedges = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                hedges += 1;
            }
        }
        // At most the burst of 2 plus 10% of 1000 requests, and no fewer
        // than the deposits paid for.
        assert!((100..=102).contains(&hedges), "{hedges}");
        assert!(
            !b.withdraw(),
            "the bucket is empty after a hedge per request"
        );
    }

    #[test]
    fn a_refund_returns_one_token_capped_at_the_burst() {
        let b = Budget::new(0.0, 1);
        assert!(b.withdraw());
        assert!(!b.withdraw());
        b.refund();
        assert!(b.withdraw(), "the refunded token can be spent again");
        b.refund();
        b.refund();
        assert!(b.withdraw());
        assert!(
            !b.withdraw(),
            "refunds never raise the balance above the burst"
        );
    }
}

/// Loom models of the hedge budget and the latency window: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p weft-fanout --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two requests race for the last hedge token while a third deposits:
    /// never more hedges than tokens, and the balance never goes negative.
    #[test]
    fn loom_budget_never_overspends() {
        loom::model(|| {
            let b = Arc::new(Budget::new(0.5, 1));
            let spenders: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    thread::spawn(move || b.withdraw())
                })
                .collect();
            let depositor = {
                let b = b.clone();
                thread::spawn(move || b.deposit())
            };
            let won = spenders
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|w| *w)
                .count();
            depositor.join().unwrap();
            // One whole token at the start; the deposit of half a token
            // (capped at the burst) can never pay for a second hedge.
            assert_eq!(won, 1);
            assert!(b.tokens.load(Ordering::Relaxed) >= 0);
        });
    }

    /// A hedge that gives its token back (it was not sent) races another
    /// hedge for the only token: the refund never mints a token, so the
    /// other wins at most once and the balance ends where the winners left
    /// it, never above the burst.
    #[test]
    fn loom_budget_refund_never_mints() {
        loom::model(|| {
            let b = Arc::new(Budget::new(0.0, 1));
            let refunder = {
                let b = b.clone();
                thread::spawn(move || {
                    let won = b.withdraw();
                    if won {
                        b.refund();
                    }
                    won
                })
            };
            let spender = {
                let b = b.clone();
                thread::spawn(move || b.withdraw())
            };
            let refunder_won = refunder.join().unwrap();
            let spender_won = spender.join().unwrap();
            assert!(refunder_won || spender_won, "one token, two tries");
            let left = b.tokens.load(Ordering::Relaxed);
            assert_eq!(left, if spender_won { 0 } else { ONE });
        });
    }

    /// Concurrent recorders: every latency lands in the window and the
    /// cached percentile is one of the recorded values.
    #[test]
    fn loom_latencies_record_concurrently() {
        loom::model(|| {
            let l = Arc::new(Latencies::new(1.0, 2, 4));
            let hs: Vec<_> = [3u64, 7]
                .into_iter()
                .map(|ms| {
                    let l = l.clone();
                    thread::spawn(move || l.record(Duration::from_millis(ms)))
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(l.ring.lock().unwrap().buf.len(), 2);
            assert_eq!(l.delay(), Some(Duration::from_millis(7)));
        });
    }
}

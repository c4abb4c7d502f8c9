//! The closed-state sliding windows: count-based (lock-free) and time-based
//! (lock-free except for rotating a bucket once a second).

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU8, AtomicU64, Mutex, Ordering, lock};

const FAIL: u8 = 1;
const SLOW: u8 = 2;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What a window holds at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

fn bits(fail: bool, slow: bool) -> u8 {
    (if fail { FAIL } else { 0 }) | (if slow { SLOW } else { 0 })
}

/// The packed change in (failures, slow) when a slot goes from `old` to `new`,
/// as a wrapping add on `failures | slow << 32`.
fn delta(old: u8, new: u8) -> u64 {
    let df = i64::from(new & FAIL) - i64::from(old & FAIL);
    let ds = i64::from((new & SLOW) >> 1) - i64::from((old & SLOW) >> 1);
    (df as u64).wrapping_add((ds as u64).wrapping_shl(32))
}

fn unpack(agg: u64) -> (u64, u64) {
    (u64::from(agg as u32), agg >> 32)
}

/// A ring of the last `n` recorded outcomes.
///
/// Recording is one `fetch_add` on the index and one load of a slot when the
/// outcome is a fast success over a fast success (the healthy steady state);
/// a swap and one more `fetch_add` otherwise. Every slot change is paired with
/// its own aggregate change, so the aggregate equals the slots whenever the
/// writers are quiet, and a reader that catches a transient inconsistency
/// (possible only while the ring wraps under a race) skips the decision.
pub(crate) struct CountWindow {
    /// Outcomes ever recorded (never reset: it doubles as the breaker's
    /// count of the closed-state outcomes it recorded).
    idx: CachePadded<AtomicU64>,
    /// `idx` when the window was last emptied.
    start: AtomicU64,
    agg: CachePadded<AtomicU64>,
    slots: Box<[AtomicU8]>,
    /// Lemire's fastmod constant for `slots.len()`: the slot of call `i` is
    /// computed with two multiplications instead of a 64-bit division.
    magic: u64,
}

/// `a % d` for `d = slots.len()`, given `magic = u64::MAX / d + 1`
/// (Lemire, Kaser, Kurz: "Faster remainder by direct computation", 2019).
/// The index is taken modulo 2^32 first: once every 4 billion calls the ring
/// restarts at slot 0, which only reorders which old slot is overwritten next.
#[inline]
fn fastmod(a: u64, magic: u64, d: u64) -> usize {
    let low = magic.wrapping_mul(u64::from(a as u32));
    ((u128::from(low) * u128::from(d)) >> 64) as usize
}

impl CountWindow {
    pub(crate) fn new(n: usize) -> Self {
        CountWindow {
            idx: CachePadded::new(AtomicU64::new(0)),
            start: AtomicU64::new(0),
            agg: CachePadded::new(AtomicU64::new(0)),
            slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
            magic: (u64::MAX / n as u64).wrapping_add(1),
        }
    }

    /// Whether the window is full and holds only fast successes. Then
    /// recording one more fast success would change nothing (it would
    /// replace a fast success, and where the next write lands does not
    /// matter while every slot is alike), so the caller skips it: the
    /// healthy steady state writes no shared memory at all.
    #[inline]
    pub(crate) fn clean(&self) -> bool {
        self.agg.load(Ordering::Relaxed) == 0
            && self
                .idx
                .load(Ordering::Relaxed)
                .wrapping_sub(self.start.load(Ordering::Relaxed))
                >= self.slots.len() as u64
    }

    /// Records one outcome; returns the tally after it when the outcome is
    /// bad (only a bad outcome can trip the breaker).
    #[inline]
    pub(crate) fn record(&self, fail: bool, slow: bool) -> Option<Tally> {
        let n = self.slots.len() as u64;
        let i = self.idx.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[fastmod(i, self.magic, n)];
        let new = bits(fail, slow);
        if new == 0 {
            if slot.load(Ordering::Relaxed) != 0 {
                let old = slot.swap(0, Ordering::Relaxed);
                self.agg.fetch_add(delta(old, 0), Ordering::Relaxed);
            }
            return None;
        }
        let old = slot.swap(new, Ordering::Relaxed);
        let d = delta(old, new);
        let agg = self.agg.fetch_add(d, Ordering::Relaxed).wrapping_add(d);
        let (failures, slow) = unpack(agg);
        let calls = (i + 1)
            .saturating_sub(self.start.load(Ordering::Relaxed))
            .min(n);
        (failures <= calls && slow <= calls).then_some(Tally {
            calls,
            failures,
            slow,
        })
    }

    /// The current tally.
    pub(crate) fn tally(&self) -> Tally {
        let n = self.slots.len() as u64;
        let (failures, slow) = unpack(self.agg.load(Ordering::Relaxed));
        let calls = self
            .idx
            .load(Ordering::Relaxed)
            .saturating_sub(self.start.load(Ordering::Relaxed))
            .min(n);
        Tally {
            calls,
            failures: failures.min(calls),
            slow: slow.min(calls),
        }
    }

    /// Empties the window (the breaker left the closed state).
    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::Relaxed);
            if old != 0 {
                self.agg.fetch_add(delta(old, 0), Ordering::Relaxed);
            }
        }
        self.start
            .store(self.idx.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Outcomes ever recorded.
    pub(crate) fn total(&self) -> u64 {
        self.idx.load(Ordering::Relaxed)
    }
}

struct Bucket {
    /// The second this bucket counts, plus one (0: never used).
    stamp: AtomicU64,
    calls: AtomicU64,
    /// failures | slow << 32
    bad: AtomicU64,
}

/// Per-second buckets over the last `n` seconds.
///
/// Recording reads the clock, loads the bucket's stamp and adds to the
/// bucket's counters (one `fetch_add` for a success, two for a failure). The
/// lock is taken only to start a new second in a bucket, so at most once per
/// second per bucket, whatever the call rate.
pub(crate) struct TimeWindow {
    buckets: Box<[CachePadded<Bucket>]>,
    rotate: Mutex<()>,
}

impl TimeWindow {
    pub(crate) fn new(secs: usize) -> Self {
        TimeWindow {
            buckets: (0..secs)
                .map(|_| {
                    CachePadded::new(Bucket {
                        stamp: AtomicU64::new(0),
                        calls: AtomicU64::new(0),
                        bad: AtomicU64::new(0),
                    })
                })
                .collect(),
            rotate: Mutex::new(()),
        }
    }

    /// Records one outcome at `now` (nanoseconds since the breaker was
    /// built); returns the tally over the window when the outcome is bad.
    #[inline]
    pub(crate) fn record(&self, now: u64, fail: bool, slow: bool) -> Option<Tally> {
        let n = self.buckets.len() as u64;
        let sec = now / NANOS_PER_SEC;
        let stamp = sec + 1;
        let b = &self.buckets[(sec % n) as usize];
        let seen = b.stamp.load(Ordering::Acquire);
        if seen != stamp {
            if seen > stamp {
                // This caller read the clock long ago; the bucket already
                // counts a later second. Dropping one late sample is better
                // than clearing a newer second.
                return None;
            }
            let _g = lock(&self.rotate);
            let seen = b.stamp.load(Ordering::Acquire);
            if seen < stamp {
                b.calls.store(0, Ordering::Relaxed);
                b.bad.store(0, Ordering::Relaxed);
                b.stamp.store(stamp, Ordering::Release);
            } else if seen > stamp {
                return None;
            }
        }
        b.calls.fetch_add(1, Ordering::Relaxed);
        let new = bits(fail, slow);
        if new == 0 {
            return None;
        }
        b.bad.fetch_add(delta(0, new), Ordering::Relaxed);
        Some(self.tally_at(now))
    }

    /// The tally over the `n` seconds ending at `now`.
    pub(crate) fn tally_at(&self, now: u64) -> Tally {
        let n = self.buckets.len() as u64;
        let stamp = now / NANOS_PER_SEC + 1;
        let oldest = stamp.saturating_sub(n - 1);
        let mut t = Tally::default();
        for b in self.buckets.iter() {
            let s = b.stamp.load(Ordering::Acquire);
            if s != 0 && s >= oldest && s <= stamp {
                t.calls += b.calls.load(Ordering::Relaxed);
                let (f, sl) = unpack(b.bad.load(Ordering::Relaxed));
                t.failures += f;
                t.slow += sl;
            }
        }
        t.failures = t.failures.min(t.calls);
        t.slow = t.slow.min(t.calls);
        t
    }

    /// Empties the window.
    pub(crate) fn reset(&self) {
        let _g = lock(&self.rotate);
        for b in self.buckets.iter() {
            b.stamp.store(0, Ordering::Release);
            b.calls.store(0, Ordering::Relaxed);
            b.bad.store(0, Ordering::Relaxed);
        }
    }
}

/// The configured window (one per breaker; the padded count window is
/// kept inline rather than boxed to save a pointer chase per call).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
    None,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fastmod_is_remainder() {
        for d in [1u64, 2, 3, 7, 100, 1_000, 999_983, 1_000_000] {
            let magic = (u64::MAX / d).wrapping_add(1);
            for a in (0..5_000u64).chain([u64::from(u32::MAX) - 3, u64::from(u32::MAX)]) {
                assert_eq!(fastmod(a, magic, d) as u64, a % d, "{a} % {d}");
            }
        }
    }

    #[test]
    fn count_window_tracks_last_n() {
        let w = CountWindow::new(4);
        assert_eq!(
            w.record(true, false),
            Some(Tally {
                calls: 1,
                failures: 1,
                slow: 0
            })
        );
        assert_eq!(w.record(false, false), None);
        assert_eq!(
            w.record(true, true),
            Some(Tally {
                calls: 3,
                failures: 2,
                slow: 1
            })
        );
        assert_eq!(w.record(false, false), None);
        // Overwrites the first failure.
        assert_eq!(
            w.record(false, true),
            Some(Tally {
                calls: 4,
                failures: 1,
                slow: 2
            })
        );
        assert_eq!(w.record(false, false), None);
        assert_eq!(
            w.tally(),
            Tally {
                calls: 4,
                failures: 1,
                slow: 2
            }
        );
        w.reset();
        assert_eq!(w.tally(), Tally::default());
    }

    #[test]
    fn clean_only_when_full_of_fast_successes() {
        let w = CountWindow::new(3);
        w.record(false, false);
        w.record(false, false);
        assert!(!w.clean(), "not full yet");
        w.record(false, false);
        assert!(w.clean());
        w.record(false, true);
        assert!(!w.clean(), "a slow call in the window");
        for _ in 0..3 {
            w.record(false, false);
        }
        assert!(w.clean(), "the slow call left the window");
        w.reset();
        assert!(!w.clean(), "emptied");
    }

    #[test]
    fn count_window_consistent_under_threads() {
        let w = CountWindow::new(7);
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = &w;
                s.spawn(move || {
                    for i in 0..5_000u32 {
                        w.record((i + t) % 3 == 0, (i + t) % 5 == 0);
                    }
                });
            }
        });
        let slots: Vec<u8> = w.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let f = slots.iter().filter(|b| **b & FAIL != 0).count() as u64;
        let sl = slots.iter().filter(|b| **b & SLOW != 0).count() as u64;
        let t = w.tally();
        assert_eq!((t.calls, t.failures, t.slow), (7, f, sl));
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let w = TimeWindow::new(3);
        let s = NANOS_PER_SEC;
        assert_eq!(w.record(0, false, false), None);
        assert_eq!(
            w.record(s / 2, true, false),
            Some(Tally {
                calls: 2,
                failures: 1,
                slow: 0
            })
        );
        assert_eq!(
            w.record(s + 1, true, true),
            Some(Tally {
                calls: 3,
                failures: 2,
                slow: 1
            })
        );
        // Second 0 leaves the window at second 3.
        assert_eq!(
            w.record(3 * s, true, false),
            Some(Tally {
                calls: 2,
                failures: 2,
                slow: 1
            })
        );
        // A late sample for second 0 does not clear second 3's bucket.
        assert_eq!(w.record(0, true, false), None);
        assert_eq!(w.tally_at(3 * s).calls, 2);
        w.reset();
        assert_eq!(w.tally_at(3 * s), Tally::default());
    }
}

//! The executor's running permits: a counter that takes no lock to take or
//! give back a permit, and a wake-up for the one task that ever waits for
//! them (the dispatcher).
//!
//! tokio's `Semaphore` locks its waiter list on every release, even when
//! nobody waits, because any acquirer may queue. Here only the dispatcher
//! waits (spawners never do: a spawn that finds no permit queues its task),
//! so a release is one `fetch_add`, and the protocol is small enough to
//! model with loom (the `loom_tests` below).
//!
//! The protocol: the count and the dispatcher's "parked" flag share one
//! atomic word, so every operation on them is ordered by that word's
//! modification order (no fences, no reasoning across two locations). The
//! dispatcher sets the flag with an RMW, then looks at the count; a release
//! adds to the count with an RMW and reads the flag from the value it
//! replaced. A release ordered before the flag is seen by the dispatcher's
//! look; one ordered after it sees the flag and wakes the dispatcher.

use tokio::sync::Notify;

use crate::sync::{AtomicUsize, Ordering};

/// The flag bit: the dispatcher is about to park, or parked, waiting for
/// permits.
const PARKED: usize = 1 << (usize::BITS - 1);

/// The count is stored as `BIAS + count` in the bits below [`PARKED`], so
/// that it can dip below zero while a [`Count::try_acquire_fast`] that found
/// too few permits takes its subtraction back. `max_running` is at most tokio's
/// `Semaphore::MAX_PERMITS` (2^61 - 1 on 64-bit targets), so
/// `BIAS + max_running` stays below the flag, and the dip (at most
/// [`FAST_MAX`] for each acquirer racing at that moment) stays far above
/// zero.
const BIAS: usize = 1 << (usize::BITS - 3);

/// The heaviest weight [`Count::try_acquire_fast`] subtracts optimistically;
/// a dip is then at most this times the number of threads racing at once,
/// far below [`BIAS`] even with 32-bit words.
const FAST_MAX: usize = u16::MAX as usize;

/// The count and the flag, without the wake-up (what the loom model checks).
pub(crate) struct Count {
    state: AtomicUsize,
}

impl Count {
    pub(crate) fn new(n: usize) -> Self {
        debug_assert!(n < BIAS);
        Count {
            state: AtomicUsize::new(BIAS + n),
        }
    }

    /// Takes `n` permits if that many are free (the dispatcher's way: a
    /// compare-and-swap, which never makes the count dip).
    pub(crate) fn try_acquire(&self, n: usize) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & !PARKED < BIAS + n {
                return false;
            }
            match self.state.compare_exchange_weak(
                cur,
                cur - n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes `n` permits if that many are free (the spawners' way):
    /// `Ok(())`, or `Err(wake)`, where `wake` says the caller must wake the
    /// parked dispatcher (as after a [`release`](Self::release)).
    ///
    /// One `fetch_sub`, given back if there were too few: a single
    /// read-modify-write of the shared word, where a compare-and-swap needs
    /// a load first (on the path every spawn takes, one trip of the cache
    /// line between cores instead of two). Until a failed attempt gives its
    /// subtraction back, others see fewer permits than there are: a racing
    /// spawn may fail too (it queues its task, which the dispatcher starts),
    /// the dispatcher may park (the give-back wakes it), and an idleness
    /// check may read "busy" (the caller tells idleness waiters again after
    /// a failure). The dispatcher never uses this: its own give-back would
    /// take the parked flag it just set, and it would spin.
    #[inline]
    pub(crate) fn try_acquire_fast(&self, n: usize) -> Result<(), bool> {
        if n > FAST_MAX {
            // Heavy weights take the compare-and-swap, which never dips, so
            // the dips stay small against `BIAS` (on 32-bit targets too).
            return if self.try_acquire(n) {
                Ok(())
            } else {
                Err(false)
            };
        }
        // SeqCst: the spawn then reads `closed` (and a shutdown writes
        // `closed`, then reads the count), as in `release`.
        let prev = self.state.fetch_sub(n, Ordering::SeqCst);
        if prev & !PARKED >= BIAS + n {
            Ok(())
        } else {
            Err(self.release(n))
        }
    }

    /// Gives `n` permits back; `true` if the caller must wake the parked
    /// dispatcher (only one release per parking is told to).
    #[inline]
    pub(crate) fn release(&self, n: usize) -> bool {
        // SeqCst: a finishing task then reads `closed` (and `wait_idle`
        // writes `closed`, then reads the count): store-then-load on two
        // locations needs SeqCst on both sides (free on x86 and ARMv8).
        let prev = self.state.fetch_add(n, Ordering::SeqCst);
        prev & PARKED != 0 && self.state.fetch_and(!PARKED, Ordering::AcqRel) & PARKED != 0
    }

    /// The dispatcher is about to park: call before its last look at the
    /// count.
    pub(crate) fn park(&self) {
        self.state.fetch_or(PARKED, Ordering::AcqRel);
    }

    /// The dispatcher stopped waiting without being woken.
    pub(crate) fn unpark(&self) {
        self.state.fetch_and(!PARKED, Ordering::AcqRel);
    }

    /// Permits free right now (reads low while a failed fast attempt has not
    /// given its subtraction back; 0 if that dips below zero).
    pub(crate) fn available(&self) -> usize {
        (self.state.load(Ordering::SeqCst) & !PARKED).saturating_sub(BIAS)
    }
}

/// The running permits of one executor.
pub(super) struct Permits {
    count: Count,
    wake: Notify,
}

impl Permits {
    pub(super) fn new(n: usize) -> Self {
        Permits {
            count: Count::new(n),
            wake: Notify::new(),
        }
    }

    /// Takes `n` permits if that many are free (the dispatcher's way).
    #[inline]
    pub(super) fn try_acquire(&self, n: u32) -> bool {
        self.count.try_acquire(n as usize)
    }

    /// Takes `n` permits if that many are free, with one read-modify-write
    /// (the spawners' way, see [`Count::try_acquire_fast`]). `false` may
    /// also mean that a racing attempt held some for a moment; after a
    /// `false` the caller must tell idleness waiters, as a finishing task
    /// does, because its give-back may have made the executor idle.
    #[inline]
    pub(super) fn try_acquire_fast(&self, n: u32) -> bool {
        match self.count.try_acquire_fast(n as usize) {
            Ok(()) => true,
            Err(wake) => {
                if wake {
                    self.wake.notify_one();
                }
                false
            }
        }
    }

    /// Gives `n` permits back, waking the dispatcher if it waits for them.
    #[inline]
    pub(super) fn release(&self, n: u32) {
        if self.count.release(n as usize) {
            self.wake.notify_one();
        }
    }

    /// Permits free right now.
    pub(super) fn available(&self) -> usize {
        self.count.available()
    }

    /// Waits until `n` permits are free and takes them. Only the dispatcher
    /// calls this (one waiter at a time). Cancel-safe: dropped while
    /// waiting, it holds nothing (a wake-up meant for it is stored in the
    /// `Notify` and makes the next wait look again, which is harmless).
    pub(super) async fn acquire(&self, n: u32) {
        loop {
            if self.try_acquire(n) {
                return;
            }
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.count.park();
            if self.try_acquire(n) {
                self.count.unpark();
                return;
            }
            notified.await;
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Count;
    use loom::sync::{Arc, Notify};
    use loom::thread;

    /// `Permits::release` with loom's `Notify`.
    fn give_back(count: &Count, wake: &Notify, n: usize) {
        if count.release(n) {
            wake.notify();
        }
    }

    /// `Permits::try_acquire_fast` with loom's `Notify`.
    fn try_take_fast(count: &Count, wake: &Notify, n: usize) -> bool {
        match count.try_acquire_fast(n) {
            Ok(()) => true,
            Err(must_wake) => {
                if must_wake {
                    wake.notify();
                }
                false
            }
        }
    }

    /// The dispatcher's loop in `Permits::acquire`, with loom's `Notify`.
    fn dispatcher_acquire(count: &Count, wake: &Notify, n: usize) {
        loop {
            if count.try_acquire(n) {
                return;
            }
            count.park();
            if count.try_acquire(n) {
                count.unpark();
                return;
            }
            wake.wait();
        }
    }

    /// The dispatcher waits for 2 permits while two tasks give one back
    /// each: it always gets them (a lost wake-up would be a loom deadlock),
    /// and takes them once.
    #[test]
    fn loom_release_never_misses_the_parked_dispatcher() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let count = Arc::new(Count::new(0));
            let wake = Arc::new(Notify::new());
            let releasers: Vec<_> = (0..2)
                .map(|_| {
                    let (count, wake) = (count.clone(), wake.clone());
                    thread::spawn(move || give_back(&count, &wake, 1))
                })
                .collect();
            dispatcher_acquire(&count, &wake, 2);
            for r in releasers {
                r.join().unwrap();
            }
            assert_eq!(count.available(), 0, "both permits were taken once");
        });
    }

    /// A spawner's fast attempt (which, if it wins, runs its task and gives
    /// the permit back) races the dispatcher, which waits for 1 permit, and
    /// a task that gives 1 back: the dispatcher always gets its permit, also
    /// when the spawner's dip made it park (a lost wake-up would be a loom
    /// deadlock), and nothing is taken twice.
    #[test]
    fn loom_fast_attempt_never_strands_the_dispatcher() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let count = Arc::new(Count::new(0));
            let wake = Arc::new(Notify::new());
            let spawner = {
                let (count, wake) = (count.clone(), wake.clone());
                thread::spawn(move || {
                    if try_take_fast(&count, &wake, 1) {
                        give_back(&count, &wake, 1);
                    }
                })
            };
            let releaser = {
                let (count, wake) = (count.clone(), wake.clone());
                thread::spawn(move || give_back(&count, &wake, 1))
            };
            dispatcher_acquire(&count, &wake, 1);
            spawner.join().unwrap();
            releaser.join().unwrap();
            assert_eq!(count.available(), 0, "the one permit was taken once");
        });
    }

    /// Two spawners' fast attempts and the dispatcher's compare-and-swap
    /// race for the one permit there is: one attempt's dip may make another
    /// fail spuriously, but at most one wins, and every dip is given back.
    #[test]
    fn loom_racing_fast_attempts_take_at_most_what_exists() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let count = Arc::new(Count::new(1));
            let wake = Arc::new(Notify::new());
            let spawners: Vec<_> = (0..2)
                .map(|_| {
                    let (count, wake) = (count.clone(), wake.clone());
                    thread::spawn(move || try_take_fast(&count, &wake, 1))
                })
                .collect();
            let dispatcher = usize::from(count.try_acquire(1));
            let taken = dispatcher
                + spawners
                    .into_iter()
                    .map(|s| usize::from(s.join().unwrap()))
                    .sum::<usize>();
            assert!(taken <= 1, "{taken} took the only permit");
            assert_eq!(count.available(), 1 - taken, "every dip was given back");
        });
    }
}

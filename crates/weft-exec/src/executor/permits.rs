//! The executor's running permits: a counter that takes no lock to take or
//! give back a permit, and a wake-up for the one task that ever waits for
//! them (the dispatcher).
//!
//! tokio's `Semaphore` locks its waiter list on every release, even when
//! nobody waits, because any acquirer may queue. Here only the dispatcher
//! waits (spawners never do: a spawn that finds no permit queues its task),
//! so a release is one `fetch_add`, and the protocol is small enough to
//! model with loom (`loom_release_never_misses_the_parked_dispatcher`).
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
/// permits. The count lives in the bits below it (`max_running` is far
/// below 2^(usize::BITS - 1), so an add never carries into it).
const PARKED: usize = 1 << (usize::BITS - 1);

/// The count and the flag, without the wake-up (what the loom model checks).
pub(crate) struct Count {
    state: AtomicUsize,
}

impl Count {
    pub(crate) fn new(n: usize) -> Self {
        debug_assert!(n < PARKED);
        Count {
            state: AtomicUsize::new(n),
        }
    }

    /// Takes `n` permits if that many are free.
    #[inline]
    pub(crate) fn try_acquire(&self, n: usize) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & !PARKED < n {
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

    /// Gives `n` permits back; `true` if the caller must wake the parked
    /// dispatcher (only one release per parking is told to).
    #[inline]
    pub(crate) fn release(&self, n: usize) -> bool {
        let prev = self.state.fetch_add(n, Ordering::AcqRel);
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

    pub(crate) fn available(&self) -> usize {
        self.state.load(Ordering::Acquire) & !PARKED
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

    /// Takes `n` permits if that many are free.
    #[inline]
    pub(super) fn try_acquire(&self, n: u32) -> bool {
        self.count.try_acquire(n as usize)
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

    /// The dispatcher waits for 2 permits while two tasks give one back
    /// each: it always gets them (a lost wake-up would be a loom deadlock),
    /// and the count ends where it started.
    #[test]
    fn loom_release_never_misses_the_parked_dispatcher() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let count = Arc::new(Count::new(0));
            let wake = Arc::new(Notify::new());
            let releasers: Vec<_> = (0..2)
                .map(|_| {
                    let count = count.clone();
                    let wake = wake.clone();
                    thread::spawn(move || {
                        if count.release(1) {
                            wake.notify();
                        }
                    })
                })
                .collect();
            // The dispatcher's loop in `Permits::acquire`.
            loop {
                if count.try_acquire(2) {
                    break;
                }
                count.park();
                if count.try_acquire(2) {
                    count.unpark();
                    break;
                }
                wake.wait();
            }
            for r in releasers {
                r.join().unwrap();
            }
            assert_eq!(count.available(), 0, "both permits were taken once");
            count.release(2);
            assert_eq!(count.available(), 2);
        });
    }

    /// Spawners on the fast path race the dispatcher for the last permit:
    /// never more taken than there are.
    #[test]
    fn loom_try_acquire_never_oversubscribes() {
        loom::model(|| {
            let count = Arc::new(Count::new(1));
            let other = {
                let count = count.clone();
                thread::spawn(move || count.try_acquire(1))
            };
            let mine = count.try_acquire(1);
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs, "exactly one of two takes the only permit");
            assert_eq!(count.available(), 0);
        });
    }
}

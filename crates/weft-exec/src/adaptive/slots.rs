//! The adaptive limit's slot counter: a request takes a slot only while
//! fewer than `limit` are in flight; the limit moves under it.

use crate::sync::{AtomicUsize, Ordering};

pub(crate) struct Slots {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        Slots {
            limit: AtomicUsize::new(limit),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub(crate) fn set_limit(&self, n: usize) {
        self.limit.store(n, Ordering::Release);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a slot if fewer than `limit` are in flight; returns the count
    /// in flight including this one.
    pub(crate) fn try_acquire(&self) -> Option<usize> {
        let mut cur = self.in_flight.load(Ordering::Acquire);
        loop {
            if cur >= self.limit() {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(cur + 1),
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Slots;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    /// Two threads race for slots while one of them lowers the limit from 2
    /// to 1: an acquisition never sees more holders than the limit, and
    /// every slot comes back. (Bounded preemptions keep the model quick.)
    #[test]
    fn loom_slots_never_exceed_the_limit() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let slots = Arc::new(Slots::new(2));
            let holders = Arc::new(AtomicUsize::new(0));
            let other = {
                let slots = slots.clone();
                let holders = holders.clone();
                thread::spawn(move || {
                    if let Some(n) = slots.try_acquire() {
                        assert!(n <= 2, "took slot {n} of 2");
                        let h = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(h <= 2, "{h} holders");
                        holders.fetch_sub(1, Ordering::SeqCst);
                        slots.release();
                    }
                })
            };
            slots.set_limit(1);
            if let Some(n) = slots.try_acquire() {
                assert!(n <= 1, "took slot {n} after the limit fell to 1");
                let h = holders.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(h <= 2, "{h} holders");
                holders.fetch_sub(1, Ordering::SeqCst);
                slots.release();
            }
            other.join().unwrap();
            assert_eq!(slots.in_flight(), 0, "every slot is given back");
        });
    }
}

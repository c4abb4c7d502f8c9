//! The worker count: how many workers are live and how many the pool aims
//! for, changed by lock-free compare-and-swap so that workers retiring,
//! workers being spawned and `resize` never over- or under-shoot.

#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct Sizing {
    /// Workers counting towards `target`.
    live: AtomicUsize,
    target: AtomicUsize,
}

impl Sizing {
    pub(crate) fn new(target: usize) -> Self {
        Sizing {
            live: AtomicUsize::new(0),
            target: AtomicUsize::new(target),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn target(&self) -> usize {
        self.target.load(Ordering::Acquire)
    }

    pub(crate) fn set_target(&self, n: usize) {
        self.target.store(n.max(1), Ordering::Release);
    }

    /// Claims the right to spawn one worker if fewer than `target` are live.
    pub(crate) fn claim_spawn(&self) -> bool {
        let mut live = self.live.load(Ordering::Acquire);
        loop {
            if live >= self.target.load(Ordering::Acquire) {
                return false;
            }
            match self.live.compare_exchange_weak(
                live,
                live + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(l) => live = l,
            }
        }
    }

    /// Takes one worker out of `live` if more than `floor` (at least 1) are
    /// live. The caller then exits without calling [`release`](Sizing::release).
    pub(crate) fn retire_above(&self, floor: usize) -> bool {
        let floor = floor.max(1);
        let mut live = self.live.load(Ordering::Acquire);
        loop {
            if live <= floor {
                return false;
            }
            match self.live.compare_exchange_weak(
                live,
                live - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(l) => live = l,
            }
        }
    }

    /// Whether more workers are live than the target (cheap, for the hot path).
    #[inline]
    pub(crate) fn surplus(&self) -> bool {
        self.live.load(Ordering::Relaxed) > self.target.load(Ordering::Relaxed)
    }

    /// A counted worker exited (closed pool, failed start).
    pub(crate) fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn claims_up_to_target_and_retires_down_to_floor() {
        let s = Sizing::new(3);
        assert!(s.claim_spawn() && s.claim_spawn() && s.claim_spawn());
        assert!(!s.claim_spawn());
        s.set_target(1);
        assert!(s.surplus());
        assert!(s.retire_above(s.target()));
        assert!(s.retire_above(s.target()));
        assert!(!s.retire_above(s.target()), "never below the floor");
        assert_eq!(s.live(), 1);
        assert!(!s.retire_above(0), "never below one worker");
    }
}

/// Run: `RUSTFLAGS="--cfg loom" cargo test -p weft-pool --release --lib loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Three live workers see a target of 1 at the same time: exactly two
    /// retire, whatever the interleaving.
    #[test]
    fn loom_concurrent_retire_stops_at_target() {
        loom::model(|| {
            let s = Arc::new(Sizing::new(3));
            for _ in 0..3 {
                assert!(s.claim_spawn());
            }
            s.set_target(1);
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let s = s.clone();
                    thread::spawn(move || usize::from(s.retire_above(s.target())))
                })
                .collect();
            let retired: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(retired, 2);
            assert_eq!(s.live(), 1);
        });
    }

    /// `resize` up racing with a worker retiring: the count ends between the
    /// floor and the new target, never at 0, never above the target.
    #[test]
    fn loom_resize_races_with_retire() {
        loom::model(|| {
            let s = Arc::new(Sizing::new(2));
            assert!(s.claim_spawn() && s.claim_spawn());
            s.set_target(1);
            let retire = {
                let s = s.clone();
                thread::spawn(move || s.retire_above(s.target()))
            };
            let grow = {
                let s = s.clone();
                thread::spawn(move || {
                    s.set_target(3);
                    let mut spawned = 0;
                    while s.claim_spawn() {
                        spawned += 1;
                    }
                    spawned
                })
            };
            let retired = retire.join().unwrap();
            let spawned = grow.join().unwrap();
            let live = s.live();
            assert_eq!(live, 2 + spawned - usize::from(retired));
            assert!((1..=3).contains(&live), "live {live}");
        });
    }
}

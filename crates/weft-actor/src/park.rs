//! How an idle incarnation waits on an empty mailbox and how senders wake
//! it: the `AtomicWaker` protocol (the incarnation registers, then looks at
//! the queue once more; a sender queues, then wakes), lock-free on both
//! sides. Checked with loom (`RUSTFLAGS="--cfg loom" cargo test -p
//! weft-actor --release --lib loom`).

#[cfg(loom)]
use loom::future::AtomicWaker;

#[cfg(not(loom))]
use futures::task::AtomicWaker;

use std::task::{Context, Poll};

/// Wakes a waiting incarnation.
pub(crate) struct Parker {
    waker: AtomicWaker,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Parker {
            waker: AtomicWaker::new(),
        }
    }

    /// Called by a sender after it queued a message, and by whoever sends a
    /// signal or closes the mailbox. A wake with nobody waiting is a no-op.
    #[inline]
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Waits until `check` finds something. `check` runs after the waker is
    /// registered, so a wake between an empty look and the registration is
    /// never lost.
    pub(crate) async fn wait_for<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        let mut woken = false;
        std::future::poll_fn(|cx: &mut Context<'_>| {
            // Polled again: whatever woke us is usually there, and taking it
            // needs no new registration (the first poll must register
            // before it looks, so that no wake-up is lost).
            if std::mem::replace(&mut woken, true)
                && let Some(v) = check()
            {
                return Poll::Ready(v);
            }
            #[cfg(loom)]
            self.waker.register_by_ref(cx.waker());
            #[cfg(not(loom))]
            self.waker.register(cx.waker());
            match check() {
                Some(v) => Poll::Ready(v),
                None => Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};

    fn try_pop(q: &AtomicUsize) -> bool {
        let mut n = q.load(Ordering::Acquire);
        while n > 0 {
            match q.compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(cur) => n = cur,
            }
        }
        false
    }

    /// No lost wake-up: whatever the interleaving, the incarnation receives
    /// every message (a lost wake-up would leave it waiting forever, which
    /// loom reports as a deadlock).
    #[test]
    fn loom_park_wake_never_loses_a_message() {
        loom::model(|| {
            let parker = Arc::new(Parker::new());
            let queue = Arc::new(AtomicUsize::new(0));
            let sender = {
                let (parker, queue) = (parker.clone(), queue.clone());
                loom::thread::spawn(move || {
                    for _ in 0..2 {
                        queue.fetch_add(1, Ordering::Release);
                        parker.wake();
                    }
                })
            };
            loom::future::block_on(async {
                let mut got = 0;
                while got < 2 {
                    if try_pop(&queue) {
                        got += 1;
                        continue;
                    }
                    parker.wait_for(|| try_pop(&queue).then_some(())).await;
                    got += 1;
                }
            });
            sender.join().unwrap();
        });
    }
}

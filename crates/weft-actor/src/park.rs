//! How an idle incarnation parks on an empty mailbox and how senders wake
//! it: a flag, a Dekker-style fence pair and an `AtomicWaker`, lock-free on
//! both sides. Checked with loom (`RUSTFLAGS="--cfg loom" cargo test -p
//! weft-actor --release loom`).

#[cfg(loom)]
use loom::future::AtomicWaker;
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering, fence};

#[cfg(not(loom))]
use futures::task::AtomicWaker;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering, fence};

use std::task::Poll;

/// The incarnation calls [`park`](Parker::park), looks at the queue once
/// more, and waits in [`woken`](Parker::woken) only if it is still empty; a
/// sender calls [`wake_if_idle`](Parker::wake_if_idle) after queueing. The
/// two `SeqCst` fences guarantee that either the incarnation's last look sees
/// the message or the sender sees `idle` (and wakes it).
pub(crate) struct Parker {
    idle: AtomicBool,
    woken: AtomicBool,
    waker: AtomicWaker,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Parker {
            idle: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Marks the incarnation idle, before its last look at the queue.
    #[inline]
    pub(crate) fn park(&self) {
        self.idle.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The incarnation is busy again.
    #[inline]
    pub(crate) fn unpark(&self) {
        self.idle.store(false, Ordering::Relaxed);
    }

    /// Called by a sender after it queued a message.
    #[inline]
    pub(crate) fn wake_if_idle(&self) {
        fence(Ordering::SeqCst);
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Wakes the incarnation, parked or not (a spurious wake is harmless).
    #[inline]
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until [`wake`](Parker::wake) is called, or returns at once if it
    /// was called since the last wait.
    pub(crate) async fn woken(&self) {
        std::future::poll_fn(|cx| {
            if self.woken.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            #[cfg(loom)]
            self.waker.register_by_ref(cx.waker());
            #[cfg(not(loom))]
            self.waker.register(cx.waker());
            if self.woken.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;

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
    /// every message (a lost wake-up would leave `block_on` waiting forever,
    /// which loom reports as a deadlock).
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
                        parker.wake_if_idle();
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
                    parker.park();
                    if try_pop(&queue) {
                        parker.unpark();
                        got += 1;
                        continue;
                    }
                    parker.woken().await;
                    parker.unpark();
                }
            });
            sender.join().unwrap();
        });
    }
}

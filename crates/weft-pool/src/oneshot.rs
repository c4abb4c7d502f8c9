//! The result slot behind [`JobHandle`](crate::JobHandle) and
//! [`BatchHandle`](crate::BatchHandle): one value from one sender to one
//! receiver.
//!
//! It replaces `tokio::sync::oneshot` to keep a queued job small: one `Arc`
//! holding a mutex-guarded state (`Waiting(waker) | Done(value) | Closed |
//! Taken`): 48 bytes for a `Result<u64, JobError>`, a 64-byte malloc chunk,
//! where tokio's (a state word and a waker for each side) cost 96 in the
//! `pool-memory` bench. Every transition happens under the mutex, and every
//! critical section is a few moves: the worker never holds it while running
//! a job, and wakers are woken after unlocking.
//!
//! - The sender finishes exactly once: [`Sender::send`] stores `Done`, and
//!   dropping an unsent sender stores `Closed`. Either way it takes the
//!   receiver's waker and wakes it.
//! - The receiver registers its waker while the state is `Waiting`, and moves
//!   a `Done`/`Closed` out (leaving `Taken`).
//! - A dropped receiver needs nothing: a value sent after that is dropped with
//!   the last `Arc` (the sender's, right after `send`).

#[cfg(loom)]
use loom::sync::{Arc, Mutex, MutexGuard};
use std::sync::PoisonError;
#[cfg(not(loom))]
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

enum State<V> {
    /// Nothing sent yet; the receiver's waker once it has polled.
    Waiting(Option<Waker>),
    /// The value, not yet taken.
    Done(V),
    /// The sender was dropped without sending.
    Closed,
    /// The receiver took the value or the closed notice.
    Taken,
}

type Slot<V> = Arc<Inner<V>>;

struct Inner<V> {
    state: Mutex<State<V>>,
    /// `PanicPolicy::Propagate`: the receiver's owner re-raises a panicked
    /// job's panic. Kept here, set once when the channel is made, so that a
    /// handle stays one pointer and reads it only when a job panicked (it
    /// fits in the slot's padding: the allocation keeps its size class).
    resume_panics: bool,
}

fn lock<V>(slot: &Mutex<State<V>>) -> MutexGuard<'_, State<V>> {
    // Nothing that can panic runs under the lock except `Waker::clone`; a
    // poisoned lock still holds a consistent state.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A sender and its receiver.
#[cfg(test)]
pub(crate) fn channel<V>() -> (Sender<V>, Receiver<V>) {
    channel_with(false)
}

/// A sender and its receiver whose [`Receiver::resumes_panics`] is
/// `resume_panics`.
pub(crate) fn channel_with<V>(resume_panics: bool) -> (Sender<V>, Receiver<V>) {
    let slot = Arc::new(Inner {
        state: Mutex::new(State::Waiting(None)),
        resume_panics,
    });
    (
        Sender {
            slot: Some(slot.clone()),
        },
        Receiver { slot },
    )
}

/// The sending half: sends once, or closes the slot when dropped unsent.
/// It may also be detached (no receiver: a fire-and-forget job), which keeps
/// a queued job's sender field one pointer wide either way.
pub(crate) struct Sender<V> {
    /// `None` once finished (so `Drop` does not finish twice) or detached.
    slot: Option<Slot<V>>,
}

impl<V> Sender<V> {
    /// A sender with no receiver; sending to it drops the value.
    pub(crate) fn detached() -> Self {
        Sender { slot: None }
    }

    /// Moves the sender out, leaving a detached one.
    pub(crate) fn take(&mut self) -> Self {
        Sender {
            slot: self.slot.take(),
        }
    }

    /// Whether a value sent now would be dropped unread: the sender is
    /// detached, or the receiver is gone. (A receiver dropped right after
    /// this says `false` still lets [`send`](Sender::send) drop the value.)
    pub(crate) fn is_unread(&self) -> bool {
        self.slot.as_ref().is_none_or(|s| Arc::strong_count(s) == 1)
    }

    /// Delivers `v` to the receiver (dropped with the slot if the receiver
    /// is gone).
    pub(crate) fn send(mut self, v: V) {
        if let Some(slot) = self.slot.take() {
            finish(&slot.state, State::Done(v));
        }
    }
}

impl<V> Drop for Sender<V> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            finish(&slot.state, State::Closed);
        }
    }
}

fn finish<V>(slot: &Mutex<State<V>>, end: State<V>) {
    let waker = {
        let mut g = lock(slot);
        match std::mem::replace(&mut *g, end) {
            State::Waiting(w) => w,
            // Unreachable (only the one sender leaves `Waiting`, once), but
            // keep the first outcome rather than overwrite it.
            other => {
                *g = other;
                None
            }
        }
    };
    if let Some(w) = waker {
        w.wake();
    }
}

/// The receiving half.
pub(crate) struct Receiver<V> {
    slot: Slot<V>,
}

impl<V> Receiver<V> {
    /// `Ready(Some(v))` once sent, `Ready(None)` if the sender was dropped
    /// unsent.
    ///
    /// # Panics
    /// If polled again after it returned `Ready`.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<V>> {
        let mut g = lock(&self.slot.state);
        if let State::Waiting(w) = &mut *g {
            match w {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        match std::mem::replace(&mut *g, State::Taken) {
            State::Done(v) => Poll::Ready(Some(v)),
            State::Closed => Poll::Ready(None),
            State::Taken | State::Waiting(_) => {
                drop(g);
                panic!("a job handle was polled after it completed")
            }
        }
    }

    /// Whether the sender has finished (a poll would be ready).
    pub(crate) fn is_finished(&self) -> bool {
        !matches!(*lock(&self.slot.state), State::Waiting(_))
    }

    /// Whether a panicked job's panic is raised again where this receiver's
    /// result is awaited (`PanicPolicy::Propagate`).
    pub(crate) fn resumes_panics(&self) -> bool {
        self.slot.resume_panics
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (std::sync::Arc<Count>, Waker) {
        let c = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn the_slot_is_small() {
        // One allocation of Arc counts + this: 48 bytes for a u64 job, which
        // malloc serves from a 64-byte chunk.
        assert!(std::mem::size_of::<Mutex<State<Result<u64, crate::JobError>>>>() <= 32);
        // With the panic-policy flag: still at most 56 bytes with the Arc
        // counts, which malloc still serves from a 64-byte chunk.
        assert!(std::mem::size_of::<Inner<Result<u64, crate::JobError>>>() <= 40);
        assert_eq!(
            std::mem::size_of::<Receiver<Result<u64, crate::JobError>>>(),
            8
        );
        assert_eq!(
            std::mem::size_of::<Sender<Result<u64, crate::JobError>>>(),
            8
        );
    }

    #[test]
    fn send_wakes_the_registered_waker_once_and_delivers() {
        let (tx, mut rx) = channel::<u32>();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(rx.poll_recv(&mut cx).is_pending()); // same waker kept
        assert!(!rx.is_finished());
        tx.send(7);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(rx.is_finished());
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(7)));
    }

    #[test]
    fn dropping_the_sender_unsent_closes_and_wakes() {
        let (tx, mut rx) = channel::<u32>();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_value_sent_to_a_dropped_receiver_is_dropped() {
        let v = std::sync::Arc::new(());
        let (tx, rx) = channel();
        drop(rx);
        tx.send(v.clone());
        assert_eq!(std::sync::Arc::strong_count(&v), 1);
    }

    #[test]
    #[should_panic(expected = "polled after it completed")]
    fn polling_after_completion_panics() {
        let (tx, mut rx) = channel::<u32>();
        tx.send(1);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        let _ = rx.poll_recv(&mut cx);
    }
}

/// Run: `RUSTFLAGS="--cfg loom" cargo test -p weft-pool --release --lib loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    fn recv<V>(mut rx: Receiver<V>) -> Option<V> {
        loom::future::block_on(std::future::poll_fn(|cx| rx.poll_recv(cx)))
    }

    /// A send racing with the receiver's polls is delivered exactly once and
    /// its wake-up is never lost (a lost one is a loom deadlock).
    #[test]
    fn loom_send_races_with_recv() {
        loom::model(|| {
            let (tx, rx) = channel::<usize>();
            let t = thread::spawn(move || tx.send(42));
            assert_eq!(recv(rx), Some(42));
            t.join().unwrap();
        });
    }

    /// A sender dropped unsent (a job that was never run) wakes the receiver
    /// with `None`.
    #[test]
    fn loom_dropped_sender_closes() {
        loom::model(|| {
            let (tx, rx) = channel::<usize>();
            let t = thread::spawn(move || drop(tx));
            assert_eq!(recv(rx), None);
            t.join().unwrap();
        });
    }

    /// A receiver dropped while the value is being sent: no panic, and the
    /// value is dropped (loom checks the `Arc`s are all freed).
    #[test]
    fn loom_receiver_dropped_during_send() {
        loom::model(|| {
            let (tx, rx) = channel::<Arc<()>>();
            let v = Arc::new(());
            let v2 = v.clone();
            let t = thread::spawn(move || tx.send(v2));
            drop(rx);
            t.join().unwrap();
            assert_eq!(Arc::strong_count(&v), 1);
        });
    }
}

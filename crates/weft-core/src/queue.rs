//! A bounded multi-producer, multi-consumer queue that applies [`Overflow`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_channel::{Receiver, Sender, TrySendError};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::{Overflow, OverflowError};

/// A bounded MPMC queue whose behaviour when full is an [`Overflow`] policy.
///
/// This is the queue under a pool's jobs, an executor's waiting tasks, a
/// pipeline stage's input and an actor's mailbox, so that all of them treat a
/// full queue the same way. It is built on `async-channel` (lock-free in the
/// common case); clones share one queue.
///
/// An item the queue does not keep is always handed back: inside the
/// [`PushError`], or for [`Overflow::DropOldest`] as the evicted items inside
/// [`Admitted::Evicted`]. A `push` future that is dropped before it resolves
/// has not queued its item (the item is dropped with the future, never
/// duplicated).
///
/// ```
/// use weft_core::{Overflow, queue::{Admitted, Queue}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let q = Queue::bounded(2, Overflow::DropOldest).unwrap();
/// q.push(1).await.unwrap();
/// q.push(2).await.unwrap();
/// // Full: the oldest item is evicted and handed back; 3 is queued.
/// assert_eq!(q.push(3).await.unwrap(), Admitted::Evicted(vec![1]));
/// q.close();
/// assert_eq!(q.drain_now(), vec![2, 3]);
/// assert_eq!(q.pop().await, None); // closed and empty
/// # }
/// ```
pub struct Queue<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    overflow: Overflow,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Serialises eviction with `close`, so an evicted item is never stranded.
    evict: Mutex<()>,
    /// Producers waiting under `WaitTimeout`.
    waiting: AtomicUsize,
    room: Notify,
}

/// How an item was admitted by [`Queue::push`].
#[derive(PartialEq, Eq)]
pub enum Admitted<T> {
    /// The item is queued.
    Queued,
    /// The item is queued after evicting older items (under
    /// [`Overflow::DropOldest`]), which are handed back, oldest first. Usually
    /// one; more only when other producers raced for the freed slot.
    Evicted(Vec<T>),
}

impl<T> Admitted<T> {
    /// The evicted items, if any.
    pub fn into_evicted(self) -> Vec<T> {
        match self {
            Admitted::Queued => Vec::new(),
            Admitted::Evicted(v) => v,
        }
    }
}

impl<T> fmt::Debug for Admitted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admitted::Queued => f.write_str("Queued"),
            Admitted::Evicted(v) => write!(f, "Evicted({} items)", v.len()),
        }
    }
}

/// The item was not queued; it rides inside the error.
#[derive(PartialEq, Eq, thiserror::Error)]
pub enum PushError<T> {
    /// The queue is full and the policy is `Reject` (or a `try_*` call found
    /// it full).
    #[error("queue is full: retry later, or choose Overflow::Block for backpressure")]
    Full(T),
    /// The queue is full and the policy is `DropNewest`: the item was shed.
    #[error("queue is full: item dropped (Overflow::DropNewest)")]
    Dropped(T),
    /// The queue stayed full for the whole `WaitTimeout`.
    #[error("queue stayed full for the whole wait timeout")]
    Timeout(T),
    /// The queue is closed; it accepts nothing more.
    #[error("queue is closed")]
    Closed(T),
}

impl<T> PushError<T> {
    /// The item that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(t) | PushError::Dropped(t) | PushError::Timeout(t) => t,
            PushError::Closed(t) => t,
        }
    }

    /// Whether the queue was closed (as opposed to full).
    pub fn is_closed(&self) -> bool {
        matches!(self, PushError::Closed(_))
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PushError::Full(_) => "Full",
            PushError::Dropped(_) => "Dropped",
            PushError::Timeout(_) => "Timeout",
            PushError::Closed(_) => "Closed",
        };
        write!(f, "{name}(..)")
    }
}

impl<T> Queue<T> {
    /// A queue holding at most `capacity` items, applying `overflow` when full.
    ///
    /// Refuses a capacity of 0 and a zero `WaitTimeout`, with an error that
    /// says what to pass instead.
    pub fn bounded(capacity: usize, overflow: Overflow) -> Result<Self, OverflowError> {
        OverflowError::check(capacity, overflow)?;
        let (tx, rx) = async_channel::bounded(capacity);
        Ok(Queue {
            tx,
            rx,
            overflow,
            shared: Arc::default(),
        })
    }

    /// A queue with no bound, asked for by name. It is never full, so
    /// [`push`](Queue::push) never waits and never refuses an item while open.
    pub fn unbounded() -> Self {
        let (tx, rx) = async_channel::unbounded();
        Queue {
            tx,
            rx,
            overflow: Overflow::Block,
            shared: Arc::default(),
        }
    }

    /// The policy applied when the queue is full.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// The capacity, or `None` for an unbounded queue.
    pub fn capacity(&self) -> Option<usize> {
        self.tx.capacity()
    }

    /// Items queued right now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Whether [`close`](Queue::close) was called.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Pushes an item, applying the overflow policy if the queue is full.
    ///
    /// Waits only under `Block` and `WaitTimeout`.
    pub async fn push(&self, item: T) -> Result<Admitted<T>, PushError<T>> {
        match self.overflow {
            // The common case, room in the queue, needs no send future.
            Overflow::Block => match self.tx.try_send(item) {
                Ok(()) => Ok(Admitted::Queued),
                Err(TrySendError::Closed(item)) => Err(PushError::Closed(item)),
                Err(TrySendError::Full(item)) => match self.tx.send(item).await {
                    Ok(()) => Ok(Admitted::Queued),
                    Err(e) => Err(PushError::Closed(e.0)),
                },
            },
            Overflow::WaitTimeout(d) => self.push_timeout(item, d).await,
            _ => self.try_push(item),
        }
    }

    /// Pushes an item without waiting. When full, `Block` and `WaitTimeout`
    /// act as `Reject`.
    pub fn try_push(&self, item: T) -> Result<Admitted<T>, PushError<T>> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(Admitted::Queued),
            Err(TrySendError::Closed(item)) => Err(PushError::Closed(item)),
            Err(TrySendError::Full(item)) => match self.overflow {
                Overflow::DropOldest => self.evict_and_push(item),
                Overflow::DropNewest => Err(PushError::Dropped(item)),
                _ => Err(PushError::Full(item)),
            },
        }
    }

    fn evict_and_push(&self, mut item: T) -> Result<Admitted<T>, PushError<T>> {
        let _guard = self
            .shared
            .evict
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut evicted = Vec::with_capacity(1);
        loop {
            match self.tx.try_send(item) {
                Ok(()) if evicted.is_empty() => return Ok(Admitted::Queued),
                Ok(()) => return Ok(Admitted::Evicted(evicted)),
                // `close` takes the same lock, so nothing was evicted yet.
                Err(TrySendError::Closed(it)) => return Err(PushError::Closed(it)),
                Err(TrySendError::Full(it)) => item = it,
            }
            if let Ok(old) = self.rx.try_recv() {
                evicted.push(old);
            }
        }
    }

    async fn push_timeout(&self, mut item: T, wait: Duration) -> Result<Admitted<T>, PushError<T>> {
        // A wait too long for the clock (`Duration::MAX`) never ends: wait
        // as `Block` does.
        let Some(deadline) = Instant::now().checked_add(wait) else {
            return match self.tx.send(item).await {
                Ok(()) => Ok(Admitted::Queued),
                Err(e) => Err(PushError::Closed(e.0)),
            };
        };
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(Admitted::Queued),
                Err(TrySendError::Closed(it)) => return Err(PushError::Closed(it)),
                Err(TrySendError::Full(it)) => item = it,
            }
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.shared.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = WaitingGuard(&self.shared.waiting);
            // Pairs with the fence in `made_room`: either that pop sees
            // `waiting > 0` and notifies, or this re-check sees its room.
            // (The channel's own internals happen to fence here too; this
            // does not rely on them.)
            fence(Ordering::SeqCst);
            // Re-check after registering, so a pop in between is not missed.
            match self.tx.try_send(item) {
                Ok(()) => return Ok(Admitted::Queued),
                Err(TrySendError::Closed(it)) => return Err(PushError::Closed(it)),
                Err(TrySendError::Full(it)) => item = it,
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep_until(deadline) => {
                    return match self.tx.try_send(item) {
                        Ok(()) => Ok(Admitted::Queued),
                        Err(TrySendError::Closed(it)) => Err(PushError::Closed(it)),
                        Err(TrySendError::Full(it)) => Err(PushError::Timeout(it)),
                    };
                }
            }
        }
    }

    /// Takes the oldest item, waiting while the queue is empty. Returns `None`
    /// once the queue is closed and empty.
    pub async fn pop(&self) -> Option<T> {
        let item = self.rx.recv().await.ok()?;
        self.made_room();
        Some(item)
    }

    /// Takes the oldest item if there is one, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        let item = self.rx.try_recv().ok()?;
        self.made_room();
        Some(item)
    }

    #[inline]
    fn made_room(&self) {
        if matches!(self.overflow, Overflow::WaitTimeout(_)) {
            fence(Ordering::SeqCst);
            if self.shared.waiting.load(Ordering::SeqCst) > 0 {
                self.shared.room.notify_waiters();
            }
        }
    }

    /// Closes admission. Queued items stay and can still be popped; pushes
    /// fail with [`PushError::Closed`]. Returns `false` if already closed.
    pub fn close(&self) -> bool {
        let _guard = self
            .shared
            .evict
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = self.tx.close();
        self.shared.room.notify_waiters();
        first
    }

    /// Takes every item queued right now, oldest first, without waiting:
    /// how a component hands queued work back to its callers on shutdown.
    pub fn drain_now(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(item) = self.try_pop() {
            out.push(item);
        }
        out
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            overflow: self.overflow,
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("overflow", &self.overflow)
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[tokio::test]
    async fn reject_hands_the_item_back() {
        let q = Queue::bounded(1, Overflow::Reject).unwrap();
        assert_eq!(q.push(1).await.unwrap(), Admitted::Queued);
        let err = q.push(2).await.unwrap_err();
        assert!(matches!(err, PushError::Full(2)));
        assert_eq!(err.into_inner(), 2);
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn drop_newest_sheds_the_new_item() {
        let q = Queue::bounded(1, Overflow::DropNewest).unwrap();
        q.push("a").await.unwrap();
        assert!(matches!(q.push("b").await, Err(PushError::Dropped("b"))));
        assert_eq!(q.pop().await, Some("a"));
    }

    #[tokio::test]
    async fn drop_oldest_evicts_and_returns() {
        let q = Queue::bounded(2, Overflow::DropOldest).unwrap();
        for i in 0..2 {
            q.push(i).await.unwrap();
        }
        assert_eq!(q.push(2).await.unwrap().into_evicted(), vec![0]);
        assert_eq!(q.push(3).await.unwrap().into_evicted(), vec![1]);
        assert_eq!(q.drain_now(), vec![2, 3]);
    }

    #[tokio::test]
    async fn try_push_never_waits_even_under_block() {
        let q = Queue::bounded(1, Overflow::Block).unwrap();
        q.try_push(1).unwrap();
        assert!(matches!(q.try_push(2), Err(PushError::Full(2))));
    }

    #[tokio::test(start_paused = true)]
    async fn block_waits_for_room() {
        let q = Queue::bounded(1, Overflow::Block).unwrap();
        q.push(1).await.unwrap();
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(2).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!pusher.is_finished(), "push must wait while full");
        assert_eq!(q.pop().await, Some(1));
        pusher.await.unwrap().unwrap();
        assert_eq!(q.pop().await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_timeout_times_out_with_the_item() {
        let q = Queue::bounded(1, Overflow::WaitTimeout(Duration::from_millis(50))).unwrap();
        q.push(1).await.unwrap();
        let start = Instant::now();
        let err = q.push(2).await.unwrap_err();
        assert!(matches!(err, PushError::Timeout(2)));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_timeout_succeeds_when_room_appears() {
        let q = Queue::bounded(1, Overflow::WaitTimeout(Duration::from_millis(50))).unwrap();
        q.push(1).await.unwrap();
        let q2 = q.clone();
        let popper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            q2.pop().await
        });
        let start = Instant::now();
        assert_eq!(q.push(2).await.unwrap(), Admitted::Queued);
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert_eq!(popper.await.unwrap(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_timed_waiters_and_refuses() {
        let q = Queue::bounded(1, Overflow::WaitTimeout(Duration::from_secs(60))).unwrap();
        q.push(1).await.unwrap();
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(2).await });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished(), "push waits while full");
        let start = Instant::now();
        assert!(q.close());
        assert!(!q.close());
        let err = pusher.await.unwrap().unwrap_err();
        // Woken by `close`, not by its 60 s timeout (which also reports
        // `Closed`, so only the clock tells the two apart).
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(err.is_closed());
        assert_eq!(err.into_inner(), 2);
        assert_eq!(q.pop().await, Some(1), "queued items survive close");
        assert_eq!(q.pop().await, None);
    }

    #[test]
    fn zero_capacity_is_refused() {
        assert_eq!(
            Queue::<()>::bounded(0, Overflow::Block).unwrap_err(),
            OverflowError::ZeroCapacity
        );
        let q = Queue::<u8>::unbounded();
        assert_eq!(q.capacity(), None);
    }

    #[test]
    fn concurrent_drop_oldest_loses_nothing() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        rt.block_on(async {
            let q = Queue::bounded(8, Overflow::DropOldest).unwrap();
            let mut producers = Vec::new();
            for p in 0..4u64 {
                let q = q.clone();
                producers.push(tokio::spawn(async move {
                    let mut evicted = Vec::new();
                    for i in 0..5_000u64 {
                        evicted.extend(q.push(p * 1_000_000 + i).await.unwrap().into_evicted());
                    }
                    evicted
                }));
            }
            let consumer = {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(v) = q.pop().await {
                        got.push(v);
                    }
                    got
                })
            };
            let mut seen = Vec::new();
            for p in producers {
                seen.extend(p.await.unwrap());
            }
            q.close();
            seen.extend(consumer.await.unwrap());
            seen.sort_unstable();
            let before = seen.len();
            seen.dedup();
            assert_eq!(before, seen.len(), "an item came back twice");
            assert_eq!(seen.len(), 20_000, "every pushed item is popped or evicted");
        });
    }

    /// Producers waiting under `WaitTimeout` are always woken by a pop: a
    /// lost wakeup would leave one waiting out its (long) timeout and fail.
    #[test]
    fn concurrent_wait_timeout_loses_no_wakeup() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let q = Queue::bounded(2, Overflow::WaitTimeout(Duration::from_secs(60))).unwrap();
            let producers: Vec<_> = (0..4u64)
                .map(|p| {
                    let q = q.clone();
                    tokio::spawn(async move {
                        for i in 0..2_000u64 {
                            if let Err(e) = q.push(p * 1_000_000 + i).await {
                                return Err(format!("{e:?} after {i} items"));
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            let mut got = 0;
            while got < 8_000 {
                q.pop().await.unwrap();
                got += 1;
            }
            for p in producers {
                p.await.unwrap().unwrap();
            }
            assert!(q.is_empty());
        });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            3 => Just(Op::Pop),
            1 => Just(Op::Close),
        ]
    }

    fn policy() -> impl Strategy<Value = Overflow> {
        prop_oneof![
            Just(Overflow::Reject),
            Just(Overflow::DropOldest),
            Just(Overflow::DropNewest),
            Just(Overflow::Block),
        ]
    }

    proptest! {
        /// try_push / try_pop behave like a VecDeque model for every policy.
        #[test]
        fn matches_model(cap in 1usize..6, overflow in policy(), ops in proptest::collection::vec(op(), 0..60)) {
            let q = Queue::bounded(cap, overflow).unwrap();
            let mut model: VecDeque<u32> = VecDeque::new();
            let mut closed = false;
            for op in ops {
                match op {
                    Op::Push(v) => {
                        let got = q.try_push(v);
                        if closed {
                            prop_assert!(matches!(got, Err(PushError::Closed(x)) if x == v));
                        } else if model.len() < cap {
                            model.push_back(v);
                            prop_assert!(matches!(got, Ok(Admitted::Queued)));
                        } else {
                            match overflow {
                                Overflow::DropOldest => {
                                    let old = model.pop_front().unwrap();
                                    model.push_back(v);
                                    prop_assert_eq!(got.unwrap().into_evicted(), vec![old]);
                                }
                                Overflow::DropNewest => prop_assert!(matches!(got, Err(PushError::Dropped(x)) if x == v)),
                                _ => prop_assert!(matches!(got, Err(PushError::Full(x)) if x == v)),
                            }
                        }
                    }
                    Op::Pop => prop_assert_eq!(q.try_pop(), model.pop_front()),
                    Op::Close => {
                        prop_assert_eq!(q.close(), !closed);
                        closed = true;
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
            prop_assert_eq!(q.drain_now(), Vec::from(model));
        }
    }
}

//! Partition one stream to N workers by key, and collect their outputs.

use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use weft_core::{Panicked, catch_unwind};

/// A partitioner that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// No workers; pass at least 1.
    #[error("partition needs at least 1 worker; pass 1 or more")]
    ZeroWorkers,
    /// The per-worker queue has capacity 0; pass at least 1.
    #[error("partition queue capacity must be at least 1; pass 1 or more")]
    ZeroCapacity,
}

/// Routes each item of a stream to one of `workers` tasks by the stable hash
/// of its key, so items with the same key are handled by the same worker, one
/// at a time, in input order. Workers' outputs are collected into one stream.
///
/// Every queue is bounded (`capacity` per worker, and the same for the
/// output): a slow worker slows the router rather than growing memory.
///
/// Panics are contained per item. A panic in the handler, whether it comes
/// while the handler makes its future or while that future runs, becomes
/// that item's `Err(Panicked)` and the worker carries on. A panic in the key
/// function becomes that item's `Err(Panicked)` too (the item reaches no
/// worker) and the router carries on. A panic in the input stream itself
/// ends the input: the output yields an `Err(Panicked)` for it, then ends
/// once the items already routed are handled; it never ends as if the input
/// had simply run out.
///
/// The output stream ends when the input has ended and every worker has
/// finished; dropping it aborts the router and the workers.
///
/// ```
/// use futures::{StreamExt, stream};
/// use weft_fanout::partition::Partitioner;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let events = stream::iter((0..100u32).map(|i| (i % 7, i)));
/// let p = Partitioner::new(4, 16).unwrap();
/// let out: Vec<_> = p
///     .run(events, |(user, _)| *user, |(user, i)| async move { (user, i * 2) })
///     .collect()
///     .await;
/// assert_eq!(out.len(), 100);
/// // Per key, outputs keep input order.
/// let user3: Vec<u32> = out.iter().map(|r| *r.as_ref().unwrap()).filter(|(u, _)| *u == 3).map(|(_, v)| v / 2).collect();
/// assert!(user3.windows(2).all(|w| w[0] < w[1]));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Partitioner {
    workers: usize,
    capacity: usize,
}

impl Partitioner {
    /// `workers` workers with a queue of `capacity` items each.
    pub fn new(workers: usize, capacity: usize) -> Result<Self, PartitionError> {
        if workers == 0 {
            return Err(PartitionError::ZeroWorkers);
        }
        if capacity == 0 {
            return Err(PartitionError::ZeroCapacity);
        }
        Ok(Partitioner { workers, capacity })
    }

    /// The worker a key goes to: a hash with fixed keys, the same in every
    /// run of the same build.
    pub fn worker_for<K: Hash + ?Sized>(&self, key: &K) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.workers as u64) as usize
    }

    /// Spawns the router and the workers on the current tokio runtime and
    /// returns the stream of outputs (in completion order across workers).
    pub fn run<St, K, KF, F, Fut, O>(&self, input: St, key: KF, f: F) -> Partitioned<O>
    where
        St: Stream + Send + 'static,
        St::Item: Send + 'static,
        K: Hash,
        KF: Fn(&St::Item) -> K + Send + 'static,
        F: FnMut(St::Item) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let shared = Arc::new(Shared {
            routed: (0..self.workers).map(|_| AtomicU64::new(0)).collect(),
            completed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            key_panicked: AtomicU64::new(0),
        });
        let (out_tx, out_rx) = mpsc::channel(self.capacity);
        let mut queues = Vec::with_capacity(self.workers);
        for worker in 0..self.workers {
            let (tx, mut rx) = mpsc::channel::<St::Item>(self.capacity);
            queues.push(tx);
            let out_tx = out_tx.clone();
            let mut f = f.clone();
            let shared = shared.clone();
            tasks.spawn(async move {
                while let Some(item) = rx.recv().await {
                    // The handler may panic while making its future as well
                    // as while it runs: either way it is this item's panic.
                    let out = match std::panic::catch_unwind(AssertUnwindSafe(|| f(item))) {
                        Ok(fut) => catch_unwind(fut).await,
                        Err(payload) => Err(Panicked::from_payload(payload.as_ref())),
                    };
                    match &out {
                        Ok(_) => shared.completed.fetch_add(1, Ordering::Relaxed),
                        Err(p) => {
                            tracing::error!(worker, panic = %p, "partition handler panicked");
                            shared.panicked.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    if out_tx.send(out).await.is_err() {
                        break;
                    }
                }
            });
        }
        let me = *self;
        let router_shared = shared.clone();
        tasks.spawn(async move {
            let mut input = std::pin::pin!(input);
            while let Some(item) = input.next().await {
                // A key function that panics loses its item only: the item
                // cannot be routed, so its error goes straight to the output.
                let w =
                    match std::panic::catch_unwind(AssertUnwindSafe(|| me.worker_for(&key(&item))))
                    {
                        Ok(w) => w,
                        Err(payload) => {
                            let panic = Panicked::from_payload(payload.as_ref());
                            tracing::error!(panic = %panic, "partition key function panicked");
                            router_shared.key_panicked.fetch_add(1, Ordering::Relaxed);
                            drop(item);
                            if out_tx.send(Err(panic)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                    };
                router_shared.routed[w].fetch_add(1, Ordering::Relaxed);
                if queues[w].send(item).await.is_err() {
                    break;
                }
            }
            tracing::debug!("partition input ended");
        });
        Partitioned {
            rx: out_rx,
            tasks,
            shared,
        }
    }
}

#[derive(Debug)]
struct Shared {
    routed: Vec<AtomicU64>,
    completed: AtomicU64,
    panicked: AtomicU64,
    key_panicked: AtomicU64,
}

/// A snapshot of a partition's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PartitionStats {
    /// Items routed to each worker, by worker index.
    pub routed: Vec<u64>,
    /// Items handled without a panic.
    pub completed: u64,
    /// Items whose handler panicked (while making its future or while it
    /// ran).
    pub panicked: u64,
    /// Items whose key function panicked: routed to no worker, each output
    /// as an `Err(Panicked)`.
    pub key_panicked: u64,
}

/// The outputs of [`Partitioner::run`]: one `Result` per input item,
/// `Err(Panicked)` where the handler or the key function panicked (and one
/// more `Err(Panicked)` if the input stream itself panicked).
pub struct Partitioned<O> {
    rx: mpsc::Receiver<Result<O, Panicked>>,
    // Dropping the set aborts the router and the workers.
    tasks: JoinSet<()>,
    shared: Arc<Shared>,
}

impl<O> Partitioned<O> {
    /// A snapshot of the counters: items routed per worker, handled, and
    /// panicked. Routed minus handled (completed and panicked) is what is
    /// queued or in flight; every input item read so far is either routed or
    /// counted in `key_panicked`.
    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            routed: self
                .shared
                .routed
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            completed: self.shared.completed.load(Ordering::Relaxed),
            panicked: self.shared.panicked.load(Ordering::Relaxed),
            key_panicked: self.shared.key_panicked.load(Ordering::Relaxed),
        }
    }
}

impl<O> fmt::Debug for Partitioned<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitioned")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl<O> Stream for Partitioned<O> {
    type Item = Result<O, Panicked>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Reap finished tasks so the set does not grow; never blocks. A task
        // that died of a panic (the input stream panicked under the router)
        // is reported, not taken for a normal end.
        while let Some(done) = self.tasks.try_join_next() {
            if let Some(panic) = task_panic(done) {
                return Poll::Ready(Some(Err(panic)));
            }
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(out) => Poll::Ready(Some(out)),
            None => {
                // Every sender is gone, so every task has finished or is
                // finishing: join them all before ending, so that a panic
                // is never lost to a race with the channel closing.
                while let Some(done) = ready!(self.tasks.poll_join_next(cx)) {
                    if let Some(panic) = task_panic(done) {
                        return Poll::Ready(Some(Err(panic)));
                    }
                }
                Poll::Ready(None)
            }
        }
    }
}

/// The panic a router or worker task died of, logged and ready to hand out.
fn task_panic(done: Result<(), tokio::task::JoinError>) -> Option<Panicked> {
    let err = done.err()?;
    let panic = Panicked::from_payload(err.try_into_panic().ok()?.as_ref());
    tracing::error!(panic = %panic, "partition task panicked; its input ends here");
    Some(panic)
}

//! Batching by size, weight and time.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use weft_core::Panicked;

use crate::channel::{Emitter, Inlet, StageCtx};

/// Which clock closes a batch on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeRule {
    /// Close the batch when its first item is this old: bounds the latency
    /// of every item. If the stage is held up past that (its downstream is
    /// full), the batch closes before it takes any more items.
    MaxAge(Duration),
    /// Close the batch when no item has arrived for this long: keeps a
    /// steady trickle together, closes as soon as the input pauses.
    IdleGap(Duration),
}

pub(crate) type WeighFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// How a batch stage groups items into `Vec<T>`.
///
/// A batch is emitted when it reaches `max_size` items, or when adding the
/// next item would take it over `max_weight` (an item heavier than the limit
/// travels alone), or when its [`TimeRule`] fires. A batch is never empty;
/// the partial batch is emitted when the input completes and on shutdown.
///
/// ```
/// use std::time::Duration;
/// use weft_pipeline::Batch;
///
/// // Up to 500 rows or 1 MiB, and no row waits more than 50 ms.
/// let batch = Batch::<String>::size(500)
///     .max_weight(1 << 20, |row| row.len() as u64)
///     .max_age(Duration::from_millis(50));
/// # let _ = batch;
/// ```
pub struct Batch<T> {
    pub(crate) max_size: usize,
    pub(crate) weight: Option<(u64, WeighFn<T>)>,
    pub(crate) time: Option<TimeRule>,
    pub(crate) capacity: usize,
}

impl<T> Batch<T> {
    /// Batches of at most `max_size` items.
    pub fn size(max_size: usize) -> Self {
        Batch {
            max_size,
            weight: None,
            time: None,
            capacity: crate::stage::DEFAULT_CAPACITY,
        }
    }

    /// Batches whose items weigh at most `max` in all, by `weigh`.
    pub fn max_weight(
        mut self,
        max: u64,
        weigh: impl Fn(&T) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.weight = Some((max, Arc::new(weigh)));
        self
    }

    /// Close a batch when its first item is `age` old ([`TimeRule::MaxAge`]).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.time = Some(TimeRule::MaxAge(age));
        self
    }

    /// Close a batch when no item arrived for `gap` ([`TimeRule::IdleGap`]).
    pub fn idle_gap(mut self, gap: Duration) -> Self {
        self.time = Some(TimeRule::IdleGap(gap));
        self
    }

    /// The time rule, given as a value.
    pub fn time_rule(mut self, rule: TimeRule) -> Self {
        self.time = Some(rule);
        self
    }

    /// Items that may wait in front of the batch stage (default
    /// [`DEFAULT_CAPACITY`](crate::DEFAULT_CAPACITY)).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
}

impl<T> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("max_size", &self.max_size)
            .field("max_weight", &self.weight.as_ref().map(|w| w.0))
            .field("time", &self.time)
            .field("capacity", &self.capacity)
            .finish()
    }
}

struct Open<T> {
    items: Vec<T>,
    weight: u64,
    deadline: Option<Instant>,
}

pub(crate) async fn batcher<T: Send + 'static>(
    ctx: Arc<StageCtx<T>>,
    cfg: Batch<T>,
    inlet: Inlet<T>,
    mut em: Emitter<Vec<T>>,
) {
    let shared = ctx.shared.clone();
    let stats = ctx.stats.clone();
    let mut open = Open {
        items: Vec::new(),
        weight: 0,
        deadline: None,
    };
    let close = |open: &mut Open<T>| {
        open.weight = 0;
        open.deadline = None;
        std::mem::take(&mut open.items)
    };
    loop {
        let got = match inlet.try_recv() {
            Some(c) => Some(c),
            None => {
                if em.flush().await.is_err() {
                    break;
                }
                match open.deadline {
                    None => match inlet.recv(&shared, &stats).await {
                        Some(c) => Some(c),
                        None => break,
                    },
                    Some(deadline) => {
                        let start = Instant::now();
                        let r = tokio::select! {
                            biased;
                            c = inlet.recv_uncounted(&shared) => match c {
                                Some(c) => Some(c),
                                None => break,
                            },
                            _ = sleep_until(deadline) => None,
                        };
                        stats.idle_ns.add(start.elapsed().as_nanos() as u64);
                        r
                    }
                }
            }
        };
        let start = Instant::now();
        let Some(chunk) = got else {
            // The time rule fired; the batch is not empty (a deadline is set
            // only once an item is in).
            let batch = close(&mut open);
            debug_assert!(!batch.is_empty());
            stats.completed.add(batch.len() as u64);
            if em.emit(batch).await.is_err() || em.flush().await.is_err() {
                break;
            }
            continue;
        };
        stats.received.add(chunk.len() as u64);
        let mut stopped = false;
        let mut it = chunk.into_iter();
        if cfg.weight.is_none() && cfg.time.is_none() {
            // Size only: move runs of items at once.
            while it.len() > 0 {
                let room = cfg.max_size - open.items.len();
                open.items.extend(it.by_ref().take(room));
                if open.items.len() >= cfg.max_size {
                    let batch = close(&mut open);
                    stats.completed.add(batch.len() as u64);
                    if em.emit(batch).await.is_err() {
                        stopped = true;
                        break;
                    }
                }
            }
        }
        // Not a `for` loop: the size-only path above may have stopped.
        while !stopped {
            let Some(item) = it.next() else { break };
            // One clock read per item, and another only after a wait.
            let mut now = cfg.time.map(|_| Instant::now());
            let overdue = match (cfg.time, now, open.deadline) {
                (Some(TimeRule::MaxAge(_)), Some(t), Some(deadline)) => t >= deadline,
                _ => false,
            };
            if overdue {
                // The batch is overdue (the stage was held up, handing an
                // earlier batch downstream, past its deadline): it closes
                // before it takes an item that came after it was due. The
                // timer alone would not do: the input is read first.
                let batch = close(&mut open);
                stats.completed.add(batch.len() as u64);
                if em.emit(batch).await.is_err() {
                    stats.cancelled.incr();
                    stopped = true;
                    break;
                }
                now = Some(Instant::now());
            }
            let w = match &cfg.weight {
                Some((max, weigh)) => {
                    let w = match std::panic::catch_unwind(AssertUnwindSafe(|| weigh(&item))) {
                        Ok(w) => w,
                        Err(p) => {
                            // A bug in the weigh function, not in the item:
                            // the stage cannot go on. The item is failed,
                            // the rest is cancelled, the stage named.
                            let p = Panicked::from_payload(p.as_ref());
                            ctx.give_up(None, p.into());
                            stopped = true;
                            break;
                        }
                    };
                    if !open.items.is_empty() && open.weight.saturating_add(w) > *max {
                        let batch = close(&mut open);
                        stats.completed.add(batch.len() as u64);
                        if em.emit(batch).await.is_err() {
                            stats.cancelled.incr();
                            stopped = true;
                            break;
                        }
                        now = cfg.time.map(|_| Instant::now());
                    }
                    w
                }
                None => 0,
            };
            match (cfg.time, now) {
                (Some(TimeRule::MaxAge(age)), Some(now)) if open.items.is_empty() => {
                    open.deadline = Some(now + age);
                }
                (Some(TimeRule::IdleGap(gap)), Some(now)) => open.deadline = Some(now + gap),
                _ => {}
            }
            open.items.push(item);
            open.weight = open.weight.saturating_add(w);
            let full = open.items.len() >= cfg.max_size
                || cfg
                    .weight
                    .as_ref()
                    .is_some_and(|(max, _)| open.weight >= *max);
            if full {
                let batch = close(&mut open);
                stats.completed.add(batch.len() as u64);
                if em.emit(batch).await.is_err() {
                    stopped = true;
                    break;
                }
            }
        }
        stats.busy_ns.add(start.elapsed().as_nanos() as u64);
        if stopped {
            stats.cancelled.add(it.len() as u64);
            break;
        }
    }
    if shared.kill.is_cancelled() {
        stats.cancelled.add(open.items.len() as u64);
    } else if !open.items.is_empty() {
        // Input completed (or the source was stopped): flush the partial batch.
        let batch = close(&mut open);
        stats.completed.add(batch.len() as u64);
        if em.emit(batch).await.is_ok() {
            let _ = em.flush().await;
        }
        return;
    }
    let _ = em.flush().await;
}

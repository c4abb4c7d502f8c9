//! A stage's configuration: workers, ordering, queue, error policy.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use weft_core::{BoxError, Classify, DefaultClassifier, Outcome, Overflow, Panicked};

use crate::error::DeadLetter;

/// Items waiting in a stage's input queue, by default: enough to smooth
/// bursts between stages, small enough that a stalled stage holds little.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Items moved between stages per hand-off for synchronous stages, by
/// default: large enough to amortise the channel (one hand-off per 128
/// items), small enough to keep latency low (a partial chunk is sent as soon
/// as the stage runs out of input).
pub const DEFAULT_CHUNK: usize = 128;

pub(crate) type KeyFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;
pub(crate) type DeadLetterFn<T> = Arc<dyn Fn(DeadLetter<T>) + Send + Sync>;

/// What a stage does with an item that failed (returned an error after any
/// retries, or panicked).
pub enum OnError<T> {
    /// Cancel the whole pipeline: the source stops, every stage stops, and
    /// `run` returns [`PipelineError::Failed`](crate::PipelineError::Failed).
    /// The default: an error nobody planned for should not pass silently.
    FailFast,
    /// Count the item as failed, log it, and go on.
    Skip,
    /// Hand the item and its error to a dead-letter sink, and go on. The
    /// sink also receives items shed by the stage's overflow policy.
    DeadLetter(DeadLetterFn<T>),
}

impl<T> OnError<T> {
    /// A dead-letter policy from a closure.
    pub fn dead_letter(sink: impl Fn(DeadLetter<T>) + Send + Sync + 'static) -> Self {
        OnError::DeadLetter(Arc::new(sink))
    }
}

impl<T> Clone for OnError<T> {
    fn clone(&self) -> Self {
        match self {
            OnError::FailFast => OnError::FailFast,
            OnError::Skip => OnError::Skip,
            OnError::DeadLetter(f) => OnError::DeadLetter(f.clone()),
        }
    }
}

impl<T> fmt::Debug for OnError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnError::FailFast => f.write_str("FailFast"),
            OnError::Skip => f.write_str("Skip"),
            OnError::DeadLetter(_) => f.write_str("DeadLetter(..)"),
        }
    }
}

/// Retries of a failed item, before the stage's [`OnError`] policy applies.
///
/// An error is retried when the classifier says it is a
/// [`Outcome::Failure`] (the default classifier retries every error);
/// [`Outcome::Ignored`] goes straight to the policy. Panics are never
/// retried; a panic in the classifier counts as the item's panic (the
/// stage's [`OnError`] policy applies to it). Waits `backoff`, doubling
/// after each attempt up to `max_backoff`.
#[derive(Clone)]
pub struct Retry {
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) classify: Arc<dyn Classify<(), BoxError> + Send + Sync>,
}

impl Retry {
    /// Up to `attempts` attempts in all (the first included), 10 ms apart at
    /// first, doubling up to 1 s.
    pub fn attempts(attempts: u32) -> Self {
        Retry {
            attempts: attempts.max(1),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            classify: Arc::new(DefaultClassifier),
        }
    }

    /// The wait before the first retry (default 10 ms).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest wait between attempts (default 1 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Which errors are worth retrying: a [`Classify`] over
    /// `Result<(), BoxError>` (only `Err` is ever passed).
    pub fn classify(mut self, c: impl Classify<(), BoxError> + Send + Sync + 'static) -> Self {
        self.classify = Arc::new(c);
        self
    }

    /// Whether `err` is worth retrying, with the error back; `Err` if the
    /// classifier panicked (a panic is not let out of a stage).
    pub(crate) fn should_retry(&self, err: BoxError) -> Result<(bool, BoxError), Panicked> {
        let r: Result<(), BoxError> = Err(err);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.classify.classify(&r)))
                .map_err(|p| Panicked::from_payload(p.as_ref()))?;
        match r {
            Err(e) => Ok((outcome == Outcome::Failure, e)),
            Ok(()) => unreachable!("only errors are classified here"),
        }
    }

    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// How a parallel stage orders its output.
pub(crate) enum Mode<T> {
    Ordered,
    Unordered,
    Keyed(KeyFn<T>),
}

/// The configuration of one stage, for items of type `T` entering it.
///
/// A `&str` converts into a stage with that name and the defaults, so
/// `.map("double", |x| x * 2)` works; chain setters for the rest:
///
/// ```
/// use weft_core::Overflow;
/// use weft_pipeline::{OnError, Retry, Stage};
///
/// let stage: Stage<String> = Stage::new("lookup")
///     .workers(8)               // 8 spawned workers, truly parallel
///     .unordered()              // emit results as they finish
///     .capacity(256)            // at most 256 items wait in front of it
///     .overflow(Overflow::Block) // and a full queue slows the upstream down
///     .retry(Retry::attempts(3))
///     .on_error(OnError::Skip);
/// # let _ = stage;
/// ```
pub struct Stage<T> {
    pub(crate) name: String,
    pub(crate) workers: usize,
    pub(crate) mode: Mode<T>,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) chunk: Option<usize>,
    pub(crate) on_error: OnError<T>,
    pub(crate) retry: Option<Retry>,
    pub(crate) cloner: Option<fn(&T) -> T>,
}

impl<T> Stage<T> {
    /// A stage with the defaults: 1 worker, ordered output, capacity
    /// [`DEFAULT_CAPACITY`], `Overflow::Block` (backpressure), fail fast,
    /// no retries.
    pub fn new(name: impl Into<String>) -> Self {
        Stage {
            name: name.into(),
            workers: 1,
            mode: Mode::Ordered,
            capacity: DEFAULT_CAPACITY,
            overflow: Overflow::Block,
            chunk: None,
            on_error: OnError::FailFast,
            retry: None,
            cloner: None,
        }
    }

    /// Worker tasks, each spawned and truly parallel (default 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Emit results in input order (the default). With more than one worker
    /// the stage hands chunks to its workers in turn and collects them in the
    /// same turn, so a slow item holds back the ones behind it. Only the
    /// output is ordered: side effects inside the function happen in
    /// whatever order the workers run.
    pub fn ordered(mut self) -> Self {
        self.mode = Mode::Ordered;
        self
    }

    /// Emit results as they finish.
    pub fn unordered(mut self) -> Self {
        self.mode = Mode::Unordered;
        self
    }

    /// Per-key ordered parallelism: items with the same key go to the same
    /// worker and are processed in order; different keys run in parallel.
    /// The output keeps each key's order (not the order across keys).
    pub fn partition_by<K: Hash>(mut self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Self {
        let state = std::collections::hash_map::RandomState::new();
        self.mode = Mode::Keyed(Arc::new(move |t: &T| state.hash_one(key(t))));
        self
    }

    /// How many items may wait in the stage's input queue (default
    /// [`DEFAULT_CAPACITY`]). Items move in chunks, so the bound is rounded
    /// up to a whole number of chunks.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// What a full input queue does with a new item (default
    /// `Overflow::Block`: backpressure). Any other policy moves items one by
    /// one so that exactly the items that do not fit are shed; shed items are
    /// counted as dropped and handed to the dead-letter sink if there is one.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Items per hand-off into this stage (default [`DEFAULT_CHUNK`] for
    /// synchronous stages, 1 for asynchronous ones so that slow items spread
    /// over the workers).
    pub fn chunk(mut self, n: usize) -> Self {
        self.chunk = Some(n);
        self
    }

    /// What to do with an item that failed (default [`OnError::FailFast`]).
    pub fn on_error(mut self, policy: OnError<T>) -> Self
    where
        T: Clone,
    {
        self.cloner = Some(T::clone);
        self.on_error = policy;
        self
    }

    /// Skip failed items (count and log them): shorthand for
    /// `on_error(OnError::Skip)`, without needing `T: Clone`.
    pub fn skip_errors(mut self) -> Self {
        self.on_error = OnError::Skip;
        self
    }

    /// Send failed items to a dead-letter sink: shorthand for
    /// `on_error(OnError::dead_letter(sink))`.
    pub fn dead_letter(self, sink: impl Fn(DeadLetter<T>) + Send + Sync + 'static) -> Self
    where
        T: Clone,
    {
        self.on_error(OnError::dead_letter(sink))
    }

    /// Retry failed items before the error policy applies (needs
    /// `T: Clone`: each attempt gets a copy of the item).
    pub fn retry(mut self, retry: Retry) -> Self
    where
        T: Clone,
    {
        self.cloner = Some(T::clone);
        self.retry = Some(retry);
        self
    }

    pub(crate) fn keeps_items(&self) -> bool {
        self.retry.is_some() || matches!(self.on_error, OnError::DeadLetter(_))
    }
}

impl<T> From<&str> for Stage<T> {
    fn from(name: &str) -> Self {
        Stage::new(name)
    }
}

impl<T> From<String> for Stage<T> {
    fn from(name: String) -> Self {
        Stage::new(name)
    }
}

impl<T> fmt::Debug for Stage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Ordered => "ordered",
            Mode::Unordered => "unordered",
            Mode::Keyed(_) => "keyed",
        };
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("mode", &mode)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("on_error", &self.on_error)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

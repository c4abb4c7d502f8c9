//! The pool builder, shared by every kind of pool.

use std::sync::Arc;
use std::time::Duration;

use weft_core::queue::Queue;
use weft_core::{Overflow, OverflowError, PanicPolicy};

use crate::BuildError;
use crate::adaptive::Scaling;
use crate::core::{Config, Runner, Shared};

/// Configures a pool; finish with [`build`](Builder::build) (async jobs),
/// [`build_stateful`](Builder::build_stateful) or
/// [`build_blocking`](Builder::build_blocking).
///
/// ```
/// use std::time::Duration;
/// use weft_core::Overflow;
/// use weft_pool::WorkerPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = WorkerPool::builder()
///     .name("thumbnails")
///     .workers(4)
///     .queue_capacity(1_000)
///     .overflow(Overflow::Reject)
///     .timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(pool.stats().workers, 4);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    name: String,
    workers: Option<usize>,
    min: Option<usize>,
    max: Option<usize>,
    capacity: usize,
    overflow: Overflow,
    timeout: Option<Duration>,
    cancel_grace: Duration,
    scaling: Option<Scaling>,
    panic_policy: PanicPolicy,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

/// The default queue capacity: enough to absorb a burst of a few
/// milliseconds at a million jobs a second while bounding the queue's memory
/// to about 100 KiB of slots.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

impl Builder {
    /// A builder with the defaults documented on each setter.
    pub fn new() -> Self {
        Builder {
            name: "pool".to_owned(),
            workers: None,
            min: None,
            max: None,
            capacity: DEFAULT_QUEUE_CAPACITY,
            overflow: Overflow::Block,
            timeout: None,
            cancel_grace: Duration::from_millis(250),
            scaling: None,
            panic_policy: PanicPolicy::Report,
        }
    }

    /// The name used in tracing events, metrics labels and the shutdown
    /// report. Default `"pool"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed number of workers. Default: the machine's available
    /// parallelism (one worker per core keeps every core busy without
    /// oversubscribing tokio's own threads). 0 is refused.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The fewest workers an adaptive pool keeps. Setting `min_workers` below
    /// `max_workers` makes the pool adaptive (see [`Scaling`]).
    pub fn min_workers(mut self, n: usize) -> Self {
        self.min = Some(n);
        self
    }

    /// The most workers an adaptive pool runs.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max = Some(n);
        self
    }

    /// The scaling rule of an adaptive pool. Default [`Scaling::default`].
    /// Checked when the pool is built (even a fixed-size one, which ignores
    /// it): a rule that makes no sense, such as a zero interval, is refused
    /// with [`BuildError::InvalidScaling`].
    pub fn scaling(mut self, s: Scaling) -> Self {
        self.scaling = Some(s);
        self
    }

    /// How many queue items may wait (a batch is one item). Default
    /// [`DEFAULT_QUEUE_CAPACITY`]; 0 is refused.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// What `submit` does when the queue is full. Default
    /// [`Overflow::Block`] (backpressure).
    pub fn overflow(mut self, o: Overflow) -> Self {
        self.overflow = o;
        self
    }

    /// A per-job time limit: a job running longer is dropped and its handle
    /// gets [`JobError::TimedOut`](crate::JobError::TimedOut). Default none.
    /// The drop happens inside the job's panic boundary: a `Drop` that
    /// panics is logged and the job stays timed out (counted once).
    /// Async pools only.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// How long before the shutdown deadline running jobs are asked to stop
    /// through the pool's [`CancellationToken`](tokio_util::sync::CancellationToken)
    /// before they are aborted. Default 250 ms (at most half the time left).
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// What a panicking job does beyond being caught, counted and logged
    /// (the worker carries on either way):
    ///
    /// - [`PanicPolicy::Report`] (the default): its handle resolves to
    ///   [`JobError::Panicked`](crate::JobError::Panicked).
    /// - [`PanicPolicy::Propagate`]: awaiting its handle (a
    ///   [`JobHandle`](crate::JobHandle), a
    ///   [`BatchHandle`](crate::BatchHandle) holding it, or the tower
    ///   [`Pool`](crate::service::Pool)'s response future) panics again with the
    ///   job's message, as a tokio `JoinHandle` + `resume_unwind` would. A
    ///   job nobody awaits (`execute`, a dropped handle) is only reported.
    /// - [`PanicPolicy::Abort`]: the process aborts once the panic is
    ///   counted and logged, also for a panic in the drop of a job's future
    ///   or output, and of a job evicted (`DropOldest`) or handed back by a
    ///   shutdown and dropped. One exception: a job still running when the
    ///   shutdown deadline aborts its worker is dropped by tokio, which
    ///   catches a panic in that drop and discards it (the job counts as
    ///   aborted; the panic hook prints the panic, nothing aborts).
    ///
    /// Jobs handed back by a shutdown and run with
    /// [`Unstarted::run`](crate::Unstarted::run) run outside the pool:
    /// `Abort` does not apply there, and their handles follow the policy
    /// they were made with.
    ///
    /// ```
    /// use weft_core::PanicPolicy;
    /// use weft_pool::WorkerPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = WorkerPool::builder()
    ///     .workers(1)
    ///     .panic_policy(PanicPolicy::Propagate)
    ///     .build()
    ///     .unwrap();
    /// let h = pool.submit(async { panic!("boom") }).await.unwrap();
    /// // Awaited in a task of its own, the panic comes out of that task.
    /// let err = tokio::spawn(async move { h.await }).await.unwrap_err();
    /// assert!(err.is_panic());
    /// # }
    /// ```
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    pub(crate) fn start<R: Runner>(self, runner: R) -> Result<Arc<Shared<R>>, BuildError> {
        OverflowError::check(self.capacity, self.overflow)?;
        if self.timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTimeout);
        }
        if R::THREADS && self.timeout.is_some() {
            return Err(BuildError::TimeoutOnBlocking);
        }
        if let Some(s) = &self.scaling {
            s.check().map_err(BuildError::InvalidScaling)?;
        }
        let default = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (min, max) = match (self.min, self.max) {
            (None, None) => {
                let n = self.workers.unwrap_or(default);
                (n, n)
            }
            (min, max) => {
                let max = max
                    .or(self.workers)
                    .unwrap_or(default.max(min.unwrap_or(1)));
                (min.unwrap_or(1), max)
            }
        };
        if min == 0 || max == 0 || self.workers == Some(0) {
            return Err(BuildError::ZeroWorkers);
        }
        if min > max {
            return Err(BuildError::MinAboveMax { min, max });
        }
        let workers = self.workers.unwrap_or(min).clamp(min, max);
        let scaling = (min < max).then(|| self.scaling.unwrap_or_default());
        let queue = Queue::bounded(self.capacity, self.overflow)?;
        let cfg = Config {
            metrics: crate::metrics::PoolMetrics::new(&self.name),
            name: self.name.into(),
            timeout: self.timeout,
            cancel_grace: self.cancel_grace,
            scaling,
            panic_policy: self.panic_policy,
        };
        Shared::start(runner, queue, cfg, workers, min, max)
    }
}

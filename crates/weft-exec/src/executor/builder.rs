//! Building a [`BoundedExecutor`].

use std::time::Duration;

use weft_core::{Overflow, OverflowError, PanicPolicy};

use super::BoundedExecutor;
use crate::error::BuildError;

/// Configures a [`BoundedExecutor`]; read it like the config file it replaces.
///
/// ```
/// use std::time::Duration;
/// use weft_core::Overflow;
/// use weft_exec::BoundedExecutor;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let exec = BoundedExecutor::builder()
///     .name("thumbnails")
///     .max_running(16)
///     .queue_capacity(256)
///     .overflow(Overflow::WaitTimeout(Duration::from_millis(50)))
///     .queue_timeout(Duration::from_secs(1))
///     .run_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(exec.stats().max_running, 16);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    pub(super) name: String,
    pub(super) max_running: usize,
    pub(super) queue_capacity: usize,
    pub(super) overflow: Overflow,
    pub(super) queue_timeout: Option<Duration>,
    pub(super) run_timeout: Option<Duration>,
    pub(super) fairness: u32,
    pub(super) cancel_grace: Duration,
    pub(super) panic_policy: PanicPolicy,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            name: "executor".to_owned(),
            max_running: 64,
            queue_capacity: 1024,
            overflow: Overflow::Block,
            queue_timeout: None,
            run_timeout: None,
            fairness: 8,
            cancel_grace: Duration::from_millis(250),
            panic_policy: PanicPolicy::Report,
        }
    }
}

impl Builder {
    /// A builder with the defaults below.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name used in tracing, metrics and the shutdown report.
    /// Default `"executor"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many permits exist: at most this many unit-weight tasks run at
    /// once. Default 64: enough to keep I/O-bound work busy while bounding the
    /// memory and downstream connections a burst can take. At most
    /// [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = n;
        self
    }

    /// How many tasks may wait for a slot **in total**: the high, normal and
    /// low lanes together, including the task the dispatcher has taken off
    /// its lane as the next to start (it still counts until it starts or
    /// fails). A spawn that would make it `n + 1` gets the
    /// [`overflow`](Self::overflow) policy, whatever its lane. Running tasks
    /// do not count. Default 1024: a burst of a second or so for typical
    /// request rates, not an unbounded backlog. At most
    /// [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft_core::Overflow;
    /// use weft_exec::{BoundedExecutor, Priority, SpawnError, TaskOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let exec = BoundedExecutor::builder()
    ///     .max_running(1)
    ///     .queue_capacity(2)
    ///     .overflow(Overflow::Reject)
    ///     .build()
    ///     .unwrap();
    /// let at = |p| TaskOptions::new().priority(p);
    /// let _running = exec.spawn(tokio::time::sleep(Duration::from_secs(1))).await.unwrap();
    /// let _h = exec.spawn_with(at(Priority::High), async {}).await.unwrap();
    /// let _l = exec.spawn_with(at(Priority::Low), async {}).await.unwrap();
    /// // Two wait (in two lanes): the bound is reached for every lane.
    /// let refused = exec.spawn_with(at(Priority::Normal), async {}).await;
    /// assert!(matches!(refused, Err(SpawnError::Full(_))));
    /// # }
    /// ```
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// What `spawn` does when `queue_capacity` tasks already wait. Default
    /// [`Overflow::Block`] (backpressure on the caller; waiting spawns are
    /// let in first come, first served). Under [`Overflow::DropOldest`] the
    /// victim is the oldest task of the lowest non-empty lane (low, then
    /// normal, then high), or, when all lanes are empty, the task the
    /// dispatcher holds as next to start. See
    /// [`BoundedExecutor`](super::BoundedExecutor) for every policy.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// How long a queued task may wait for a running slot before it fails
    /// with [`TaskError::QueueTimeout`](crate::TaskError::QueueTimeout)
    /// without running. Counted from when the task enters its lane (time a
    /// `spawn` spent waiting for room under `Block` or `WaitTimeout` is not
    /// included; that wait is bounded by the overflow policy). Default: no
    /// limit.
    pub fn queue_timeout(mut self, d: Duration) -> Self {
        self.queue_timeout = Some(d);
        self
    }

    /// How long a task may run once started before it is dropped and fails
    /// with [`TaskError::TimedOut`](crate::TaskError::TimedOut). Default: no
    /// limit. Set it: a slot timeout alone leaves admitted work unbounded.
    pub fn run_timeout(mut self, d: Duration) -> Self {
        self.run_timeout = Some(d);
        self
    }

    /// Anti-starvation: every `n`-th dispatch starts looking at a lower lane
    /// first (normal and low in turn), so low-priority work still advances
    /// while high-priority work keeps arriving. Default 8 (lower lanes get at
    /// least 1/16 of dispatches each when the high lane is never empty).
    /// `0` turns it off (strict priority).
    pub fn fairness(mut self, n: u32) -> Self {
        self.fairness = n;
        self
    }

    /// How long before the shutdown deadline running tasks are asked to
    /// stop through the executor's
    /// [`cancellation_token`](BoundedExecutor::cancellation_token), before
    /// what is left is aborted at the deadline. At most half the time the
    /// shutdown has left. Default 250 ms (as weft-pool's). Zero means no
    /// cancel phase: the token is cancelled at the deadline, together with
    /// the abort, so tasks that watch it are aborted, not cancelled.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// What a panicking task does beyond being caught, counted and logged
    /// with `tracing::error!`. Default [`PanicPolicy::Report`]: its handle
    /// resolves to [`TaskError::Panicked`](crate::TaskError::Panicked) and
    /// the executor carries on. [`PanicPolicy::Propagate`]: awaiting its
    /// handle panics with the task's panic message (as a tokio
    /// `JoinHandle` + `resume_unwind`). [`PanicPolicy::Abort`]: the process
    /// aborts.
    ///
    /// ```
    /// use weft_core::PanicPolicy;
    /// use weft_exec::BoundedExecutor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let exec = BoundedExecutor::builder()
    ///     .panic_policy(PanicPolicy::Propagate)
    ///     .build()
    ///     .unwrap();
    /// let h = exec.spawn(async { panic!("bad row") }).await.unwrap();
    /// // Awaited in a task of its own, the panic reaches that task's JoinHandle.
    /// let err = tokio::spawn(h).await.unwrap_err();
    /// assert!(err.is_panic());
    /// assert_eq!(exec.stats().panicked, 1);
    /// # }
    /// ```
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    /// Builds the executor and spawns its dispatcher on the current tokio
    /// runtime. Every task of the executor runs on that runtime, wherever
    /// `spawn` is called from (another runtime, or a thread outside any:
    /// `try_spawn` works there too).
    pub fn build(self) -> Result<BoundedExecutor, BuildError> {
        if self.max_running == 0 {
            return Err(BuildError::ZeroRunning);
        }
        if self.max_running > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(BuildError::RunningTooLarge(self.max_running));
        }
        OverflowError::check(self.queue_capacity, self.overflow)?;
        if self.queue_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(BuildError::QueueTooLarge(self.queue_capacity));
        }
        for d in [self.queue_timeout, self.run_timeout].into_iter().flatten() {
            if d.is_zero() {
                return Err(BuildError::Queue(OverflowError::ZeroTimeout));
            }
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        Ok(BoundedExecutor::from_builder(self, &handle))
    }
}

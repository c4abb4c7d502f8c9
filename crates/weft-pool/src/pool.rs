//! [`WorkerPool`]: a fixed or adaptive set of async workers draining one
//! bounded queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use weft_core::{Drain, ShutdownReport};

use crate::core::{Mode, Runner, Shared};
use crate::oneshot;
use crate::stats::PoolStats;
use crate::task::{
    AnyOk, AsyncRunner, BatchHandle, BatchTask, BoxTask, IsOk, JobHandle, JobTask, Judge,
};
use crate::{Builder, JobError, SubmitError};

/// How [`WorkerPool::shutdown`] treats queued work. Either way admission
/// closes at once, and at the deadline running jobs are first asked to stop
/// (the pool's cancellation token) and then aborted.
///
/// The duration is the time the shutdown may take; `Duration::MAX` (or any
/// duration past about 30 years) waits as long as the work takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownMode {
    /// Finish everything queued and running, until the deadline (`now + d`).
    Drain(Duration),
    /// Finish only the running jobs; hand the queued ones back unstarted.
    Cancel(Duration),
}

impl ShutdownMode {
    pub(crate) fn split(self) -> (Mode, Instant) {
        match self {
            ShutdownMode::Drain(d) => (Mode::Drain, deadline_after(d)),
            ShutdownMode::Cancel(d) => (Mode::Cancel, deadline_after(d)),
        }
    }
}

/// About 30 years: the deadline of a duration too long to add to an instant
/// (as tokio's own timers do for their far future).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, or about 30 years from now when `d` is longer than that (or
/// would overflow an `Instant`, as `Duration::MAX` does).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    let far = now + FAR_FUTURE;
    now.checked_add(d).map_or(far, |t| t.min(far))
}

/// Closes admission when the last clone of a pool is dropped; workers then
/// finish what is queued and exit.
pub(crate) struct Owner<R: Runner>(pub(crate) Arc<Shared<R>>);

impl<R: Runner> Drop for Owner<R> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<R: Runner> std::fmt::Debug for Owner<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Methods every pool has, written once.
macro_rules! common_pool_methods {
    () => {
        /// A snapshot of the pool's counters.
        pub fn stats(&self) -> $crate::PoolStats {
            self.inner.0.stats()
        }

        /// The pool's name.
        pub fn name(&self) -> &str {
            &self.inner.0.cfg.name
        }

        /// Whether admission is closed (shutdown started, or every clone of
        /// the pool was dropped).
        pub fn is_closed(&self) -> bool {
            self.inner.0.is_closed()
        }

        /// Sets the number of workers, at run time, safely while jobs run:
        /// new workers start at once; surplus workers finish their current
        /// job and exit (idle ones at once). On an adaptive pool this also
        /// widens `min_workers`/`max_workers` to include `n`. Returns the new
        /// target (at least 1).
        pub fn resize(&self, n: usize) -> usize {
            self.inner.0.resize(n)
        }

        /// The token the pool cancels when a shutdown reaches its deadline's
        /// grace period. Jobs that can stop early should watch it.
        pub fn cancellation_token(&self) -> tokio_util::sync::CancellationToken {
            self.inner.0.token().clone()
        }

        /// Shuts the pool down and reports what happened to every accepted
        /// job. Later calls (from any clone) wait for the first and return
        /// the same report. Queued jobs handed back by
        /// [`ShutdownMode::Cancel`](crate::ShutdownMode::Cancel) are dropped (their handles resolve to
        /// `JobError::Cancelled`).
        pub async fn shutdown(&self, mode: $crate::ShutdownMode) -> weft_core::ShutdownReport {
            let (mode, deadline) = mode.split();
            let r = self.inner.0.shutdown(mode, deadline).await;
            self.inner.0.drop_returned();
            r
        }
    };
}
#[allow(unused_imports)]
pub(crate) use common_pool_methods;

/// `Clone`, `Debug` and `Drain` for a pool that is generic over its workers'
/// state (`BlockingPool<St>`, `StatefulPool<St>`), written once.
macro_rules! state_pool_impls {
    ($pool:ident) => {
        impl<St: Send + 'static> Clone for $pool<St> {
            fn clone(&self) -> Self {
                $pool {
                    inner: self.inner.clone(),
                }
            }
        }

        impl<St: Send + 'static> std::fmt::Debug for $pool<St> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($pool)).field(&self.inner).finish()
            }
        }

        impl<St: Send + 'static> weft_core::Drain for $pool<St> {
            fn drain(
                &self,
                deadline: tokio::time::Instant,
            ) -> futures::future::BoxFuture<'_, weft_core::ShutdownReport> {
                Box::pin(async move {
                    let r = self
                        .inner
                        .0
                        .shutdown($crate::core::Mode::Drain, deadline)
                        .await;
                    self.inner.0.drop_returned();
                    r
                })
            }
        }
    };
}
pub(crate) use state_pool_impls;

/// The job inside a refused queue item of a state-generic pool.
pub(crate) fn unbox<T: 'static>(b: Box<dyn std::any::Any + Send>) -> T {
    *b.downcast::<T>()
        .unwrap_or_else(|_| unreachable!("a refused item is the job that was pushed"))
}

/// A pool of async workers draining one bounded queue.
///
/// Jobs are futures; each runs on one of the pool's workers (tokio tasks),
/// so at most `workers` jobs run at once and at most `queue_capacity` items
/// wait. Clones share one pool.
///
/// ```
/// use std::time::Duration;
/// use weft_pool::{ShutdownMode, WorkerPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = WorkerPool::builder().workers(2).queue_capacity(16).build().unwrap();
/// let handle = pool.submit(async { 6 * 7 }).await.unwrap();
/// assert_eq!(handle.await.unwrap(), 42);
///
/// // Many tiny jobs: one queue item, one admission.
/// let batch = pool.submit_batch((0..100u64).map(|i| async move { i })).await.unwrap();
/// let sum: u64 = batch.await.into_iter().map(Result::unwrap).sum();
/// assert_eq!(sum, 4950);
///
/// let report = pool.shutdown(ShutdownMode::Drain(Duration::from_secs(5))).await;
/// assert_eq!(report.completed, 101);
/// assert!(report.is_clean());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WorkerPool {
    inner: Arc<Owner<AsyncRunner>>,
}

/// A queued job handed back by [`WorkerPool::shutdown_returning`]. Run it
/// elsewhere with [`run`](Unstarted::run) (its handle then gets the result),
/// or drop it (its handle gets [`JobError::Cancelled`]).
pub struct Unstarted {
    task: BoxTask,
}

impl Unstarted {
    /// Jobs inside (more than one for a batch).
    pub fn jobs(&self) -> u64 {
        self.task.jobs()
    }

    /// Runs the job(s) here, delivering results to the original handles.
    /// Panics are caught and delivered as [`JobError::Panicked`] (under
    /// [`PanicPolicy::Propagate`](weft_core::PanicPolicy::Propagate) the
    /// original handle, made with the pool's policy, panics again when
    /// awaited; `Abort` does not apply here). Not counted in the pool's
    /// stats (the pool already counted them as returned).
    pub async fn run(self) {
        let slot = crate::core::Slot::default();
        let flag = std::sync::atomic::AtomicBool::new(false);
        let env = crate::core::Env::detached(&slot, &flag);
        crate::task::run_task(self.task, &env).await;
    }
}

impl std::fmt::Debug for Unstarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unstarted")
            .field("jobs", &self.jobs())
            .finish()
    }
}

fn unbox_job<F, J>(item: BoxTask) -> F
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    J: Judge<F::Output>,
{
    item.into_any()
        .downcast::<JobTask<F, J>>()
        .map(|t| t.into_future())
        .unwrap_or_else(|_| unreachable!("a refused item is the job that was pushed"))
}

fn unbox_batch<F>(item: BoxTask) -> Vec<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    item.into_any()
        .downcast::<BatchTask<F>>()
        .map(|t| t.into_jobs())
        .unwrap_or_else(|_| unreachable!("a refused item is the batch that was pushed"))
}

impl WorkerPool {
    /// A builder with documented defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_builder(b: Builder) -> Result<Self, crate::BuildError> {
        Ok(WorkerPool {
            inner: Arc::new(Owner(b.start(AsyncRunner)?)),
        })
    }

    /// Submits a job and returns a handle to await its result. Applies the
    /// overflow policy when the queue is full (under `Block`, waits for room:
    /// backpressure). A refused job comes back inside the error.
    ///
    /// Dropping this future before it resolves leaves the job unqueued and
    /// drops it: it is never run twice, and never run without having been
    /// counted as submitted.
    pub async fn submit<F>(&self, job: F) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let task: BoxTask = Box::new(JobTask::<F, AnyOk>::new(job, Some(tx)));
        match self.inner.0.push(task).await {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(unbox_job::<F, AnyOk>)),
        }
    }

    /// Submits a job without waiting: when the queue is full, `Block` and
    /// `WaitTimeout` act as `Reject`.
    pub fn try_submit<F>(&self, job: F) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let task: BoxTask = Box::new(JobTask::<F, AnyOk>::new(job, Some(tx)));
        match self.inner.0.try_push(task) {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(unbox_job::<F, AnyOk>)),
        }
    }

    /// Fire-and-forget: runs the job and discards its output. Still counted,
    /// still drained at shutdown, panics still caught.
    pub async fn execute<F>(&self, job: F) -> Result<(), SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task: BoxTask = Box::new(JobTask::<F, AnyOk>::new(job, None));
        self.inner
            .0
            .push(task)
            .await
            .map_err(|e| SubmitError::from(e).map(unbox_job::<F, AnyOk>))
    }

    /// [`execute`](WorkerPool::execute) without waiting.
    pub fn try_execute<F>(&self, job: F) -> Result<(), SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task: BoxTask = Box::new(JobTask::<F, AnyOk>::new(job, None));
        self.inner
            .0
            .try_push(task)
            .map_err(|e| SubmitError::from(e).map(unbox_job::<F, AnyOk>))
    }

    /// Submits many jobs as **one** queue item with one admission: one
    /// worker runs them one after the other (each with its own panic
    /// boundary and timeout) and the handle yields their results in order.
    /// This is the fast path for tiny jobs, where per-job queueing would cost
    /// more than the job; note that the queue's bound then counts batches.
    pub async fn submit_batch<I, F>(
        &self,
        jobs: I,
    ) -> Result<BatchHandle<F::Output>, SubmitError<Vec<F>>>
    where
        I: IntoIterator<Item = F>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let jobs: Vec<F> = jobs.into_iter().collect();
        let len = jobs.len();
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let task: BoxTask = Box::new(BatchTask::new(jobs, Some(tx)));
        match self.inner.0.push(task).await {
            Ok(()) => Ok(BatchHandle::new(rx, len)),
            Err(e) => Err(SubmitError::from(e).map(unbox_batch::<F>)),
        }
    }

    /// Fire-and-forget form of [`submit_batch`](WorkerPool::submit_batch).
    pub async fn execute_batch<I, F>(&self, jobs: I) -> Result<(), SubmitError<Vec<F>>>
    where
        I: IntoIterator<Item = F>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let jobs: Vec<F> = jobs.into_iter().collect();
        let task: BoxTask = Box::new(BatchTask::new(jobs, None));
        self.inner
            .0
            .push(task)
            .await
            .map_err(|e| SubmitError::from(e).map(unbox_batch::<F>))
    }

    /// Submits a job whose output is a `Result`, counting `Err` outputs as
    /// failed in [`stats`](WorkerPool::stats) (what the tower service uses).
    pub(crate) fn try_submit_judged<F, T, E>(
        &self,
        job: F,
    ) -> Result<JobHandle<Result<T, E>>, SubmitError<F>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let task: BoxTask = Box::new(JobTask::<F, IsOk>::new(job, Some(tx)));
        match self.inner.0.try_push(task) {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(unbox_job::<F, IsOk>)),
        }
    }

    /// Like [`shutdown`](WorkerPool::shutdown), and also hands back the jobs
    /// that were queued and never started (under [`ShutdownMode::Cancel`], or
    /// when a drain ran out of time), so they can be run elsewhere.
    pub async fn shutdown_returning(&self, mode: ShutdownMode) -> (ShutdownReport, Vec<Unstarted>) {
        let (mode, deadline) = mode.split();
        let r = self.inner.0.shutdown(mode, deadline).await;
        let back = self
            .inner
            .0
            .take_returned()
            .into_iter()
            .map(|task| Unstarted { task })
            .collect();
        (r, back)
    }

    /// The queue reservations shared by every tower service over this pool.
    pub(crate) fn service_slots(&self) -> std::sync::Arc<tokio::sync::Semaphore> {
        self.inner.0.service_slots().clone()
    }

    /// How many queue items may wait.
    pub fn queue_capacity(&self) -> usize {
        self.inner.0.queue.capacity().unwrap_or(usize::MAX >> 4)
    }

    common_pool_methods!();
}

impl Drain for WorkerPool {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(async move {
            let r = self.inner.0.shutdown(Mode::Drain, deadline).await;
            self.inner.0.drop_returned();
            r
        })
    }
}

impl<I> From<weft_core::queue::PushError<I>> for SubmitError<I> {
    fn from(e: weft_core::queue::PushError<I>) -> Self {
        use weft_core::queue::PushError;
        match e {
            PushError::Full(i) => SubmitError::Full(i),
            PushError::Dropped(i) => SubmitError::Dropped(i),
            PushError::Timeout(i) => SubmitError::Timeout(i),
            PushError::Closed(i) => SubmitError::Closed(i),
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<WorkerPool>();
    is::<JobHandle<u8>>();
    let _ = JobError::Cancelled;
    let _: Option<PoolStats> = None;
}

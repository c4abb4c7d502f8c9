//! [`BlockingPool`]: jobs that block or burn CPU, on dedicated threads, with
//! optional per-worker state.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use crate::core::{Env, JobOutcome, Runner, discard, guarded};
use crate::metrics::QueuedAt;
use crate::oneshot;
use crate::pool::{Owner, common_pool_methods, state_pool_impls, unbox};
use crate::task::{BatchHandle, JobHandle};
use crate::{Builder, JobError, SubmitError};

pub(crate) trait BlockingTask<St>: Send + 'static {
    fn jobs(&self) -> u64;
    fn run(self: Box<Self>, st: &mut St, env: &Env<'_>) -> bool;
    fn fail(self: Box<Self>, err: JobError);
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// Runs one job on the worker's state inside its own panic boundary and
/// records its outcome (before the result is delivered, so the stats count
/// the job once its handle resolves). An output nobody will read (`unread`)
/// is dropped inside the boundary too: a `Drop` that panics there is the
/// job's panic. Returns the result and whether the state must be rebuilt.
fn call<St, F, T>(f: F, st: &mut St, env: &Env<'_>, unread: bool) -> (Result<T, JobError>, bool)
where
    F: FnOnce(&mut St) -> T,
{
    let started = env.start_clock();
    let (mut r, mut outcome) = match guarded(|| f(st)) {
        Ok(v) => (Ok(v), JobOutcome::Succeeded),
        Err(p) => {
            env.log_panic(&p);
            (Err(JobError::Panicked(p)), JobOutcome::Panicked)
        }
    };
    if unread && discard(&mut r, env, JobError::Cancelled) {
        outcome = JobOutcome::Panicked;
    }
    env.record(outcome, started);
    (r, outcome == JobOutcome::Panicked)
}

struct Job<F, T> {
    f: F,
    tx: Option<oneshot::Sender<Result<T, JobError>>>,
    // Zero-sized without `metrics`.
    queued: QueuedAt,
}

impl<F, T> Job<F, T> {
    fn new(f: F, tx: Option<oneshot::Sender<Result<T, JobError>>>) -> Self {
        Job {
            f,
            tx,
            queued: QueuedAt::now(),
        }
    }
}

impl<St: 'static, F, T> BlockingTask<St> for Job<F, T>
where
    F: FnOnce(&mut St) -> T + Send + 'static,
    T: Send + 'static,
{
    fn jobs(&self) -> u64 {
        1
    }
    fn run(self: Box<Self>, st: &mut St, env: &Env<'_>) -> bool {
        let Job { f, tx, mut queued } = *self;
        queued.started(env.metrics);
        let unread = tx.as_ref().is_none_or(oneshot::Sender::is_unread);
        let (r, mut panicked) = call(f, st, env, unread);
        if let Some(tx) = tx {
            // The handle may be dropped since `unread` was read.
            if let Err(p) = guarded(move || tx.send(r)) {
                env.log_drop_panic(&p);
                panicked = true;
            }
        }
        panicked
    }
    fn fail(self: Box<Self>, err: JobError) {
        if let Some(tx) = self.tx {
            tx.send(Err(err));
        }
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.f)
    }
}

struct Batch<F, T> {
    jobs: Vec<F>,
    tx: Option<oneshot::Sender<Vec<Result<T, JobError>>>>,
    // Zero-sized without `metrics`; one queue-wait sample per batch.
    queued: QueuedAt,
}

impl<St: 'static, F, T> BlockingTask<St> for Batch<F, T>
where
    F: FnOnce(&mut St) -> T + Send + 'static,
    T: Send + 'static,
{
    fn jobs(&self) -> u64 {
        self.jobs.len() as u64
    }
    fn run(self: Box<Self>, st: &mut St, env: &Env<'_>) -> bool {
        let Batch {
            jobs,
            tx,
            mut queued,
        } = *self;
        queued.started(env.metrics);
        let mut out = Vec::with_capacity(if tx.is_some() { jobs.len() } else { 0 });
        let mut any = false;
        let unread = || tx.as_ref().is_none_or(oneshot::Sender::is_unread);
        for f in jobs {
            let (r, panicked) = call(f, st, env, unread());
            any |= panicked;
            if tx.is_some() {
                out.push(r);
            }
        }
        if let Some(tx) = tx {
            // Sending drops the results if the handle is gone: every job
            // has its outcome, so a panic is only logged.
            if let Err(p) = guarded(move || tx.send(out)) {
                env.log_drop_panic(&p);
                any = true;
            }
        }
        any
    }
    fn fail(self: Box<Self>, err: JobError) {
        if let Some(tx) = self.tx {
            tx.send(self.jobs.iter().map(|_| Err(err.clone())).collect());
        }
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.jobs)
    }
}

pub(crate) type Factory<St> = Box<dyn Fn() -> St + Send + Sync>;

pub(crate) struct BlockingRunner<St> {
    factory: Factory<St>,
}

impl<St: Send + 'static> Runner for BlockingRunner<St> {
    type Item = Box<dyn BlockingTask<St>>;
    type State = St;
    const THREADS: bool = true;

    fn jobs(item: &Self::Item) -> u64 {
        item.jobs()
    }
    fn evicted(item: Self::Item) {
        item.fail(JobError::Evicted);
    }
    fn init(&self) -> St {
        (self.factory)()
    }
    fn run<'a>(
        &'a self,
        item: Self::Item,
        state: &'a mut St,
        env: &'a Env<'a>,
    ) -> impl Future<Output = bool> + Send + 'a {
        // This worker is a dedicated thread: running the job inline blocks
        // only this thread, never a tokio worker.
        let panicked = item.run(state, env);
        std::future::ready(panicked)
    }
}

/// A pool whose workers are dedicated OS threads, for jobs that block
/// (synchronous I/O, FFI) or burn CPU for long stretches, so tokio's worker
/// threads are never starved.
///
/// Jobs are closures `FnOnce(&mut St) -> T`. `St` is per-worker state built
/// by a factory ([`Builder::build_blocking_with`]): a connection, a scratch
/// buffer, a parser; a worker whose job panicked rebuilds it. Without state,
/// `St = ()` ([`Builder::build_blocking`]).
///
/// A running blocking job cannot be interrupted: there is no per-job timeout
/// (the builder refuses one), and at the shutdown deadline jobs still
/// running are reported as aborted and left to finish on their threads.
///
/// ```
/// use std::time::Duration;
/// use weft_pool::{BlockingPool, ShutdownMode};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Each worker thread owns a reusable buffer.
/// let pool = BlockingPool::builder()
///     .workers(2)
///     .build_blocking_with(|| Vec::<u8>::with_capacity(1 << 16))
///     .unwrap();
/// let h = pool.submit(|buf: &mut Vec<u8>| {
///     buf.clear();
///     buf.extend_from_slice(b"hello");
///     buf.len()
/// }).await.unwrap();
/// assert_eq!(h.await.unwrap(), 5);
/// let report = pool.shutdown(ShutdownMode::Drain(Duration::from_secs(5))).await;
/// assert!(report.is_clean());
/// # }
/// ```
pub struct BlockingPool<St: Send + 'static = ()> {
    inner: Arc<Owner<BlockingRunner<St>>>,
}

state_pool_impls!(BlockingPool);

impl BlockingPool<()> {
    /// A builder with documented defaults; finish with
    /// [`Builder::build_blocking`] or [`Builder::build_blocking_with`].
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<St: Send + 'static> BlockingPool<St> {
    pub(crate) fn from_builder(
        b: Builder,
        factory: Factory<St>,
    ) -> Result<Self, crate::BuildError> {
        Ok(BlockingPool {
            inner: Arc::new(Owner(b.start(BlockingRunner { factory })?)),
        })
    }

    /// Submits a job; the handle yields its result. Applies the overflow
    /// policy when full; a refused job comes back in the error.
    pub async fn submit<F, T>(&self, job: F) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&mut St) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let item: Box<dyn BlockingTask<St>> = Box::new(Job::new(job, Some(tx)));
        match self.inner.0.push(item).await {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(|i| unbox::<F>(i.into_any()))),
        }
    }

    /// Submits a job without waiting.
    pub fn try_submit<F, T>(&self, job: F) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&mut St) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let item: Box<dyn BlockingTask<St>> = Box::new(Job::new(job, Some(tx)));
        match self.inner.0.try_push(item) {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(|i| unbox::<F>(i.into_any()))),
        }
    }

    /// Fire-and-forget: runs the job, discards its output.
    pub async fn execute<F, T>(&self, job: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce(&mut St) -> T + Send + 'static,
        T: Send + 'static,
    {
        let item: Box<dyn BlockingTask<St>> = Box::new(Job::<F, T>::new(job, None));
        self.inner
            .0
            .push(item)
            .await
            .map_err(|e| SubmitError::from(e).map(|i| unbox::<F>(i.into_any())))
    }

    /// Many jobs as one queue item; results in order.
    pub async fn submit_batch<I, F, T>(
        &self,
        jobs: I,
    ) -> Result<BatchHandle<T>, SubmitError<Vec<F>>>
    where
        I: IntoIterator<Item = F>,
        F: FnOnce(&mut St) -> T + Send + 'static,
        T: Send + 'static,
    {
        let jobs: Vec<F> = jobs.into_iter().collect();
        let len = jobs.len();
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let item: Box<dyn BlockingTask<St>> = Box::new(Batch {
            jobs,
            tx: Some(tx),
            queued: QueuedAt::now(),
        });
        match self.inner.0.push(item).await {
            Ok(()) => Ok(BatchHandle::new(rx, len)),
            Err(e) => Err(SubmitError::from(e).map(|i| unbox::<Vec<F>>(i.into_any()))),
        }
    }

    common_pool_methods!();
}

impl Builder {
    /// Builds a [`BlockingPool`] of dedicated threads without state.
    pub fn build_blocking(self) -> Result<BlockingPool<()>, crate::BuildError> {
        BlockingPool::from_builder(self, Box::new(|| ()))
    }

    /// Builds a [`BlockingPool`] whose every worker thread owns a state built
    /// by `factory` (rebuilt after a job of that worker panics).
    pub fn build_blocking_with<St, Fac>(
        self,
        factory: Fac,
    ) -> Result<BlockingPool<St>, crate::BuildError>
    where
        St: Send + 'static,
        Fac: Fn() -> St + Send + Sync + 'static,
    {
        BlockingPool::from_builder(self, Box::new(factory))
    }
}

//! [`StatefulPool`]: async workers that each own a state built by a factory.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use futures::future::BoxFuture;

use crate::blocking::Factory;
use crate::core::{Env, JobOutcome, Runner, discard, guarded};
use crate::metrics::QueuedAt;
use crate::oneshot;
use crate::pool::{Owner, common_pool_methods, state_pool_impls, unbox};
use crate::task::{BatchHandle, BatchOut, BatchSender, JobHandle, poll_guarded};
use crate::{Builder, JobError, SubmitError};

pub(crate) trait StatefulTask<St>: Send + 'static {
    fn jobs(&self) -> u64;
    fn run<'a>(self: Box<Self>, st: &'a mut St, env: &'a Env<'a>) -> BoxFuture<'a, bool>;
    fn fail(self: Box<Self>, err: JobError);
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// Runs one job against the worker's state inside its own panic boundary and
/// timeout, and records its outcome (before the result is delivered, so the
/// stats count the job once its handle resolves). The future is dropped
/// inside the boundary too (a timed-out one is still live), and so is the
/// output when nobody will read it (`unread`): a `Drop` that panics there is
/// the job's panic unless it already failed, and never unwinds the worker.
/// Returns the result and whether the state must be rebuilt: after a panic
/// (in the job or in a drop) or a timeout (which may have left it
/// half-used).
async fn call<St, F, T>(
    f: F,
    st: &mut St,
    env: &Env<'_>,
    unread: bool,
) -> (Result<T, JobError>, bool)
where
    F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T>,
{
    let started = env.start_clock();
    let mut rebuild = false;
    let (mut r, mut outcome) = match guarded(move || f(st)) {
        Err(p) => {
            env.log_panic(&p);
            (Err(JobError::Panicked(p)), JobOutcome::Panicked)
        }
        Ok(mut fut) => {
            let run = std::future::poll_fn(|cx| match poll_guarded(fut.as_mut(), cx) {
                Ok(poll) => poll.map(Ok),
                Err(p) => Poll::Ready(Err(p)),
            });
            let res = match env.timeout {
                Some(d) => tokio::time::timeout(d, run).await.ok(),
                None => Some(run.await),
            };
            let (mut r, mut outcome) = match res {
                None => (
                    Err(JobError::TimedOut(env.timeout.unwrap_or_default())),
                    JobOutcome::TimedOut,
                ),
                Some(Ok(v)) => (Ok(v), JobOutcome::Succeeded),
                Some(Err(p)) => {
                    env.log_panic(&p);
                    (Err(JobError::Panicked(p)), JobOutcome::Panicked)
                }
            };
            if let Err(p) = guarded(move || drop(fut)) {
                env.log_drop_panic(&p);
                rebuild = true;
                if outcome == JobOutcome::Succeeded {
                    discard(&mut r, env, JobError::Panicked(p));
                    outcome = JobOutcome::Panicked;
                }
            }
            (r, outcome)
        }
    };
    if unread && discard(&mut r, env, JobError::Cancelled) {
        outcome = JobOutcome::Panicked;
    }
    env.record(outcome, started);
    let rebuild = rebuild || matches!(outcome, JobOutcome::Panicked | JobOutcome::TimedOut);
    (r, rebuild)
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

impl<St: Send + 'static, F, T> StatefulTask<St> for Job<F, T>
where
    F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
    T: Send + 'static,
{
    fn jobs(&self) -> u64 {
        1
    }
    fn run<'a>(self: Box<Self>, st: &'a mut St, env: &'a Env<'a>) -> BoxFuture<'a, bool> {
        let Job { f, tx, mut queued } = *self;
        Box::pin(async move {
            queued.started(env.metrics);
            let unread = tx.as_ref().is_none_or(oneshot::Sender::is_unread);
            let (r, mut rebuild) = call(f, st, env, unread).await;
            if let Some(tx) = tx {
                // The handle may be dropped since `unread` was read.
                if let Err(p) = guarded(move || tx.send(r)) {
                    env.log_drop_panic(&p);
                    rebuild = true;
                }
            }
            rebuild
        })
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

/// Many jobs in one queue item, run one after the other by one worker on
/// its state. The results live in a [`BatchOut`] (shared with the async
/// pool's batches): if the worker is aborted mid-batch at the shutdown
/// deadline, the handle still gets the results of the jobs that ran and
/// `Cancelled` for the others.
struct Batch<F, T> {
    jobs: Vec<F>,
    out: BatchOut<T>,
    // Zero-sized without `metrics`; one queue-wait sample per batch.
    queued: QueuedAt,
}

impl<F: Send + 'static, T: Send + 'static> Batch<F, T> {
    /// The queue item for `jobs`, and how many there are.
    fn item<St: Send + 'static>(
        jobs: impl IntoIterator<Item = F>,
        tx: Option<BatchSender<T>>,
    ) -> (Box<dyn StatefulTask<St>>, usize)
    where
        Self: StatefulTask<St>,
    {
        let jobs: Vec<F> = jobs.into_iter().collect();
        let len = jobs.len();
        let item = Box::new(Batch {
            jobs,
            out: BatchOut::new(tx, len),
            queued: QueuedAt::now(),
        });
        (item, len)
    }
}

impl<St: Send + 'static, F, T> StatefulTask<St> for Batch<F, T>
where
    F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
    T: Send + 'static,
{
    fn jobs(&self) -> u64 {
        self.jobs.len() as u64
    }
    fn run<'a>(self: Box<Self>, st: &'a mut St, env: &'a Env<'a>) -> BoxFuture<'a, bool> {
        let Batch {
            jobs,
            mut out,
            mut queued,
        } = *self;
        Box::pin(async move {
            queued.started(env.metrics);
            // As in `BlockingPool`'s batches, a panicked (or timed-out) job
            // does not stop the batch: the rest run on the same state, which
            // is rebuilt once the batch is done.
            let mut rebuild = false;
            for f in jobs {
                let (r, bad) = call(f, &mut *st, env, out.is_unread()).await;
                rebuild |= bad;
                out.push(r);
            }
            // Sending drops the results if the handle is gone: every job
            // has its outcome, so a panic is only logged.
            if let Err(p) = guarded(move || out.finish(JobError::Cancelled)) {
                env.log_drop_panic(&p);
                rebuild = true;
            }
            rebuild
        })
    }
    fn fail(mut self: Box<Self>, err: JobError) {
        self.out.finish(err);
    }
    fn into_any(mut self: Box<Self>) -> Box<dyn Any + Send> {
        self.out.detach();
        Box::new(self.jobs)
    }
}

pub(crate) struct StatefulRunner<St> {
    factory: Factory<St>,
}

impl<St: Send + 'static> Runner for StatefulRunner<St> {
    type Item = Box<dyn StatefulTask<St>>;
    type State = St;
    const THREADS: bool = false;

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
        item.run(state, env)
    }
}

/// A pool of async workers that each own a state (a connection, a buffer, a
/// client) built by a factory; a job borrows its worker's state mutably for
/// as long as it runs. A worker whose job panicked (or timed out) rebuilds
/// its state before the next job.
///
/// Jobs are `FnOnce(&mut St) -> BoxFuture<'_, T>` (write
/// `|st| Box::pin(async move { ... })`): the future may hold the borrow
/// across `.await`s.
///
/// ```
/// use std::time::Duration;
/// use weft_pool::{ShutdownMode, StatefulPool};
///
/// struct Conn { id: u32, used: u32 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let next = std::sync::atomic::AtomicU32::new(0);
/// let pool = StatefulPool::builder()
///     .workers(1)
///     .build_stateful(move || Conn { id: next.fetch_add(1, std::sync::atomic::Ordering::SeqCst), used: 0 })
///     .unwrap();
/// for _ in 0..3 {
///     pool.submit(|c: &mut Conn| Box::pin(async move { c.used += 1; c.used })).await.unwrap();
/// }
/// let h = pool.submit(|c: &mut Conn| Box::pin(async move { (c.id, c.used) })).await.unwrap();
/// assert_eq!(h.await.unwrap(), (0, 3)); // one connection, reused
/// pool.shutdown(ShutdownMode::Drain(Duration::from_secs(1))).await;
/// # }
/// ```
pub struct StatefulPool<St: Send + 'static> {
    inner: Arc<Owner<StatefulRunner<St>>>,
}

state_pool_impls!(StatefulPool);

impl StatefulPool<()> {
    /// A builder with documented defaults; finish with
    /// [`Builder::build_stateful`].
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<St: Send + 'static> StatefulPool<St> {
    /// Submits a job that borrows its worker's state.
    pub async fn submit<F, T>(&self, job: F) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let item: Box<dyn StatefulTask<St>> = Box::new(Job::new(job, Some(tx)));
        match self.inner.0.push(item).await {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(|i| unbox::<F>(i.into_any()))),
        }
    }

    /// Submits a job without waiting.
    pub fn try_submit<F, T>(&self, job: F) -> Result<JobHandle<T>, SubmitError<F>>
    where
        F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let item: Box<dyn StatefulTask<St>> = Box::new(Job::new(job, Some(tx)));
        match self.inner.0.try_push(item) {
            Ok(()) => Ok(JobHandle::new(rx)),
            Err(e) => Err(SubmitError::from(e).map(|i| unbox::<F>(i.into_any()))),
        }
    }

    /// Fire-and-forget.
    pub async fn execute<F, T>(&self, job: F) -> Result<(), SubmitError<F>>
    where
        F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
        T: Send + 'static,
    {
        let item: Box<dyn StatefulTask<St>> = Box::new(Job::<F, T>::new(job, None));
        self.inner
            .0
            .push(item)
            .await
            .map_err(|e| SubmitError::from(e).map(|i| unbox::<F>(i.into_any())))
    }

    /// Submits many jobs as **one** queue item with one admission: one
    /// worker runs them one after the other against its state (each job
    /// inside its own panic boundary and timeout) and the handle yields
    /// their results in submission order. The queue's bound counts the
    /// batch as one item; the pool's counters count its jobs.
    ///
    /// A job that panics or times out gets its error in its own slot and
    /// does not stop the batch: as in [`BlockingPool`](crate::BlockingPool)'s
    /// batches, the remaining jobs run on the same state, and the worker
    /// rebuilds its state once the batch is done. A refused batch comes back
    /// whole inside the error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::future::BoxFuture;
    /// use weft_pool::{ShutdownMode, StatefulPool};
    ///
    /// // A job for the batch: a closure built by a function, so its
    /// // `&mut Vec<u64>` -> `BoxFuture<'_, _>` signature is spelled once.
    /// fn push(i: u64) -> impl for<'s> FnOnce(&'s mut Vec<u64>) -> BoxFuture<'s, usize> + Send {
    ///     move |buf| Box::pin(async move {
    ///         buf.push(i);
    ///         buf.len()
    ///     })
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Each worker owns a scratch buffer.
    /// let pool = StatefulPool::builder()
    ///     .workers(2)
    ///     .build_stateful(Vec::<u64>::new)
    ///     .unwrap();
    /// let batch = pool.submit_batch((1..=4).map(push)).await.unwrap();
    /// let lens: Vec<usize> = batch.await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(lens, [1, 2, 3, 4]); // one worker, one buffer, in order
    /// let report = pool.shutdown(ShutdownMode::Drain(Duration::from_secs(1))).await;
    /// assert_eq!(report.completed, 4);
    /// # }
    /// ```
    pub async fn submit_batch<I, F, T>(
        &self,
        jobs: I,
    ) -> Result<BatchHandle<T>, SubmitError<Vec<F>>>
    where
        I: IntoIterator<Item = F>,
        F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel_with(self.inner.0.propagates());
        let (item, len) = Batch::<F, T>::item(jobs, Some(tx));
        match self.inner.0.push(item).await {
            Ok(()) => Ok(BatchHandle::new(rx, len)),
            Err(e) => Err(SubmitError::from(e).map(|i| unbox::<Vec<F>>(i.into_any()))),
        }
    }

    /// Fire-and-forget form of [`submit_batch`](StatefulPool::submit_batch):
    /// still counted, still drained, panics still caught.
    pub async fn execute_batch<I, F, T>(&self, jobs: I) -> Result<(), SubmitError<Vec<F>>>
    where
        I: IntoIterator<Item = F>,
        F: for<'s> FnOnce(&'s mut St) -> BoxFuture<'s, T> + Send + 'static,
        T: Send + 'static,
    {
        let (item, _) = Batch::<F, T>::item(jobs, None);
        self.inner
            .0
            .push(item)
            .await
            .map_err(|e| SubmitError::from(e).map(|i| unbox::<Vec<F>>(i.into_any())))
    }

    common_pool_methods!();
}

impl Builder {
    /// Builds a [`StatefulPool`] whose every worker owns a state built by
    /// `factory`.
    pub fn build_stateful<St, Fac>(
        self,
        factory: Fac,
    ) -> Result<StatefulPool<St>, crate::BuildError>
    where
        St: Send + 'static,
        Fac: Fn() -> St + Send + Sync + 'static,
    {
        Ok(StatefulPool {
            inner: Arc::new(Owner(self.start(StatefulRunner {
                factory: Box::new(factory),
            })?)),
        })
    }
}

//! The async jobs of a [`WorkerPool`](crate::WorkerPool): one job or a batch,
//! boxed once into a queue item, with their handles.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use weft_core::Panicked;

use crate::JobError;
use crate::core::{Env, JobOutcome, Runner, discard, guarded};
use crate::oneshot;

/// One queue item of an async pool.
pub(crate) trait Task: Send + 'static {
    fn jobs(&self) -> u64;
    /// Runs the item; `sleep` is the per-job timeout timer, kept by the
    /// runner (not in the queued item) and reset by the item for each job.
    fn poll_run(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        env: &Env<'_>,
        sleep: &mut Timer,
    ) -> Poll<bool>;
    /// Fails every job of an item that will not run (its handles get `err`).
    fn fail(self: Box<Self>, err: JobError);
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

pub(crate) type BoxTask = Box<dyn Task>;

/// The per-job timeout timer of a running item, created on first need.
pub(crate) type Timer = Option<Pin<Box<Sleep>>>;

/// Decides whether a job's output counts as succeeded or failed; a type, not
/// a stored function pointer, so a queued job carries nothing for it.
pub(crate) trait Judge<T>: 'static {
    fn ok(v: &T) -> bool;
}

/// Every output is a success.
pub(crate) struct AnyOk;

impl<T> Judge<T> for AnyOk {
    #[inline(always)]
    fn ok(_: &T) -> bool {
        true
    }
}

/// `Err` outputs count as failed (the tower service).
pub(crate) struct IsOk;

impl<T, E> Judge<Result<T, E>> for IsOk {
    #[inline(always)]
    fn ok(v: &Result<T, E>) -> bool {
        v.is_ok()
    }
}

/// Where a batch's results go.
pub(crate) type BatchSender<T> = oneshot::Sender<Vec<Result<T, JobError>>>;

/// Polls a job inside its panic boundary.
pub(crate) fn poll_guarded<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Result<Poll<F::Output>, Panicked> {
    std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx)))
        .map_err(|p| Panicked::from_payload(p.as_ref()))
}

/// Polls the per-job timer; `true` once it has fired.
fn timed_out(sleep: &mut Timer, timeout: Option<Duration>, cx: &mut Context<'_>) -> bool {
    match timeout {
        None => false,
        Some(d) => sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)))
            .as_mut()
            .poll(cx)
            .is_ready(),
    }
}

/// With `metrics`: when a job was queued and when it started; without, nothing
/// (so a queued job carries no clock).
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct Clock {
    queued: Instant,
    started: Option<Instant>,
}

#[cfg(feature = "metrics")]
impl Clock {
    fn queued() -> Self {
        Clock {
            queued: Instant::now(),
            started: None,
        }
    }
    fn start(&mut self, env: &Env<'_>) {
        if self.started.is_none() {
            if let Some(m) = env.metrics {
                m.queue_wait(self.queued.elapsed());
            }
            self.started = Some(Instant::now());
        }
    }
    fn started(&self) -> Option<Instant> {
        self.started
    }
}

#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Clock;

#[cfg(not(feature = "metrics"))]
impl Clock {
    #[inline(always)]
    fn queued() -> Self {
        Clock
    }
    #[inline(always)]
    fn start(&mut self, _: &Env<'_>) {}
    #[inline(always)]
    fn started(&self) -> Option<Instant> {
        None
    }
}

/// Where one job's result goes.
pub(crate) type ResultTx<T> = oneshot::Sender<Result<T, JobError>>;

pin_project! {
    /// One job: its future and where its result goes (nothing else: without
    /// the `metrics` feature a queued job is the future plus one pointer).
    pub(crate) struct JobTask<F: Future, J> {
        #[pin]
        fut: F,
        tx: ResultTx<F::Output>,
        clock: Clock,
        judge: PhantomData<fn() -> J>,
    }
}

impl<F, J> JobTask<F, J>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    J: Judge<F::Output>,
{
    /// A job whose output is judged by `J` (the tower service counts `Err`
    /// responses as failed).
    pub(crate) fn new(fut: F, tx: Option<ResultTx<F::Output>>) -> Self {
        JobTask {
            fut,
            tx: tx.unwrap_or_else(oneshot::Sender::detached),
            clock: Clock::queued(),
            judge: PhantomData,
        }
    }

    pub(crate) fn into_future(self) -> F {
        self.fut
    }
}

impl<F, J> Task for JobTask<F, J>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    J: Judge<F::Output>,
{
    fn jobs(&self) -> u64 {
        1
    }

    fn poll_run(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        env: &Env<'_>,
        sleep: &mut Timer,
    ) -> Poll<bool> {
        let this = self.project();
        this.clock.start(env);
        match poll_guarded(this.fut, cx) {
            Ok(Poll::Ready(v)) => {
                let mut outcome = if J::ok(&v) {
                    JobOutcome::Succeeded
                } else {
                    JobOutcome::Failed
                };
                // Sending drops the output if nobody reads it (a detached
                // job, a dropped handle): a `Drop` that panics there is the
                // job's panic, unless it already failed.
                let tx = this.tx.take();
                if let Err(p) = guarded(move || tx.send(Ok(v))) {
                    env.log_drop_panic(&p);
                    if outcome == JobOutcome::Succeeded {
                        outcome = JobOutcome::Panicked;
                    }
                }
                env.record(outcome, this.clock.started());
                Poll::Ready(outcome == JobOutcome::Panicked)
            }
            Ok(Poll::Pending) => {
                if timed_out(sleep, env.timeout, cx) {
                    let d = env.timeout.unwrap_or_default();
                    tracing::warn!(pool = env.name, timeout = ?d, "job timed out");
                    this.tx.take().send(Err(JobError::TimedOut(d)));
                    env.record(JobOutcome::TimedOut, this.clock.started());
                    return Poll::Ready(false);
                }
                Poll::Pending
            }
            Err(p) => {
                env.log_panic(&p);
                this.tx.take().send(Err(JobError::Panicked(p)));
                env.record(JobOutcome::Panicked, this.clock.started());
                Poll::Ready(true)
            }
        }
    }

    fn fail(self: Box<Self>, err: JobError) {
        self.tx.send(Err(err));
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

pin_project! {
    /// Many jobs in one queue item, run one after the other by one worker.
    pub(crate) struct BatchTask<F: Future> {
        rest: std::vec::IntoIter<F>,
        #[pin]
        current: Option<F>,
        out: BatchOut<F::Output>,
        started: Option<Instant>,
        // Zero-sized without `metrics`.
        queued: crate::metrics::QueuedAt,
        panicked: bool,
    }
}

/// A batch's results so far. If the batch is dropped before it finishes
/// (aborted at the shutdown deadline), the handle still gets the results of
/// the jobs that ran, and `Cancelled` for the others.
pub(crate) struct BatchOut<T> {
    results: Vec<Result<T, JobError>>,
    tx: Option<BatchSender<T>>,
    len: usize,
}

impl<T> BatchOut<T> {
    /// Results of `len` jobs, sent to `tx` (nowhere for `execute_batch`).
    pub(crate) fn new(tx: Option<BatchSender<T>>, len: usize) -> Self {
        BatchOut {
            results: if tx.is_some() {
                Vec::with_capacity(len)
            } else {
                Vec::new()
            },
            tx,
            len,
        }
    }

    /// Whether results pushed now would be dropped unread: no handle, or
    /// the handle is gone.
    pub(crate) fn is_unread(&self) -> bool {
        self.tx.as_ref().is_none_or(oneshot::Sender::is_unread)
    }

    /// The batch was refused before it was queued: nobody holds a handle.
    pub(crate) fn detach(&mut self) {
        self.tx = None;
    }

    /// Records the next job's result.
    pub(crate) fn push(&mut self, r: Result<T, JobError>) {
        if self.tx.is_some() {
            self.results.push(r);
        }
    }

    /// Sends the results, `rest` for every job that has none.
    pub(crate) fn finish(&mut self, rest: JobError) {
        if let Some(tx) = self.tx.take() {
            let mut results = std::mem::take(&mut self.results);
            while results.len() < self.len {
                results.push(Err(rest.clone()));
            }
            tx.send(results);
        }
    }
}

impl<T> Drop for BatchOut<T> {
    fn drop(&mut self) {
        self.finish(JobError::Cancelled);
    }
}

impl<F> BatchTask<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub(crate) fn new(jobs: Vec<F>, tx: Option<BatchSender<F::Output>>) -> Self {
        BatchTask {
            out: BatchOut::new(tx, jobs.len()),
            rest: jobs.into_iter(),
            current: None,
            started: None,
            queued: crate::metrics::QueuedAt::now(),
            panicked: false,
        }
    }

    pub(crate) fn into_jobs(mut self) -> Vec<F> {
        self.out.detach();
        std::mem::take(&mut self.rest).collect()
    }
}

impl<F> Task for BatchTask<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn jobs(&self) -> u64 {
        (self.rest.len() + usize::from(self.current.is_some())) as u64
    }

    fn poll_run(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        env: &Env<'_>,
        sleep: &mut Timer,
    ) -> Poll<bool> {
        let mut this = self.project();
        // One queue-wait sample per batch (per queue item), on its first poll.
        this.queued.started(env.metrics);
        loop {
            if this.current.is_none() {
                match this.rest.next() {
                    Some(f) => {
                        this.current.set(Some(f));
                        *sleep = None;
                        *this.started = env.start_clock();
                    }
                    None => {
                        // Sending drops the results if the handle is gone:
                        // every job has its outcome, so a panic is only
                        // logged.
                        let out = &mut *this.out;
                        if let Err(p) = guarded(move || out.finish(JobError::Cancelled)) {
                            env.log_drop_panic(&p);
                        }
                        return Poll::Ready(*this.panicked);
                    }
                }
            }
            let fut = this
                .current
                .as_mut()
                .as_pin_mut()
                .expect("current job set above");
            let (mut res, mut outcome) = match poll_guarded(fut, cx) {
                Ok(Poll::Ready(v)) => (Ok(v), JobOutcome::Succeeded),
                Ok(Poll::Pending) => {
                    if !timed_out(sleep, env.timeout, cx) {
                        return Poll::Pending;
                    }
                    let d = env.timeout.unwrap_or_default();
                    tracing::warn!(pool = env.name, timeout = ?d, "batched job timed out");
                    (Err(JobError::TimedOut(d)), JobOutcome::TimedOut)
                }
                Err(p) => {
                    env.log_panic(&p);
                    (Err(JobError::Panicked(p)), JobOutcome::Panicked)
                }
            };
            // Drop the job (a timed-out one is still live) and, in a
            // detached batch, its output inside the boundary: a `Drop` that
            // panics there is the job's panic, unless it already failed.
            let mut current = this.current.as_mut();
            if let Err(p) = guarded(|| current.set(None)) {
                env.log_drop_panic(&p);
                if outcome == JobOutcome::Succeeded {
                    discard(&mut res, env, JobError::Panicked(p));
                    outcome = JobOutcome::Panicked;
                }
            }
            let out = &mut *this.out;
            if let Err(p) = guarded(move || out.push(res)) {
                env.log_drop_panic(&p);
                if outcome == JobOutcome::Succeeded {
                    outcome = JobOutcome::Panicked;
                }
            }
            env.record(outcome, *this.started);
            *this.panicked |= outcome == JobOutcome::Panicked;
        }
    }

    fn fail(mut self: Box<Self>, err: JobError) {
        self.out.finish(err);
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// The runner of [`WorkerPool`](crate::WorkerPool): polls the boxed task in
/// place, no allocation per job beyond the task itself.
#[derive(Debug, Default)]
pub(crate) struct AsyncRunner;

impl Runner for AsyncRunner {
    type Item = BoxTask;
    type State = ();
    const THREADS: bool = false;

    fn jobs(item: &BoxTask) -> u64 {
        item.jobs()
    }

    fn init(&self) {}

    fn evicted(item: BoxTask) {
        item.fail(JobError::Evicted);
    }

    fn run<'a>(
        &'a self,
        item: BoxTask,
        _: &'a mut (),
        env: &'a Env<'a>,
    ) -> impl Future<Output = bool> + Send + 'a {
        run_task(item, env)
    }
}

/// Runs a queue item to the end, then drops it inside the panic boundary (a
/// timed-out job's future is still in it). Every job of the item has its
/// outcome by then, so a panic there is logged, not counted again.
pub(crate) async fn run_task(item: BoxTask, env: &Env<'_>) -> bool {
    let mut task: Pin<BoxTask> = Box::into_pin(item);
    let mut sleep: Timer = None;
    let panicked = std::future::poll_fn(|cx| task.as_mut().poll_run(cx, env, &mut sleep)).await;
    if let Err(p) = guarded(move || drop(task)) {
        env.log_drop_panic(&p);
    }
    panicked
}

/// Raises a job's panic again where its handle is awaited
/// (`PanicPolicy::Propagate`; it was counted and logged where it happened).
/// Out of line: the success path stays as small as it was.
#[cold]
#[inline(never)]
fn propagate(p: &weft_core::Panicked) -> ! {
    std::panic::resume_unwind(Box::new(p.message().to_owned()))
}

/// Awaits one job's result: its value, or why it has none.
///
/// Dropping the handle detaches the job: it still runs and is counted.
/// Under [`PanicPolicy::Propagate`](weft_core::PanicPolicy::Propagate)
/// (see [`Builder::panic_policy`](crate::Builder::panic_policy)), awaiting
/// the handle of a job that panicked panics with the job's message.
#[must_use = "a JobHandle does nothing unless awaited; drop it to detach the job"]
pub struct JobHandle<T> {
    /// Made with `PanicPolicy::Propagate`'s flag in it
    /// ([`resumes_panics`](oneshot::Receiver::resumes_panics)).
    rx: oneshot::Receiver<Result<T, JobError>>,
}

impl<T> JobHandle<T> {
    pub(crate) fn new(rx: oneshot::Receiver<Result<T, JobError>>) -> Self {
        JobHandle { rx }
    }

    /// Whether the job has finished (its result can be taken without waiting).
    pub fn is_finished(&self) -> bool {
        self.rx.is_finished()
    }
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T, JobError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = ready!(self.rx.poll_recv(cx));
        if let Some(Err(JobError::Panicked(p))) = &r
            && self.rx.resumes_panics()
        {
            propagate(p);
        }
        Poll::Ready(r.unwrap_or(Err(JobError::Cancelled)))
    }
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").finish_non_exhaustive()
    }
}

/// Awaits the results of a batch, in the order the jobs were given.
///
/// Under [`PanicPolicy::Propagate`](weft_core::PanicPolicy::Propagate),
/// awaiting it panics with the message of the first job that panicked.
#[must_use = "a BatchHandle does nothing unless awaited; drop it to detach the batch"]
pub struct BatchHandle<T> {
    rx: oneshot::Receiver<Vec<Result<T, JobError>>>,
    len: usize,
}

impl<T> BatchHandle<T> {
    pub(crate) fn new(rx: oneshot::Receiver<Vec<Result<T, JobError>>>, len: usize) -> Self {
        BatchHandle { rx, len }
    }

    /// Jobs in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T> Future for BatchHandle<T> {
    type Output = Vec<Result<T, JobError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let len = self.len;
        let r = ready!(self.rx.poll_recv(cx));
        if self.rx.resumes_panics()
            && let Some(rs) = &r
            && let Some(p) = rs.iter().find_map(|r| match r {
                Err(JobError::Panicked(p)) => Some(p),
                _ => None,
            })
        {
            propagate(p);
        }
        Poll::Ready(r.unwrap_or_else(|| (0..len).map(|_| Err(JobError::Cancelled)).collect()))
    }
}

impl<T> std::fmt::Debug for BatchHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchHandle")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom), not(feature = "metrics")))]
mod tests {
    use super::*;

    /// A queued job is its future plus one pointer (the result sender, or a
    /// detached one for `execute`): no timer, judge or clock rides in the
    /// queue. Grows only with the `metrics` feature (the queued-at clock).
    #[test]
    fn a_queued_job_is_its_future_and_one_pointer() {
        let fut = async { 1u64 };
        let n = std::mem::size_of_val(&fut);
        fn size<F: Future>(_: &F) -> usize {
            std::mem::size_of::<JobTask<F, AnyOk>>()
        }
        assert_eq!(size(&fut), n.next_multiple_of(8) + 8);
    }
}

//! The bounded executor: at most N futures running, at most Q waiting.

mod abortable;
mod builder;
mod dispatch;
mod handle;
mod permits;
mod run;
mod stats;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use futures::future::BoxFuture;
use tokio::sync::{Notify, Semaphore, TryAcquireError, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weft_core::queue::Queue;
use weft_core::{Counter, Drain, Overflow, PanicPolicy, Panicked, ShutdownReport};

pub use builder::Builder;
pub use handle::TaskHandle;
pub use stats::ExecutorStats;

use crate::error::{SpawnError, TaskError};
use permits::Permits;

/// The lane a task waits in when no slot is free.
///
/// Lanes are served high first; the builder's
/// [`fairness`](Builder::fairness) keeps lower lanes from starving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Priority {
    /// Served first.
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Served last, but never starved while `fairness` is on.
    Low = 2,
}

/// Per-task options: priority lane and weight.
///
/// ```
/// use weft_exec::{Priority, TaskOptions};
///
/// let heavy = TaskOptions::new().priority(Priority::Low).weight(4);
/// assert_eq!(heavy.get_weight(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOptions {
    priority: Priority,
    weight: u32,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            priority: Priority::Normal,
            weight: 1,
        }
    }
}

impl TaskOptions {
    /// Normal priority, weight 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lane the task waits in.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// How many permits the task holds while it runs (a task that opens four
    /// connections takes four). 0 is treated as 1.
    pub fn weight(mut self, k: u32) -> Self {
        self.weight = k.max(1);
        self
    }

    /// The weight.
    pub fn get_weight(&self) -> u32 {
        self.weight
    }

    /// The priority.
    pub fn get_priority(&self) -> Priority {
        self.priority
    }
}

/// Runs futures with at most `max_running` permits held at once and at most
/// `queue_capacity` tasks waiting **in total** (all three priority lanes
/// together, including the task the dispatcher has taken as the next to
/// start); beyond that the [`Overflow`] policy decides.
///
/// | policy | a spawn that finds `queue_capacity` tasks waiting |
/// |---|---|
/// | `Block` | `spawn` waits for room (first come, first served); `try_spawn` returns [`SpawnError::Full`] |
/// | `WaitTimeout(d)` | `spawn` waits up to `d`, then [`SpawnError::Timeout`]; `try_spawn` returns `Full` |
/// | `Reject` | [`SpawnError::Full`] with the future |
/// | `DropNewest` | [`SpawnError::Dropped`] with the future (counted as dropped) |
/// | `DropOldest` | the new task is queued; one waiting task is evicted (its handle resolves to [`TaskError::Evicted`]): the oldest of the **lowest** non-empty lane (low, then normal, then high), or, if every lane is empty, the task the dispatcher holds as next to start |
///
/// Clones share one executor. Dropping the last clone closes admission:
/// queued tasks still run, and the dispatcher exits when they have started.
///
/// ```
/// use weft_exec::{BoundedExecutor, SpawnError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let exec = BoundedExecutor::builder().max_running(2).queue_capacity(1).build().unwrap();
/// let a = exec.spawn(async { 1 }).await.unwrap();
/// let b = exec.spawn(async { 2 }).await.unwrap();
/// let c = exec.spawn(async { 3 }).await.unwrap(); // queued
/// // Two running, one queued: try_spawn hands the future back.
/// let refused = exec.try_spawn(async { 4 }).unwrap_err();
/// assert!(matches!(refused, SpawnError::Full(_)));
/// assert_eq!(a.await.unwrap() + b.await.unwrap() + c.await.unwrap(), 6);
/// # }
/// ```
#[derive(Clone)]
pub struct BoundedExecutor {
    owner: Arc<Owner>,
}

/// Closes admission when the last user handle goes away.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

pub(crate) struct Shared {
    name: String,
    /// The runtime the executor was built on: every task starts there
    /// (spawning through the handle skips tokio's thread-local lookup).
    runtime: tokio::runtime::Handle,
    max_running: usize,
    /// The running permits. Written by every start and finish: on its own
    /// cache line, so that the fields spawners read stay quiet. Lock-free
    /// both ways (see `permits.rs`): only the dispatcher ever waits.
    running: CachePadded<Permits>,
    /// The waiting room: `capacity` permits, one per waiting task, shared
    /// by all lanes. A spawn takes one before it enters a lane; the
    /// dispatcher gives it back once the task has started or failed (or an
    /// evicting spawn takes it over). So lanes plus the task the dispatcher
    /// holds never exceed `capacity`. While any is taken, spawns do not
    /// bypass the queue.
    room: CachePadded<Semaphore>,
    capacity: usize,
    overflow: Overflow,
    /// Lanes are bounded at `capacity` each, which they never reach: the
    /// room bounds their sum.
    lanes: [Queue<Queued>; 3],
    /// The task the dispatcher has taken off its lane and waits for
    /// permits for, parked where a `DropOldest` spawn can evict it. The lock
    /// also serialises eviction with `close`.
    held: Mutex<Option<Queued>>,
    /// Tells the dispatcher its held task was evicted.
    stolen: Notify,
    wake: Notify,
    idle: Notify,
    closed: AtomicBool,
    abort: CancellationToken,
    /// Set just before `abort` is cancelled: the running tasks' per-poll
    /// check reads this instead of `abort.is_cancelled()` (which locks).
    aborting: AtomicBool,
    /// Cancelled by a shutdown `cancel_grace` before its deadline: tasks
    /// watch child tokens of it (`cancellation_token`), so a user who
    /// cancels theirs does not start the executor's cancel phase.
    cancel: CancellationToken,
    /// Set just before `cancel` is cancelled: a task that ends after it is
    /// counted as cancelled, and queued tasks no longer start.
    cancelling: AtomicBool,
    cancel_grace: Duration,
    panic_policy: PanicPolicy,
    /// Throttle the `warn!`s for refused spawns, evicted tasks, queue and
    /// run timeouts (one line a second each).
    refusals: crate::throttle::Throttle,
    evictions: crate::throttle::Throttle,
    queue_timeouts: crate::throttle::Throttle,
    run_timeouts: crate::throttle::Throttle,
    /// The `weft_exec_*` metric keys, built once.
    m: crate::metrics::ExecutorMetrics,
    /// Tasks started on the fast path; their ids are `2k`. It doubles as
    /// their accepted count, so the fast path pays one atomic for both.
    next_direct: CachePadded<AtomicU64>,
    /// Ids of queued tasks are `2k + 1`.
    next_queued: AtomicU64,
    queue_timeout: Option<Duration>,
    run_timeout: Option<Duration>,
    fairness: u32,
    c: Counters,
    unfinished: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Counters {
    /// Queued tasks accepted (fast-path ones are counted by `next_direct`),
    /// counted just before the push that makes them visible to the
    /// dispatcher: counted after it, a task could be started, finished and
    /// reported before its spawn had counted it. A push that then fails
    /// (the executor closed meanwhile) is taken back in `unaccepted`
    /// before its room permit is, so a shutdown (which waits for every
    /// room permit) never reads the difference half-made.
    accepted_queued: Counter,
    unaccepted: Counter,
    completed: Counter,
    panicked: Counter,
    timed_out: Counter,
    queue_timed_out: Counter,
    aborted: Counter,
    cancelled: Counter,
    returned: Counter,
    rejected: Counter,
    dropped: Counter,
    rejected_after_close: Counter,
}

/// A task waiting in a lane.
pub(crate) struct Queued {
    id: u64,
    weight: u32,
    /// When its queue timeout expires (read the clock only if one is set).
    deadline: Option<Instant>,
    job: Box<dyn Job>,
}

/// The type-erased future of a queued task and the sender of its result.
trait Job: Send + 'static {
    fn start(self: Box<Self>, shared: &Arc<Shared>, weight: u32);
    fn fail(self: Box<Self>, err: TaskError);
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

struct QueuedJob<F: Future> {
    id: u64,
    fut: F,
    tx: oneshot::Sender<Result<F::Output, TaskError>>,
    /// Made at spawn time, so its parent is the caller's span.
    span: tracing::Span,
}

impl<F> Job for QueuedJob<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn start(self: Box<Self>, shared: &Arc<Shared>, weight: u32) {
        let QueuedJob { id, fut, tx, span } = *self;
        let rt = &shared.runtime;
        let shared = shared.clone();
        // The guard exists before the task does: a task the runtime drops
        // before its first poll still gives its permits back and is counted.
        let guard = RunGuard::new(shared, weight, id);
        match guard.shared.run_timeout {
            None => rt.spawn(async move {
                // The task (and its permits) are released before the
                // result is sent, as on the fast path.
                let r = run::Run::new(fut, guard, span).await;
                let _ = tx.send(r);
            }),
            Some(d) => rt.spawn(async move {
                let _ = tx.send(run_timed(guard, d, fut).instrument(span).await);
            }),
        };
    }

    fn fail(self: Box<Self>, err: TaskError) {
        let QueuedJob { id, fut, tx, span } = *self;
        let _ = tx.send(Err(err));
        drop(span);
        // The user's future is dropped without having run: a panic in its
        // drop must not unwind into the dispatcher or an evicting spawn.
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(fut))) {
            let p = Panicked::from_payload(p.as_ref());
            tracing::error!(task = id, panic = %p.message(), "a queued task's future panicked when dropped");
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.fut)
    }
}

enum Refused<F> {
    Queue(F),
    Err(SpawnError<F>),
}

/// Why a spawn was refused; maps to the [`SpawnError`] and the counter.
#[derive(Clone, Copy)]
enum Refusal {
    Full,
    Dropped,
    Timeout,
    Closed,
}

/// Holds `weight` permits while a task runs; gives them back on drop
/// (including when the task is aborted or the runtime drops it). Made before
/// the task is spawned, so a task the runtime drops unpolled (the runtime
/// shutting down) gives its permits back too, and is counted as aborted
/// (a task whose end went through `finish` is marked `finished`).
struct RunGuard {
    shared: Arc<Shared>,
    weight: u32,
    id: u64,
    finished: bool,
}

impl RunGuard {
    fn new(shared: Arc<Shared>, weight: u32, id: u64) -> Self {
        RunGuard {
            shared,
            weight,
            id,
            finished: false,
        }
    }

    /// The task ended: counted and reported through [`finish`].
    fn end<T>(&mut self, ended: Ended<T>) -> Result<T, TaskError> {
        self.finished = true;
        finish(&self.shared, self.id, ended)
    }

    /// The task returned its output: the common end, counted inline (what
    /// `finish` does for `Done(Ok)`, without its other branches).
    #[inline]
    fn completed(&mut self) {
        self.finished = true;
        if self.shared.cancelling.load(Ordering::Relaxed) {
            return self.shared.count_cancelled(self.id);
        }
        self.shared.c.completed.incr();
        self.shared.m.completed.incr();
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped by the runtime before it ended (tokio cancels every
            // task when the runtime shuts down): counted, never lost.
            let _ = finish::<()>(&self.shared, self.id, Ended::Aborted);
        }
        self.shared.running.release(self.weight);
        if self.shared.closed.load(Ordering::SeqCst) {
            self.shared.idle.notify_waiters();
        }
    }
}

enum Ended<T> {
    Done(Result<T, Panicked>),
    TimedOut,
    Aborted,
}

/// The future inside a queued task that never entered (or left) its lane.
fn unbox<F: 'static>(q: Queued) -> F {
    *q.job
        .into_any()
        .downcast::<F>()
        .unwrap_or_else(|_| unreachable!("a queued job holds the future it was built from"))
}

/// Ends a spawn's wait for room (`Block`, `WaitTimeout`) however it ends:
/// see [`Shared::room_may_have_returned`].
struct RoomWaitEnd<'a>(&'a Shared);

impl Drop for RoomWaitEnd<'_> {
    fn drop(&mut self) {
        self.0.room_may_have_returned();
    }
}

/// A fast-path spawn that took its permits just as a shutdown closed the
/// executor: gives them back (waking the shutdown if that made the
/// executor idle) and refuses. Out of line: it must not weigh on the fast
/// path's inlining.
#[cold]
#[inline(never)]
fn back_out_closed<F>(s: &Shared, weight: u32, fut: F) -> SpawnError<F> {
    s.running.release(weight);
    s.idle.notify_waiters();
    s.c.rejected_after_close.incr();
    SpawnError::Closed(fut)
}

/// Starts a task on tokio. Tasks without a run timeout get a future without
/// a timer in it (smaller task, faster spawn).
#[inline]
fn spawn_task<F>(
    rt: &tokio::runtime::Handle,
    shared: Arc<Shared>,
    id: u64,
    weight: u32,
    fut: F,
) -> JoinHandle<Result<F::Output, TaskError>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let span = task_span(&shared, id);
    match shared.run_timeout {
        None => rt.spawn(run::Run::new(fut, RunGuard::new(shared, weight, id), span)),
        Some(d) => rt.spawn(run_timed(RunGuard::new(shared, weight, id), d, fut).instrument(span)),
    }
}

/// A task's span: `task{executor, task}` at debug level, a child of the
/// span the spawn was called in. Disabled (nothing recorded, nothing
/// formatted) unless a subscriber wants debug spans of `weft_exec`.
fn task_span(shared: &Shared, id: u64) -> tracing::Span {
    tracing::debug_span!("task", executor = %shared.name, task = id)
}

async fn run_timed<F: Future>(
    mut guard: RunGuard,
    d: Duration,
    fut: F,
) -> Result<F::Output, TaskError> {
    let ended = {
        let s = &*guard.shared;
        let timed = tokio::time::timeout(d, weft_core::catch_unwind(fut));
        match abortable::Abortable::new(timed, &s.aborting, &s.abort).await {
            Some(Ok(r)) => Ended::Done(r),
            Some(Err(_)) => Ended::TimedOut,
            None => Ended::Aborted,
        }
    };
    guard.end(ended)
}

fn finish<T>(s: &Shared, id: u64, ended: Ended<T>) -> Result<T, TaskError> {
    match ended {
        // The shutdown asked it to stop: whatever it returned, it ended
        // after it was asked (counted as in weft-pool). A panic stays a
        // panic and a run timeout a timeout, as its handle says.
        Ended::Done(Ok(v)) if s.cancelling.load(Ordering::Relaxed) => {
            s.count_cancelled(id);
            Ok(v)
        }
        Ended::Done(Ok(v)) => {
            s.c.completed.incr();
            s.m.completed.incr();
            Ok(v)
        }
        Ended::Done(Err(p)) => {
            s.c.panicked.incr();
            s.m.panicked.incr();
            tracing::error!(executor = %s.name, task = id, panic = %p.message(), "task panicked");
            if s.panic_policy == PanicPolicy::Abort {
                tracing::error!(executor = %s.name, task = id, "aborting the process (PanicPolicy::Abort)");
                std::process::abort();
            }
            Err(TaskError::Panicked(p))
        }
        Ended::TimedOut => {
            let d = s.run_timeout.unwrap_or_default();
            s.c.timed_out.incr();
            s.m.timed_out.incr();
            crate::throttle::warn_throttled!(s.run_timeouts, executor = %s.name, task = id, timeout = ?d, "task exceeded its run timeout");
            Err(TaskError::TimedOut(d))
        }
        Ended::Aborted => {
            s.c.aborted.incr();
            s.m.aborted.incr();
            s.unfinished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("task #{id}"));
            tracing::warn!(executor = %s.name, task = id, "task aborted at the shutdown deadline");
            Err(TaskError::Aborted)
        }
    }
}

impl Shared {
    /// Whether handles re-raise their task's panic.
    fn propagates(&self) -> bool {
        self.panic_policy == PanicPolicy::Propagate
    }

    fn count_cancelled(&self, id: u64) {
        self.c.cancelled.incr();
        self.m.cancelled.incr();
        tracing::debug!(executor = %self.name, task = id, "task ended after the shutdown asked it to stop");
    }

    fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        {
            // An evicting spawn holds this lock from its eviction to its
            // push, so it never evicts a task and then finds the lanes closed.
            let _held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            for lane in &self.lanes {
                lane.close();
            }
            // Wakes spawns waiting for room (`Block`, `WaitTimeout`): they
            // get `Closed`. Permits can still be given back after this.
            self.room.close();
        }
        self.wake.notify_one();
        self.idle.notify_waiters();
        tracing::info!(executor = %self.name, "admission closed");
        true
    }

    /// Gives a waiting-room permit back: a waiting task started, failed, or
    /// never entered its lane.
    fn release_room(&self) {
        self.room.add_permits(1);
        // Pairs with `close` + `wait_idle`: either this sees `closed` and
        // notifies, or the waiter's idle check sees the permit.
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.idle.notify_waiters();
            // The dispatcher, closed, waits for the last room permit.
            self.wake.notify_one();
        }
    }

    /// A room permit may have come back without `release_room`: if the
    /// executor is closed, wake whoever waits for the last one (spurious
    /// wake-ups are harmless: both waiters re-check).
    fn room_may_have_returned(&self) {
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.idle.notify_waiters();
            self.wake.notify_one();
        }
    }

    /// Whether no task waits (in a lane, held, or about to enter a lane).
    fn nothing_waits(&self) -> bool {
        self.room.available_permits() == self.capacity
    }

    fn is_idle(&self) -> bool {
        self.nothing_waits() && self.running.available() == self.max_running
    }

    /// Tasks waiting right now: the held task, then the lanes (read in
    /// that order, tasks only move lane -> held, so none is counted twice).
    fn queued(&self) -> usize {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        usize::from(held) + self.lanes.iter().map(|l| l.len()).sum::<usize>()
    }
}

impl BoundedExecutor {
    /// A builder with documented defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// An executor with `max_running` permits and the default queue
    /// (1024 waiting in total, `Overflow::Block`).
    ///
    /// # Panics
    /// If `max_running` is 0 or there is no tokio runtime; use
    /// [`builder`](Self::builder) to get the error instead.
    pub fn new(max_running: usize) -> Self {
        Builder::new()
            .max_running(max_running)
            .build()
            .expect("BoundedExecutor::new")
    }

    fn from_builder(b: Builder, handle: &tokio::runtime::Handle) -> Self {
        // Never full (the room bounds the sum), so the policy is moot.
        let lane = || Queue::bounded(b.queue_capacity, Overflow::Reject).expect("checked by build");
        let m = crate::metrics::ExecutorMetrics::new(&b.name);
        let shared = Arc::new(Shared {
            name: b.name,
            runtime: handle.clone(),
            max_running: b.max_running,
            running: CachePadded::new(Permits::new(b.max_running)),
            room: CachePadded::new(Semaphore::new(b.queue_capacity)),
            capacity: b.queue_capacity,
            overflow: b.overflow,
            lanes: [lane(), lane(), lane()],
            held: Mutex::new(None),
            stolen: Notify::new(),
            wake: Notify::new(),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            abort: CancellationToken::new(),
            aborting: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            cancelling: AtomicBool::new(false),
            cancel_grace: b.cancel_grace,
            panic_policy: b.panic_policy,
            refusals: crate::throttle::Throttle::new(),
            evictions: crate::throttle::Throttle::new(),
            queue_timeouts: crate::throttle::Throttle::new(),
            run_timeouts: crate::throttle::Throttle::new(),
            m,
            next_direct: CachePadded::new(AtomicU64::new(0)),
            next_queued: AtomicU64::new(0),
            queue_timeout: b.queue_timeout,
            run_timeout: b.run_timeout,
            fairness: b.fairness,
            c: Counters::default(),
            unfinished: Mutex::new(Vec::new()),
        });
        let span = tracing::info_span!("weft_exec", executor = %shared.name);
        handle.spawn(dispatch::run(shared.clone()).instrument(span));
        tracing::info!(executor = %shared.name, max_running = b.max_running, queue_capacity = b.queue_capacity, "executor started");
        BoundedExecutor {
            owner: Arc::new(Owner { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The executor's name.
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// The overflow policy of the wait queue.
    pub fn overflow(&self) -> Overflow {
        self.shared().overflow
    }

    /// How many tasks may wait in total (all lanes together, including the
    /// one the dispatcher holds as next to start).
    pub fn queue_capacity(&self) -> usize {
        self.shared().capacity
    }

    /// Spawns `fut` at normal priority and weight 1. Resolves once the task
    /// is admitted (started, or queued) with a handle to its result; waits
    /// only when `queue_capacity` tasks already wait and the policy is
    /// `Block` or `WaitTimeout`.
    pub async fn spawn<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with(TaskOptions::default(), fut).await
    }

    /// Spawns `fut` with the given priority and weight.
    pub async fn spawn_with<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let fut = match self.start_now(opts, fut) {
            Ok(h) => return Ok(h),
            Err(Refused::Err(e)) => return Err(e),
            Err(Refused::Queue(fut)) => fut,
        };
        match self.enqueue_now(opts, fut) {
            Ok(admitted) => admitted,
            // Boxed: the wait's state (a room acquire, a timeout) is large,
            // and keeping it out of this future keeps `spawn`'s future small
            // (it is built and moved on every spawn).
            Err(fut) => Box::pin(self.wait_for_room(opts, fut)).await,
        }
    }

    /// Spawns `fut` without waiting: when no slot is free and
    /// `queue_capacity` tasks already wait, the future is handed back
    /// (`Block` and `WaitTimeout` act as `Reject`; `DropOldest` still evicts
    /// and queues, `DropNewest` still sheds).
    ///
    /// Spawns that race for the last free permits may, for an instant, see
    /// each other's attempt as taken: the loser queues its task (it starts
    /// as soon as the dispatcher takes it) rather than starting it at once.
    /// So a task may queue while a slot is free, and with the queue full at
    /// that instant the policy applies to it.
    pub fn try_spawn<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.try_spawn_with(TaskOptions::default(), fut)
    }

    /// [`try_spawn`](Self::try_spawn) with a priority and weight.
    pub fn try_spawn_with<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.start_now(opts, fut) {
            Ok(h) => Ok(h),
            Err(Refused::Err(e)) => Err(e),
            Err(Refused::Queue(fut)) => self.try_enqueue(opts, fut),
        }
    }

    /// The fast path: nothing queued and enough permits free, so start now.
    #[inline]
    fn start_now<F>(&self, opts: TaskOptions, fut: F) -> Result<TaskHandle<F::Output>, Refused<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let s = self.shared();
        // No `closed` check up front: the one after taking the permits is
        // needed anyway (a close can come in between), and a closed
        // executor's spawn is refused there or by its closed lane.
        if opts.weight as usize > s.max_running {
            s.c.rejected.incr();
            return Err(Refused::Err(SpawnError::TooHeavy(fut)));
        }
        if s.nothing_waits() {
            if s.running.try_acquire_fast(opts.weight) {
                // A shutdown may have closed and found the executor idle
                // between the check above and the permit: the permit's
                // SeqCst take against `close`'s SeqCst swap means either
                // this sees `closed` (and backs out) or the shutdown sees
                // the permit out (and waits for this task).
                if s.closed.load(Ordering::SeqCst) {
                    return Err(Refused::Err(back_out_closed(s, opts.weight, fut)));
                }
                let id = s.next_direct.fetch_add(1, Ordering::Relaxed) * 2;
                let h = spawn_task(&s.runtime, s.clone(), id, opts.weight, fut);
                return Ok(TaskHandle::direct(id, h, s.propagates()));
            }
            // The failed attempt gave its permits back: if that made the
            // executor idle, a shutdown waiting for idleness must hear it.
            if s.closed.load(Ordering::SeqCst) {
                s.idle.notify_waiters();
            }
        }
        Err(Refused::Queue(fut))
    }

    /// Boxes a task for its lane. Call only while holding a room permit.
    fn package<F>(&self, opts: TaskOptions, fut: F) -> (Queued, TaskHandle<F::Output>)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let s = self.shared();
        let id = s.next_queued.fetch_add(1, Ordering::Relaxed) * 2 + 1;
        let (tx, rx) = oneshot::channel();
        let q = Queued {
            id,
            weight: opts.weight,
            // A timeout too long for the clock (`Duration::MAX`) is none.
            deadline: s.queue_timeout.and_then(|d| Instant::now().checked_add(d)),
            job: Box::new(QueuedJob {
                id,
                fut,
                tx,
                span: task_span(s, id),
            }),
        };
        (q, TaskHandle::queued(id, rx, s.propagates()))
    }

    /// The queue path of `spawn`, as far as it goes without waiting: under
    /// `Block` and `WaitTimeout` take a free room permit and enter the lane
    /// (or hand the future back, `Err`, to wait for room); under the other
    /// policies, what `try_spawn` does.
    #[allow(clippy::type_complexity)]
    fn enqueue_now<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<Result<TaskHandle<F::Output>, SpawnError<F>>, F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if matches!(
            self.shared().overflow,
            Overflow::Block | Overflow::WaitTimeout(_)
        ) {
            self.enter_if_room(opts, fut)
        } else {
            Ok(self.try_enqueue(opts, fut))
        }
    }

    /// Takes a free room permit and enters the lane (or is refused because
    /// the executor closed); hands the future back if the room is full.
    #[allow(clippy::type_complexity)]
    fn enter_if_room<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<Result<TaskHandle<F::Output>, SpawnError<F>>, F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.shared().room.try_acquire() {
            Ok(p) => {
                p.forget();
                Ok(self.push_reserved(opts, fut))
            }
            Err(TryAcquireError::Closed) => Ok(Err(self.refuse(Refusal::Closed, fut))),
            Err(TryAcquireError::NoPermits) => Err(fut),
        }
    }

    /// `spawn` under `Block` or `WaitTimeout` with the room full: wait for a
    /// room permit (up to the timeout), then enter the lane. Dropping this
    /// future while it waits takes no permit: nothing leaks.
    async fn wait_for_room<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let s = self.shared();
        tracing::trace!(executor = %s.name, "queue full: spawn waits for room");
        // Declared before the acquire, so dropped after it, also when this
        // future is dropped mid-wait: a permit tokio handed to the acquire
        // and that goes back with it (the acquire dropped, or returning
        // `Closed` after a close) bypasses `release_room`; the guard tells
        // a closed executor's shutdown and dispatcher instead.
        let _tell = RoomWaitEnd(s);
        let got = match s.overflow {
            Overflow::WaitTimeout(d) => match tokio::time::timeout(d, s.room.acquire()).await {
                Ok(r) => r.map_err(|_| Refusal::Closed),
                Err(_) => Err(Refusal::Timeout),
            },
            _ => s.room.acquire().await.map_err(|_| Refusal::Closed),
        };
        match got {
            Ok(p) => {
                p.forget();
                self.push_reserved(opts, fut)
            }
            Err(why) => Err(self.refuse(why, fut)),
        }
    }

    /// The queue path of `try_spawn` (and of `spawn` under the policies
    /// that never wait).
    fn try_enqueue<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let fut = match self.enter_if_room(opts, fut) {
            Ok(admitted) => return admitted,
            Err(fut) => fut,
        };
        match self.shared().overflow {
            Overflow::DropOldest => self.evict_and_push(opts, fut),
            Overflow::DropNewest => Err(self.refuse(Refusal::Dropped, fut)),
            _ => Err(self.refuse(Refusal::Full, fut)),
        }
    }

    /// Enters the lane with a room permit already taken.
    fn push_reserved<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let s = self.shared();
        let (q, h) = self.package(opts, fut);
        s.c.accepted_queued.incr();
        match s.lanes[opts.priority as usize].try_push(q) {
            Ok(_) => {
                self.queued_ok();
                Ok(h)
            }
            Err(e) => {
                // Closed since the permit was taken (a lane is never full).
                s.c.unaccepted.incr();
                s.release_room();
                let why = if e.is_closed() {
                    Refusal::Closed
                } else {
                    Refusal::Full
                };
                Err(self.refuse(why, unbox::<F>(e.into_inner())))
            }
        }
    }

    /// `DropOldest` with the room full: evict one waiting task and take
    /// over its room permit. Victim order: the oldest of the low lane, then
    /// of the normal lane, then of the high lane, then the task the
    /// dispatcher holds as next to start.
    fn evict_and_push<F>(
        &self,
        opts: TaskOptions,
        fut: F,
    ) -> Result<TaskHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let s = self.shared();
        let (q, h) = self.package(opts, fut);
        let mut q = Some(q);
        loop {
            // Room may have appeared since the last look.
            match s.room.try_acquire() {
                Ok(p) => {
                    p.forget();
                    let q = q.take().expect("not pushed yet");
                    s.c.accepted_queued.incr();
                    return match s.lanes[opts.priority as usize].try_push(q) {
                        Ok(_) => {
                            self.queued_ok();
                            Ok(h)
                        }
                        Err(e) => {
                            s.c.unaccepted.incr();
                            s.release_room();
                            Err(self.refuse(Refusal::Closed, unbox::<F>(e.into_inner())))
                        }
                    };
                }
                Err(TryAcquireError::Closed) => {
                    let q = q.take().expect("not pushed yet");
                    return Err(self.refuse(Refusal::Closed, unbox::<F>(q)));
                }
                Err(TryAcquireError::NoPermits) => {}
            }
            let victim = {
                let mut held = s.held.lock().unwrap_or_else(|e| e.into_inner());
                if s.closed.load(Ordering::SeqCst) {
                    drop(held);
                    let q = q.take().expect("not pushed yet");
                    return Err(self.refuse(Refusal::Closed, unbox::<F>(q)));
                }
                let mut from_held = false;
                let victim = [2, 1, 0]
                    .iter()
                    .find_map(|&i| s.lanes[i].try_pop())
                    .or_else(|| {
                        from_held = true;
                        held.take()
                    });
                if let Some(v) = &victim {
                    // The victim's permit is ours now. The lanes are open
                    // (`close` waits for this lock) and hold at most
                    // `capacity - 1` others, so the push succeeds.
                    let q = q.take().expect("not pushed yet");
                    s.c.accepted_queued.incr();
                    if let Err(e) = s.lanes[opts.priority as usize].try_push(q) {
                        unreachable!(
                            "lane refused a task with a room permit: {e:?} (victim {})",
                            v.id
                        );
                    }
                }
                victim.map(|v| (v, from_held))
            };
            if let Some((old, from_held)) = victim {
                if from_held {
                    // The dispatcher stops waiting for the victim's permits.
                    s.stolen.notify_waiters();
                }
                s.c.returned.incr();
                s.m.evicted.incr();
                crate::throttle::warn_throttled!(s.evictions, executor = %s.name, task = old.id, "queued task evicted (DropOldest)");
                // The new task is in its lane: count it and wake the
                // dispatcher before the victim's future is dropped.
                self.queued_ok();
                old.job.fail(TaskError::Evicted);
                return Ok(h);
            }
            // Every room permit is in a hand-over that takes no `.await`
            // (a spawn between its permit and its push, the dispatcher
            // between its pop and its start): it ends in a few instructions.
            std::thread::yield_now();
        }
    }

    /// A task entered its lane (already counted): wake the dispatcher.
    fn queued_ok(&self) {
        self.shared().wake.notify_one();
    }

    fn refuse<F>(&self, why: Refusal, fut: F) -> SpawnError<F> {
        let s = self.shared();
        let reason = match why {
            Refusal::Full => "queue full",
            Refusal::Dropped => "queue full, newest dropped",
            Refusal::Timeout => "no room within the wait timeout",
            Refusal::Closed => "executor closed",
        };
        let err = match why {
            Refusal::Full => {
                s.c.rejected.incr();
                SpawnError::Full(fut)
            }
            Refusal::Dropped => {
                s.c.dropped.incr();
                SpawnError::Dropped(fut)
            }
            Refusal::Timeout => {
                s.c.rejected.incr();
                SpawnError::Timeout(fut)
            }
            Refusal::Closed => {
                s.c.rejected_after_close.incr();
                SpawnError::Closed(fut)
            }
        };
        s.m.spawn_refused.incr();
        crate::throttle::warn_throttled!(s.refusals, executor = %s.name, reason, "spawn refused: the future is handed back");
        err
    }
    /// A snapshot of the executor's state and counters.
    pub fn stats(&self) -> ExecutorStats {
        let s = self.shared();
        let c = &s.c;
        let queued = s.queued();
        // Taken-back pushes are read first: each was counted accepted
        // before, so (snapshots of relaxed counters aside, hence saturating)
        // the difference never goes below zero.
        let unaccepted = c.unaccepted.get();
        let accepted = s.next_direct.load(Ordering::Relaxed)
            + c.accepted_queued.get().saturating_sub(unaccepted);
        let ended = c.completed.get()
            + c.panicked.get()
            + c.timed_out.get()
            + c.queue_timed_out.get()
            + c.cancelled.get()
            + c.aborted.get()
            + c.returned.get();
        let permits_in_use = s.max_running.saturating_sub(s.running.available());
        ExecutorStats {
            max_running: s.max_running,
            running: (accepted.saturating_sub(ended) as usize)
                .saturating_sub(queued)
                .min(permits_in_use),
            permits_in_use,
            queued,
            accepted,
            completed: c.completed.get(),
            panicked: c.panicked.get(),
            timed_out: c.timed_out.get(),
            queue_timed_out: c.queue_timed_out.get(),
            cancelled: c.cancelled.get(),
            aborted: c.aborted.get(),
            returned: c.returned.get(),
            rejected: c.rejected.get(),
            dropped: c.dropped.get(),
            rejected_after_close: c.rejected_after_close.get(),
        }
    }

    /// A token the executor cancels when a [`shutdown`](Self::shutdown)
    /// reaches its [`cancel_grace`](Builder::cancel_grace): tasks that can
    /// stop early watch it and are counted as cancelled rather than aborted
    /// at the deadline. Each call returns a child token: cancelling it
    /// yourself stops only the tasks that watch it, and does not start the
    /// executor's cancel phase (weft-pool's `cancellation_token` is the
    /// pool's own token; here a task giving up on its own work must not
    /// stop every other task).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::{Instant, sleep};
    /// use weft_exec::BoundedExecutor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let exec = BoundedExecutor::builder()
    ///     .cancel_grace(Duration::from_millis(100))
    ///     .build()
    ///     .unwrap();
    /// let token = exec.cancellation_token();
    /// let h = exec
    ///     .spawn(async move {
    ///         tokio::select! {
    ///             _ = token.cancelled() => "stopped early",
    ///             _ = sleep(Duration::from_secs(60)) => "done",
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// let report = exec.shutdown(Instant::now() + Duration::from_secs(1)).await;
    /// assert_eq!(h.await.unwrap(), "stopped early");
    /// assert_eq!((report.cancelled, report.aborted), (1, 0));
    /// # }
    /// ```
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared().cancel.child_token()
    }

    /// Closes admission: later spawns fail with [`SpawnError::Closed`];
    /// queued tasks still run. Returns `false` if already closed.
    pub fn close(&self) -> bool {
        self.shared().close()
    }

    /// Whether admission is closed.
    pub fn is_closed(&self) -> bool {
        self.shared().closed.load(Ordering::Acquire)
    }

    /// Shuts down in phases:
    ///
    /// 1. close admission (later spawns get [`SpawnError::Closed`]);
    /// 2. let queued and running tasks finish, until
    ///    [`cancel_grace`](Builder::cancel_grace) before `deadline`;
    /// 3. cancel the [`cancellation_token`](Self::cancellation_token): tasks
    ///    that watch it stop, and every task that returns from here on is
    ///    counted as `cancelled` (whether it watched the token or not: the
    ///    executor cannot tell; panics and run timeouts keep their own
    ///    counts); queued tasks no longer start (they fail
    ///    with [`TaskError::NotStarted`] and are counted as returned);
    /// 4. at `deadline`, abort what still runs (handles resolve to
    ///    [`TaskError::Aborted`], the report names each as `task #ID`).
    ///
    /// Returns the report, where
    /// `accepted = completed + failed + cancelled + aborted + returned`.
    /// Calling it again returns the same totals.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let started = Instant::now();
        let s = self.shared();
        s.close();
        let left = deadline.saturating_duration_since(started);
        let cancel_at = deadline - s.cancel_grace.min(left / 2);
        if !self.wait_idle(Some(cancel_at)).await {
            tracing::warn!(executor = %s.name, "drain deadline near: cancelling running tasks");
            s.cancelling.store(true, Ordering::SeqCst);
            s.cancel.cancel();
            s.wake.notify_one();
            if !self.wait_idle(Some(deadline)).await {
                tracing::warn!(executor = %s.name, "shutdown deadline reached: aborting running tasks");
                s.aborting.store(true, Ordering::SeqCst);
                s.abort.cancel();
                s.wake.notify_one();
                self.wait_idle(None).await;
            }
        }
        let st = self.stats();
        let mut r = ShutdownReport::new(s.name.clone());
        r.accepted = st.accepted;
        r.completed = st.completed;
        r.failed = st.panicked + st.timed_out + st.queue_timed_out;
        r.cancelled = st.cancelled;
        r.aborted = st.aborted;
        r.returned = st.returned;
        r.rejected_after_close = st.rejected_after_close;
        r.unfinished = s
            .unfinished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        r.elapsed = started.elapsed();
        tracing::info!(executor = %s.name, report = %r, "executor shut down");
        r
    }

    async fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let s = self.shared();
        loop {
            let n = s.idle.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if s.is_idle() {
                return true;
            }
            tokio::select! {
                _ = n => {}
                _ = dispatch::sleep_until_opt(deadline) => return s.is_idle(),
            }
        }
    }
}

impl Drain for BoundedExecutor {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(self.shutdown(deadline))
    }
}

impl fmt::Debug for BoundedExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedExecutor")
            .field("name", &self.name())
            .field("stats", &self.stats())
            .finish()
    }
}

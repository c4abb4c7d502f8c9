//! The machinery shared by every pool: queue, workers, counters, sizing and
//! shutdown. The pools differ only in their [`Runner`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::runtime::Handle;
use tokio::sync::{Notify, OnceCell, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_core::queue::{Admitted, PushError, Queue};
use weft_core::{Counter, PanicPolicy, Panicked, ShutdownReport};

use crate::JobError;
use crate::adaptive::Scaling;
use crate::metrics::{self, Refused};
use crate::sizing::Sizing;
use crate::stats::PoolStats;

/// How a job ended, as recorded by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobOutcome {
    Succeeded,
    Failed,
    Panicked,
    TimedOut,
}

/// What a pool runs: how an item is executed and what state a worker keeps.
pub(crate) trait Runner: Send + Sync + 'static {
    type Item: Send + 'static;
    type State: Send;
    /// Whether workers are dedicated threads rather than tokio tasks.
    const THREADS: bool;

    /// Jobs inside one queue item.
    fn jobs(item: &Self::Item) -> u64;
    /// Disposes of an item evicted by `DropOldest` (its callers are told).
    fn evicted(item: Self::Item) {
        drop(item);
    }
    /// Builds a worker's state (a panic here is caught by the caller).
    fn init(&self) -> Self::State;
    /// Runs one item, recording each job's outcome on `env`; returns whether
    /// any job panicked (the worker's state is then rebuilt).
    fn run<'a>(
        &'a self,
        item: Self::Item,
        state: &'a mut Self::State,
        env: &'a Env<'a>,
    ) -> impl Future<Output = bool> + Send + 'a;
}

/// Runs `f` inside a panic boundary. The runners put every drop of a job's
/// future or output in one (a timed-out job's future, an output nobody
/// reads): a `Drop` that panics must not unwind the worker. Costs nothing
/// unless `f` panics.
#[inline]
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| Panicked::from_payload(p.as_ref()))
}

/// Drops the value of a finished job inside a panic boundary, leaving
/// `Err(with)` in its place (nothing if `r` is an error already): for an
/// output nobody will read, or a job that failed after all. Returns whether
/// the drop panicked; `r` is then that panic, logged.
pub(crate) fn discard<T>(r: &mut Result<T, JobError>, env: &Env<'_>, with: JobError) -> bool {
    if r.is_err() {
        return false;
    }
    let v = std::mem::replace(r, Err(with));
    match guarded(move || drop(v)) {
        Ok(()) => false,
        Err(p) => {
            env.log_drop_panic(&p);
            *r = Err(JobError::Panicked(p));
            true
        }
    }
}

/// Counters written only by their own worker (so never contended), summed
/// when read.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    /// Jobs this worker took from the queue. With the jobs handed back
    /// (`returned`), the report's `accepted`: counted where a job leaves
    /// the queue, because a producer's own count after its push can land
    /// after a worker ran the job (its push wakes the worker first).
    popped: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    in_flight: AtomicU64,
    busy_nanos: AtomicU64,
    /// Set while the worker's task is being polled (see [`Polled`]).
    polling: AtomicBool,
}

pin_project_lite::pin_project! {
    /// A worker's task: marks its slot while it is polled, so that its exit
    /// guard can tell a panic unwinding out of the worker (replace it) from
    /// the runtime dropping the task while some unrelated panic unwinds
    /// (`thread::panicking()` is true in both). Two relaxed stores a poll,
    /// where a `catch_unwind` around the worker would cost more.
    struct Polled<F> {
        #[pin]
        fut: F,
        slot: Arc<CachePadded<Slot>>,
    }
}

impl<F: Future> Future for Polled<F> {
    type Output = F::Output;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        this.slot.polling.store(true, Ordering::Relaxed);
        let r = this.fut.poll(cx);
        this.slot.polling.store(false, Ordering::Relaxed);
        r
    }
}

impl Slot {
    #[inline]
    fn bump(c: &AtomicU64, n: u64) {
        // Only this slot's worker writes it: a load + store is enough and
        // cheaper than a locked add.
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// What a running item needs from its worker.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub(crate) slot: &'a Slot,
    pub(crate) timeout: Option<Duration>,
    pub(crate) name: &'a str,
    /// The pool's metrics; none for a job run outside the pool.
    pub(crate) metrics: Option<&'a metrics::PoolMetrics>,
    cancelling: &'a AtomicBool,
    /// `PanicPolicy::Abort`: a job's panic aborts the process once logged.
    abort_on_panic: bool,
}

impl<'a> Env<'a> {
    /// An environment for running a job outside the pool (uncounted).
    pub(crate) fn detached(slot: &'a Slot, cancelling: &'a AtomicBool) -> Self {
        Env {
            slot,
            timeout: None,
            name: "detached",
            metrics: None,
            cancelling,
            abort_on_panic: false,
        }
    }

    /// Records one finished job.
    #[inline]
    pub(crate) fn record(&self, outcome: JobOutcome, _started: Option<Instant>) {
        let s = self.slot;
        if self.cancelling.load(Ordering::Relaxed) {
            Slot::bump(&s.cancelled, 1);
        } else {
            match outcome {
                JobOutcome::Succeeded => Slot::bump(&s.succeeded, 1),
                JobOutcome::Failed => Slot::bump(&s.failed, 1),
                JobOutcome::Panicked => Slot::bump(&s.panicked, 1),
                JobOutcome::TimedOut => Slot::bump(&s.timed_out, 1),
            }
        }
        let n = s.in_flight.load(Ordering::Relaxed);
        s.in_flight.store(n.saturating_sub(1), Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            if let Some(m) = self.metrics {
                m.job(outcome, _started.map(|s| s.elapsed()));
            }
        }
    }

    /// Logs a caught panic.
    pub(crate) fn log_panic(&self, p: &Panicked) {
        tracing::error!(
            pool = self.name,
            worker = self.slot.id,
            panic = p.message(),
            "job panicked; worker continues"
        );
        self.abort_if_asked();
    }

    /// Under `PanicPolicy::Abort`, aborts the process (the panic was just
    /// logged).
    #[inline]
    fn abort_if_asked(&self) {
        if self.abort_on_panic {
            self.abort();
        }
    }

    /// Counts the panic (in the stats and the metrics: the job's own
    /// record never comes), logs, and aborts.
    #[cold]
    #[inline(never)]
    fn abort(&self) -> ! {
        Slot::bump(&self.slot.panicked, 1);
        #[cfg(feature = "metrics")]
        if let Some(m) = self.metrics {
            m.job(JobOutcome::Panicked, None);
        }
        tracing::error!(
            pool = self.name,
            worker = self.slot.id,
            "aborting the process (PanicPolicy::Abort)"
        );
        std::process::abort();
    }

    /// Logs a panic caught while a job's future or output was dropped.
    #[cold]
    pub(crate) fn log_drop_panic(&self, p: &Panicked) {
        tracing::error!(
            pool = self.name,
            worker = self.slot.id,
            panic = p.message(),
            "job panicked while it was dropped; worker continues"
        );
        self.abort_if_asked();
    }

    /// When a job starts, for the duration histogram (only with `metrics`).
    #[inline]
    pub(crate) fn start_clock(&self) -> Option<Instant> {
        if cfg!(feature = "metrics") {
            Some(Instant::now())
        } else {
            None
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    popped: u64,
    succeeded: u64,
    failed: u64,
    panicked: u64,
    timed_out: u64,
    cancelled: u64,
    busy_nanos: u64,
}

impl Totals {
    fn add(&mut self, s: &Slot) {
        self.popped += s.popped.load(Ordering::Relaxed);
        self.succeeded += s.succeeded.load(Ordering::Relaxed);
        self.failed += s.failed.load(Ordering::Relaxed);
        self.panicked += s.panicked.load(Ordering::Relaxed);
        self.timed_out += s.timed_out.load(Ordering::Relaxed);
        self.cancelled += s.cancelled.load(Ordering::Relaxed);
        self.busy_nanos += s.busy_nanos.load(Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Registry {
    workers: Vec<(Arc<CachePadded<Slot>>, Option<AbortHandle>)>,
    retired: Totals,
    next_id: u64,
}

/// Settings fixed when the pool is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) scaling: Option<Scaling>,
    pub(crate) metrics: metrics::PoolMetrics,
    pub(crate) panic_policy: PanicPolicy,
}

/// What a cancelling shutdown hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Drain,
    Cancel,
}

pub(crate) struct Shared<R: Runner> {
    pub(crate) runner: R,
    pub(crate) queue: Queue<R::Item>,
    pub(crate) cfg: Config,
    handle: Handle,
    submitted: Counter,
    rejected: Counter,
    dropped: Counter,
    returned: Counter,
    rejected_after_close: Counter,
    aborted: AtomicU64,
    /// Panics of the worker state factory (rare: one plain atomic).
    factory_panics: AtomicU64,
    /// Whether an idle worker looks at the queue before it parks: not on a
    /// current-thread runtime, where the producer cannot run meanwhile.
    spin_idle: bool,
    unfinished: Mutex<Vec<String>>,
    registry: Mutex<Registry>,
    sizing: Sizing,
    /// Worker tasks or threads still running.
    tasks: AtomicUsize,
    min: AtomicUsize,
    max: AtomicUsize,
    wake_idle: Notify,
    exited: Notify,
    closed: AtomicBool,
    cancelling: AtomicBool,
    token: CancellationToken,
    report: OnceCell<ShutdownReport>,
    returned_items: Mutex<Vec<R::Item>>,
    /// Queue reservations of the tower services over this pool (one set
    /// for every `service::Pool` and `PoolLayer` over it); closed with the
    /// pool, which wakes services waiting for room.
    service_slots: Arc<Semaphore>,
}

impl<R: Runner> std::fmt::Debug for Shared<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.cfg.name)
            .field("queue", &self.queue)
            .field("workers", &self.sizing.live())
            .finish_non_exhaustive()
    }
}

/// Result of admitting an item.
pub(crate) type Admit<I> = Result<(), PushError<I>>;

impl<R: Runner> Shared<R> {
    pub(crate) fn start(
        runner: R,
        queue: Queue<R::Item>,
        cfg: Config,
        workers: usize,
        min: usize,
        max: usize,
    ) -> Result<Arc<Self>, crate::BuildError> {
        let handle = Handle::try_current().map_err(|_| crate::BuildError::NoRuntime)?;
        let spin_idle =
            R::THREADS || handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread;
        let slots = queue
            .capacity()
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            runner,
            queue,
            cfg,
            handle,
            submitted: Counter::new(),
            rejected: Counter::new(),
            dropped: Counter::new(),
            returned: Counter::new(),
            rejected_after_close: Counter::new(),
            aborted: AtomicU64::new(0),
            factory_panics: AtomicU64::new(0),
            spin_idle,
            unfinished: Mutex::new(Vec::new()),
            registry: Mutex::new(Registry::default()),
            sizing: Sizing::new(workers),
            tasks: AtomicUsize::new(0),
            min: AtomicUsize::new(min),
            max: AtomicUsize::new(max),
            wake_idle: Notify::new(),
            exited: Notify::new(),
            closed: AtomicBool::new(false),
            cancelling: AtomicBool::new(false),
            token: CancellationToken::new(),
            report: OnceCell::new(),
            returned_items: Mutex::new(Vec::new()),
            service_slots: Arc::new(Semaphore::new(slots)),
        });
        shared.ensure_workers();
        if let Some(scaling) = shared.cfg.scaling.clone() {
            let weak = Arc::downgrade(&shared);
            shared.handle.spawn(crate::adaptive::scaler(weak, scaling));
        }
        tracing::info!(pool = &*shared.cfg.name, workers, "pool started");
        Ok(shared)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether handles re-raise their job's panic (`PanicPolicy::Propagate`).
    pub(crate) fn propagates(&self) -> bool {
        self.cfg.panic_policy == PanicPolicy::Propagate
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The queue reservations shared by every tower service over this pool.
    pub(crate) fn service_slots(&self) -> &Arc<Semaphore> {
        &self.service_slots
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    // ---- admission ----

    /// Counts the outcome of a push of `n` jobs.
    #[inline]
    pub(crate) fn account(
        &self,
        n: u64,
        res: Result<Admitted<R::Item>, PushError<R::Item>>,
    ) -> Admit<R::Item> {
        match res {
            Ok(Admitted::Queued) => {
                self.submitted.add(n);
                Ok(())
            }
            Ok(Admitted::Evicted(old)) => {
                self.submitted.add(n);
                let k: u64 = old.iter().map(R::jobs).sum();
                self.dropped.add(k);
                self.returned.add(k);
                self.cfg.metrics.refused(Refused::Evicted, k);
                tracing::warn!(
                    pool = &*self.cfg.name,
                    jobs = k,
                    "queue full: evicted the oldest job (DropOldest)"
                );
                self.dispose(old, R::evicted, "evicted (DropOldest)");
                Ok(())
            }
            Err(e) => {
                let why = match &e {
                    PushError::Dropped(_) => {
                        self.dropped.add(n);
                        Refused::Dropped
                    }
                    PushError::Closed(_) => {
                        self.rejected.add(n);
                        self.rejected_after_close.add(n);
                        Refused::Rejected
                    }
                    _ => {
                        self.rejected.add(n);
                        Refused::Rejected
                    }
                };
                self.cfg.metrics.refused(why, n);
                tracing::warn!(pool = &*self.cfg.name, jobs = n, error = %e, "job not accepted");
                Err(e)
            }
        }
    }

    pub(crate) async fn push(&self, item: R::Item) -> Admit<R::Item> {
        let n = R::jobs(&item);
        let res = self.queue.push(item).await;
        self.account(n, res)
    }

    pub(crate) fn try_push(&self, item: R::Item) -> Admit<R::Item> {
        let n = R::jobs(&item);
        let res = self.queue.try_push(item);
        self.account(n, res)
    }

    // ---- workers ----

    /// Spawns workers until `live` reaches `target`.
    pub(crate) fn ensure_workers(self: &Arc<Self>) {
        while !self.is_closed() && self.sizing.claim_spawn() {
            self.spawn_worker();
        }
    }

    fn spawn_worker(self: &Arc<Self>) {
        let mut reg = self.registry();
        let id = reg.next_id;
        reg.next_id += 1;
        let slot = Arc::new(CachePadded::new(Slot {
            id,
            ..Slot::default()
        }));
        self.tasks.fetch_add(1, Ordering::AcqRel);
        let fut = Polled {
            fut: worker_loop(self.clone(), slot.clone()),
            slot: slot.clone(),
        };
        let abort = if R::THREADS {
            let handle = self.handle.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{id}", self.cfg.name))
                .spawn(move || handle.block_on(fut));
            if let Err(e) = spawned {
                tracing::error!(pool = &*self.cfg.name, error = %e, "could not start a worker thread");
                self.tasks.fetch_sub(1, Ordering::AcqRel);
                self.sizing.release();
                return;
            }
            None
        } else {
            Some(self.handle.spawn(fut).abort_handle())
        };
        reg.workers.push((slot, abort));
    }

    /// Takes one worker out of `live` if there are more than `floor`.
    fn retire_above(&self, floor: &AtomicUsize) -> bool {
        self.sizing.retire_above(floor.load(Ordering::Acquire))
    }

    #[inline]
    fn surplus(&self) -> bool {
        self.sizing.surplus()
    }

    /// Sets the number of workers (clamped to at least 1). Extra workers
    /// retire once their current job is done; idle ones at once.
    pub(crate) fn resize(self: &Arc<Self>, n: usize) -> usize {
        let n = n.max(1);
        self.sizing.set_target(n);
        if self.min.load(Ordering::Acquire) > n {
            self.min.store(n, Ordering::Release);
        }
        if self.max.load(Ordering::Acquire) < n {
            self.max.store(n, Ordering::Release);
        }
        self.ensure_workers();
        self.wake_idle.notify_waiters();
        tracing::info!(pool = &*self.cfg.name, workers = n, "pool resized");
        n
    }

    /// Sets the number of workers the pool aims for (adaptive scaling).
    pub(crate) fn set_target(self: &Arc<Self>, n: usize) {
        self.sizing.set_target(n);
        self.ensure_workers();
        self.wake_idle.notify_waiters();
    }

    pub(crate) fn bounds(&self) -> (usize, usize) {
        (
            self.min.load(Ordering::Acquire),
            self.max.load(Ordering::Acquire),
        )
    }

    pub(crate) fn live(&self) -> usize {
        self.sizing.live()
    }

    /// Busy time of all workers so far, and how many run a job right now.
    pub(crate) fn busy(&self) -> (u64, u64) {
        let reg = self.registry();
        let mut nanos = reg.retired.busy_nanos;
        let mut running = 0;
        for (s, _) in &reg.workers {
            nanos += s.busy_nanos.load(Ordering::Relaxed);
            running += s.in_flight.load(Ordering::Relaxed).min(1);
        }
        (nanos, running)
    }

    // ---- stats ----

    /// Jobs taken from the queue by every worker, live and retired.
    fn popped(&self) -> u64 {
        let reg = self.registry();
        reg.retired.popped
            + reg
                .workers
                .iter()
                .map(|(s, _)| s.popped.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let reg = self.registry();
        let mut t = Totals {
            popped: reg.retired.popped,
            succeeded: reg.retired.succeeded,
            failed: reg.retired.failed,
            panicked: reg.retired.panicked,
            timed_out: reg.retired.timed_out,
            cancelled: reg.retired.cancelled,
            busy_nanos: 0,
        };
        let mut running = 0;
        for (s, _) in &reg.workers {
            t.add(s);
            running += s.in_flight.load(Ordering::Relaxed);
        }
        drop(reg);
        let queued = self.queue.len();
        let workers = self.sizing.live();
        self.cfg.metrics.gauges(queued, workers);
        PoolStats {
            submitted: self.submitted.get(),
            queued: queued as u64,
            running,
            succeeded: t.succeeded,
            failed: t.failed + t.panicked + t.timed_out,
            panicked: t.panicked,
            timed_out: t.timed_out,
            cancelled: t.cancelled,
            rejected: self.rejected.get(),
            dropped: self.dropped.get(),
            returned: self.returned.get(),
            aborted: self.aborted.load(Ordering::Relaxed),
            factory_panics: self.factory_panics.load(Ordering::Relaxed),
            workers: workers as u64,
            target_workers: self.sizing.target() as u64,
        }
    }

    // ---- shutdown ----

    pub(crate) async fn shutdown(
        self: &Arc<Self>,
        mode: Mode,
        deadline: Instant,
    ) -> ShutdownReport {
        self.report
            .get_or_init(|| self.run_shutdown(mode, deadline))
            .await
            .clone()
    }

    /// Drops the jobs a shutdown handed back and nobody took
    /// (`shutdown_returning` takes them), each inside a panic boundary.
    pub(crate) fn drop_returned(&self) {
        self.dispose(self.take_returned(), drop, "handed back by the shutdown");
    }

    /// Disposes of queue items that never ran (`f`: drop them, or fail
    /// their handles first), each inside a panic boundary: a job whose
    /// future panics when dropped must not unwind into the submitter that
    /// evicted it or the caller of `shutdown`. Such a panic is logged (the
    /// jobs were counted already: returned, or dropped); under
    /// `PanicPolicy::Abort` it aborts the process.
    fn dispose(&self, items: Vec<R::Item>, f: fn(R::Item), why: &str) {
        for item in items {
            if let Err(p) = guarded(move || f(item)) {
                tracing::error!(
                    pool = &*self.cfg.name,
                    panic = p.message(),
                    "a job {why} panicked when dropped"
                );
                if self.cfg.panic_policy == PanicPolicy::Abort {
                    tracing::error!(
                        pool = &*self.cfg.name,
                        "aborting the process (PanicPolicy::Abort)"
                    );
                    std::process::abort();
                }
            }
        }
    }

    pub(crate) fn take_returned(&self) -> Vec<R::Item> {
        std::mem::take(
            &mut *self
                .returned_items
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    fn hand_back_queued(&self) {
        let items = self.queue.drain_now();
        if items.is_empty() {
            return;
        }
        let n: u64 = items.iter().map(R::jobs).sum();
        self.returned.add(n);
        tracing::info!(
            pool = &*self.cfg.name,
            jobs = n,
            "queued jobs handed back unstarted"
        );
        self.returned_items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(items);
    }

    /// Closes admission and lets idle workers exit (used on drop too).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.queue.close();
        self.service_slots.close();
        self.wake_idle.notify_waiters();
    }

    async fn wait_exited(&self, until: Instant) -> bool {
        loop {
            let notified = self.exited.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.tasks.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.tasks.load(Ordering::Acquire) == 0;
            }
        }
    }

    async fn run_shutdown(self: &Arc<Self>, mode: Mode, deadline: Instant) -> ShutdownReport {
        let started = Instant::now();
        let name = &*self.cfg.name;
        tracing::info!(pool = name, ?mode, "pool shutting down");
        self.close();
        if mode == Mode::Cancel {
            self.hand_back_queued();
        }
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let cancel_at = deadline - self.cfg.cancel_grace.min(left / 2);
        if !self.wait_exited(cancel_at).await {
            tracing::warn!(pool = name, "drain deadline near: cancelling running jobs");
            self.cancelling.store(true, Ordering::Release);
            self.token.cancel();
            if !self.wait_exited(deadline).await {
                tracing::warn!(
                    pool = name,
                    "shutdown deadline passed: aborting running jobs"
                );
                for (_, abort) in &self.registry().workers {
                    if let Some(a) = abort {
                        a.abort();
                    }
                }
                if !R::THREADS {
                    self.wait_exited(Instant::now() + Duration::from_secs(1))
                        .await;
                }
            }
        }
        // Whatever is still queued (drain cut short) goes back unstarted.
        self.hand_back_queued();
        // Worker threads that could not be stopped: their jobs are given up.
        {
            let reg = self.registry();
            let mut unfinished = self.unfinished.lock().unwrap_or_else(|p| p.into_inner());
            for (s, _) in &reg.workers {
                let n = s.in_flight.load(Ordering::Acquire);
                if n > 0 {
                    self.aborted.fetch_add(n, Ordering::AcqRel);
                    unfinished.push(format!(
                        "{name} worker {}: {n} job(s) still running on its thread",
                        s.id
                    ));
                }
            }
        }
        let st = self.stats();
        let mut r = ShutdownReport::new(name);
        // Every job that entered the queue has left it by now (taken by a
        // worker, or handed back): counted on that side, the report cannot
        // miss a job whose producer has not counted it yet.
        r.accepted = self.popped() + st.returned;
        r.completed = st.succeeded;
        r.failed = st.failed;
        r.cancelled = st.cancelled;
        r.aborted = st.aborted;
        r.returned = st.returned;
        r.rejected_after_close = self.rejected_after_close.get();
        r.unfinished = self
            .unfinished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        r.elapsed = started.elapsed();
        tracing::info!(pool = name, report = %r, "pool shut down");
        r
    }

    fn retire(&self, slot: &Slot, counted: bool) {
        let mut reg = self.registry();
        if let Some(pos) = reg
            .workers
            .iter()
            .position(|(s, _)| std::ptr::eq::<Slot>(&***s, slot))
        {
            let (s, _) = reg.workers.swap_remove(pos);
            reg.retired.add(&s);
            let cut = s.in_flight.load(Ordering::Acquire);
            if cut > 0 {
                // The worker was dropped (aborted) in the middle of a job.
                self.aborted.fetch_add(cut, Ordering::AcqRel);
                self.unfinished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "{} worker {}: {cut} job(s) aborted",
                        self.cfg.name, s.id
                    ));
            }
        }
        drop(reg);
        if counted {
            self.sizing.release();
        }
        self.tasks.fetch_sub(1, Ordering::AcqRel);
        self.exited.notify_waiters();
    }
}

/// Takes a worker out of the registry however it exits, and replaces a
/// worker unwound by a stray panic.
struct ExitGuard<'a, R: Runner> {
    shared: &'a Arc<Shared<R>>,
    slot: &'a Slot,
    counted: bool,
}

impl<R: Runner> Drop for ExitGuard<'_, R> {
    fn drop(&mut self) {
        self.shared.retire(self.slot, self.counted);
        // A worker unwound by a panic that escaped every job boundary (none
        // should: the runners catch panics in a job's polls and drops) is
        // replaced while the pool is open, so the pool keeps its size; not
        // when the runtime drops the task (it is not being polled then).
        if std::thread::panicking()
            && self.slot.polling.load(Ordering::Relaxed)
            && !self.shared.is_closed()
        {
            tracing::error!(
                pool = &*self.shared.cfg.name,
                worker = self.slot.id,
                "worker panicked outside a job's panic boundary; starting a replacement"
            );
            self.shared.ensure_workers();
        }
    }
}

enum Wait<I> {
    Item(I),
    Exit,
}

async fn next_item<R: Runner>(shared: &Shared<R>, guard: &mut ExitGuard<'_, R>) -> Wait<R::Item> {
    if shared.spin_idle
        && let Some(item) = spin_for_item(shared)
    {
        return Wait::Item(item);
    }
    loop {
        let notified = shared.wake_idle.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.surplus() && shared.sizing.retire_above(shared.sizing.target()) {
            guard.counted = false;
            return Wait::Exit;
        }
        if let Some(item) = shared.queue.try_pop() {
            return Wait::Item(item);
        }
        let idle = match &shared.cfg.scaling {
            Some(s) if shared.sizing.live() > shared.min.load(Ordering::Relaxed) => {
                Some(s.idle_timeout)
            }
            _ => None,
        };
        let idle_sleep = async {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            item = shared.queue.pop() => return match item {
                Some(i) => Wait::Item(i),
                None => Wait::Exit,
            },
            _ = &mut notified => {}
            _ = idle_sleep => {
                if shared.retire_above(&shared.min) {
                    guard.counted = false;
                    tracing::debug!(pool = &*shared.cfg.name, worker = guard.slot.id, "idle worker expired");
                    return Wait::Exit;
                }
            }
        }
    }
}

/// How many times an idle worker looks at the queue before it parks, with a
/// growing pause: 447 `PAUSE` instructions in all, about 10 µs on the
/// benchmark machine's AMD EPYC and up to about 20 µs on recent Intel cores.
const IDLE_SPINS: u32 = 12;

/// Looks at the queue a few times, briefly, before the worker parks.
///
/// Parking costs both sides: the worker registers a listener and its
/// thread sleeps, and the producer's next push must take the listener
/// list's lock and wake a thread (a futex call), a few hundred nanoseconds
/// that a producer of tiny jobs pays on every push. A worker that waits a
/// little first usually finds the next job without parking at all (on the
/// reference workload this took `submit` from about 2.0x to 2.8x JoinSet's
/// throughput; docs/pool.md has the runs). The loop only reads the queue's indices until they show a
/// job, so it does not contend with the producer, and it is bounded: a
/// pool that goes idle parks within [`IDLE_SPINS`]' pauses, and costs at
/// most that much CPU per job when jobs arrive slowly. Skipped on a
/// current-thread runtime, where nothing can be pushed while a worker
/// spins.
fn spin_for_item<R: Runner>(shared: &Shared<R>) -> Option<R::Item> {
    let backoff = crossbeam_utils::Backoff::new();
    for _ in 0..IDLE_SPINS {
        backoff.spin();
        if !shared.queue.is_empty()
            && let Some(item) = shared.queue.try_pop()
        {
            return Some(item);
        }
    }
    None
}

/// First pause after the worker state factory panics; doubled after each
/// further panic of the same worker, up to [`FACTORY_BACKOFF_MAX`].
pub(crate) const FACTORY_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between two attempts to build a worker's state.
pub(crate) const FACTORY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Builds a worker's state. A panicking factory is counted, logged and
/// retried after a backoff (10 ms doubling up to 1 s, on tokio time), so a
/// failed worker is replaced in place and the pool keeps its worker count,
/// while a factory that always panics does not spin. `None` when the worker
/// should exit instead: shutdown is cancelling, the pool is closed with
/// nothing queued, or the worker is surplus after a resize.
async fn build_state<R: Runner>(
    shared: &Shared<R>,
    guard: &mut ExitGuard<'_, R>,
) -> Option<R::State> {
    let mut delay = FACTORY_BACKOFF_MIN;
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.runner.init())) {
            Ok(s) => return Some(s),
            Err(p) => {
                let p = Panicked::from_payload(p.as_ref());
                shared.factory_panics.fetch_add(1, Ordering::Relaxed);
                shared.cfg.metrics.factory_panicked();
                tracing::error!(
                    pool = &*shared.cfg.name,
                    worker = guard.slot.id,
                    panic = p.message(),
                    retry_in = ?delay,
                    "worker state factory panicked; retrying"
                );
            }
        }
        let until = Instant::now() + delay;
        delay = (delay * 2).min(FACTORY_BACKOFF_MAX);
        loop {
            let notified = shared.wake_idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.cancelling.load(Ordering::Acquire)
                || (shared.is_closed() && shared.queue.is_empty())
            {
                return None;
            }
            if shared.surplus() && shared.sizing.retire_above(shared.sizing.target()) {
                guard.counted = false;
                return None;
            }
            // A token cancelled by a user (not by shutdown) must not wake us
            // over and over.
            let watch_token = !shared.token.is_cancelled();
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = &mut notified => {}
                _ = shared.token.cancelled(), if watch_token => {}
            }
        }
    }
}

async fn worker_loop<R: Runner>(shared: Arc<Shared<R>>, slot: Arc<CachePadded<Slot>>) {
    let mut guard = ExitGuard {
        shared: &shared,
        slot: &slot,
        counted: true,
    };
    let Some(mut state) = build_state(&shared, &mut guard).await else {
        return;
    };
    let env = Env {
        slot: &slot,
        timeout: shared.cfg.timeout,
        name: &shared.cfg.name,
        metrics: Some(&shared.cfg.metrics),
        cancelling: &shared.cancelling,
        abort_on_panic: shared.cfg.panic_policy == PanicPolicy::Abort,
    };
    let track_busy = shared.cfg.scaling.is_some();
    loop {
        let item = match shared.queue.try_pop() {
            Some(item) => item,
            None => match next_item(&shared, &mut guard).await {
                Wait::Item(i) => i,
                Wait::Exit => break,
            },
        };
        let jobs = R::jobs(&item);
        Slot::bump(&slot.popped, jobs);
        slot.in_flight.store(jobs, Ordering::Relaxed);
        let began = if track_busy {
            Some(Instant::now())
        } else {
            None
        };
        let panicked = shared.runner.run(item, &mut state, &env).await;
        slot.in_flight.store(0, Ordering::Relaxed);
        if let Some(b) = began {
            Slot::bump(&slot.busy_nanos, b.elapsed().as_nanos() as u64);
        }
        if panicked {
            // Drop the old state first: it may hold what the new one needs
            // (a connection slot, a file lock).
            drop(state);
            match build_state(&shared, &mut guard).await {
                Some(s) => state = s,
                None => break,
            }
        }
        if shared.surplus() && shared.sizing.retire_above(shared.sizing.target()) {
            guard.counted = false;
            break;
        }
    }
    drop(guard);
}

/// Holds a weak reference for background tasks.
pub(crate) type WeakShared<R> = Weak<Shared<R>>;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use weft_core::Overflow;

    /// Runs `false` items; panics on a `true` item outside any job's panic
    /// boundary (what a bug in a runner would do).
    #[derive(Default)]
    struct Fragile {
        ran: AtomicUsize,
    }

    impl Runner for Fragile {
        type Item = bool;
        type State = ();
        const THREADS: bool = false;

        fn jobs(_: &bool) -> u64 {
            1
        }
        fn init(&self) {}
        async fn run<'a>(&'a self, item: bool, _: &'a mut (), env: &'a Env<'a>) -> bool {
            assert!(!item, "a bug outside the job's panic boundary");
            self.ran.fetch_add(1, Ordering::SeqCst);
            env.record(JobOutcome::Succeeded, None);
            false
        }
    }

    /// Guards the backstop in `ExitGuard`: a worker unwound by a panic that
    /// escaped every job boundary is replaced while the pool is open, so the
    /// pool keeps its size (it used to lose the worker for good, down to a
    /// pool with none), and the item it was running counts as aborted.
    #[tokio::test(start_paused = true)]
    async fn a_worker_killed_by_a_stray_panic_is_replaced() {
        let cfg = Config {
            name: "fragile".into(),
            timeout: None,
            cancel_grace: Duration::from_millis(250),
            scaling: None,
            metrics: metrics::PoolMetrics::new("fragile"),
            panic_policy: PanicPolicy::Report,
        };
        let queue = Queue::bounded(8, Overflow::Block).unwrap();
        let shared = Shared::start(Fragile::default(), queue, cfg, 1, 1, 1).unwrap();
        shared.push(true).await.unwrap();
        shared.push(false).await.unwrap();
        for _ in 0..1000 {
            if shared.runner.ran.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            shared.runner.ran.load(Ordering::SeqCst),
            1,
            "the next item never ran: the worker was not replaced"
        );
        let st = shared.stats();
        assert_eq!((st.workers, st.succeeded, st.aborted), (1, 1, 1), "{st:?}");
        let r = shared
            .shutdown(Mode::Drain, Instant::now() + Duration::from_secs(1))
            .await;
        assert!(r.is_balanced(), "{r}");
        assert_eq!(r.unfinished.len(), 1, "{r}");
    }
}

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use weft_core::{Drain, Panicked, ShutdownReport};

use crate::admission::ShutdownLayer;
use crate::error::{BuildError, DEFAULT_PHASE_TIMEOUT, RegisterError, SpawnError};
use crate::report::{ComponentOutcome, ComponentReport, PhaseReport, Report, Trigger};
use crate::tasks::Tasks;

/// How long after its phase's deadline a component is cut off. Components are
/// given the deadline and should return by it; this margin lets one that
/// stops exactly at the deadline report instead of being cut.
pub const CUTOFF_MARGIN: Duration = Duration::from_millis(50);

/// The default phases, in order, each with a 10 s timeout.
pub const DEFAULT_PHASES: [&str; 4] = ["stop-accepting", "drain", "flush", "close"];

type DrainFn = Box<dyn FnOnce(Instant) -> BoxFuture<'static, Option<ShutdownReport>> + Send>;

enum Component {
    Drain(Arc<dyn Drain>),
    Fn(DrainFn),
}

struct Registered {
    name: String,
    component: Component,
}

struct Phase {
    name: String,
    timeout: Duration,
    components: Mutex<Option<Vec<Registered>>>,
}

/// Builds a [`Coordinator`].
///
/// ```
/// use std::time::Duration;
/// use weft_shutdown::Coordinator;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shutdown = Coordinator::builder()
///     .phase("stop-accepting", Duration::from_secs(5))
///     .phase("drain", Duration::from_secs(30))
///     .phase("close", Duration::from_secs(5))
///     .task_grace(Duration::from_secs(2))
///     .signals(false) // tests and embedded use; services keep the default
///     .build()
///     .unwrap();
/// assert_eq!(shutdown.phases(), vec!["stop-accepting", "drain", "close"]);
/// # }
/// ```
#[derive(Debug)]
pub struct Builder {
    phases: Vec<(String, Duration)>,
    signals: bool,
    external: Option<CancellationToken>,
    task_grace: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            phases: Vec::new(),
            signals: true,
            external: None,
            task_grace: Duration::from_secs(5),
        }
    }
}

impl Builder {
    /// Adds a phase. Phases run in the order they are added; components
    /// within a phase drain concurrently and are cut off at the phase's
    /// timeout. Without any `phase` call the coordinator uses
    /// [`DEFAULT_PHASES`], each with a 10 s timeout.
    pub fn phase(mut self, name: impl Into<String>, timeout: Duration) -> Self {
        self.phases.push((name.into(), timeout));
        self
    }

    /// Whether SIGINT and SIGTERM (Ctrl-C on non-Unix) trigger the shutdown;
    /// a second signal forces it. Default: on.
    pub fn signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Also triggers the shutdown when `token` is cancelled (for example a
    /// parent's token).
    pub fn trigger_on(mut self, token: CancellationToken) -> Self {
        self.external = Some(token);
        self
    }

    /// How long tracked tasks get after their cancellation token fires before
    /// they are aborted. Default: 5 s, enough for a task to notice the token
    /// and finish its current unit of work.
    pub fn task_grace(mut self, grace: Duration) -> Self {
        self.task_grace = grace;
        self
    }

    /// Builds the coordinator. With signals on (the default) this must be
    /// called inside a tokio runtime, which installs the handlers at once so
    /// that no signal between `build` and `run` is missed.
    pub fn build(self) -> Result<Coordinator, BuildError> {
        let phases = if self.phases.is_empty() {
            DEFAULT_PHASES
                .iter()
                .map(|p| ((*p).to_owned(), DEFAULT_PHASE_TIMEOUT))
                .collect()
        } else {
            self.phases
        };
        for (i, (name, timeout)) in phases.iter().enumerate() {
            if timeout.is_zero() {
                return Err(BuildError::ZeroTimeout(name.clone()));
            }
            if phases[..i].iter().any(|(n, _)| n == name) {
                return Err(BuildError::DuplicatePhase(name.clone()));
            }
        }
        let trigger = Arc::new(TriggerState::default());
        let mut listeners = Vec::new();
        if self.signals || self.external.is_some() {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
            if self.signals {
                listeners.push(crate::signal::listen(&handle, trigger.clone())?);
            }
            if let Some(token) = self.external {
                let t = trigger.clone();
                listeners.push(
                    handle
                        .spawn(async move {
                            token.cancelled().await;
                            t.fire(Trigger::External);
                        })
                        .abort_handle(),
                );
            }
        }
        let (report_tx, _) = watch::channel(None);
        Ok(Coordinator {
            inner: Arc::new(Inner {
                phases: phases
                    .into_iter()
                    .map(|(name, timeout)| Phase {
                        name,
                        timeout,
                        components: Mutex::new(Some(Vec::new())),
                    })
                    .collect(),
                trigger,
                tasks: Arc::new(Tasks::default()),
                task_grace: self.task_grace,
                listeners: Mutex::new(listeners),
                running: AtomicBool::new(false),
                report: report_tx,
            }),
        })
    }
}

/// Shared trigger state: the first trigger requests the shutdown, any later
/// one forces it.
#[derive(Debug, Default)]
pub(crate) struct TriggerState {
    count: AtomicUsize,
    reason: Mutex<Option<Trigger>>,
    requested: CancellationToken,
    forced: CancellationToken,
}

impl TriggerState {
    /// Whether any trigger has fired: one atomic load (unlike
    /// `CancellationToken::is_cancelled`, which locks), for per-request checks.
    pub(crate) fn is_fired(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn fire(&self, why: Trigger) {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            tracing::info!(trigger = %why, "shutdown requested");
            *lock(&self.reason) = Some(why);
            self.requested.cancel();
        } else {
            tracing::warn!(trigger = %why, "second trigger during shutdown: forcing (skipping to abort)");
            self.forced.cancel();
        }
    }
}

struct Inner {
    phases: Vec<Phase>,
    trigger: Arc<TriggerState>,
    tasks: Arc<Tasks>,
    task_grace: Duration,
    listeners: Mutex<Vec<AbortHandle>>,
    running: AtomicBool,
    report: watch::Sender<Option<Report>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for l in lock(&self.listeners).drain(..) {
            l.abort();
        }
    }
}

/// The shutdown coordinator: triggers, ordered phases with deadlines, tracked
/// tasks, and a [`Report`].
///
/// Clones share one coordinator. Typical use: build it first thing in
/// `main`, register components into phases as they are created, spawn
/// background tasks through it, and end `main` with `run().await`, which
/// waits for a trigger (SIGINT, SIGTERM, [`trigger`](Coordinator::trigger) or
/// an external token) and then shuts everything down in order.
///
/// ```
/// use std::time::Duration;
/// use weft_shutdown::Coordinator;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let shutdown = Coordinator::builder().signals(false).build().unwrap();
/// shutdown
///     .register_fn("flush", "metrics", |_deadline| async {
///         // flush buffers here
///     })
///     .unwrap();
/// shutdown.spawn("ticker", |cancel| async move {
///     cancel.cancelled().await; // stop when asked
/// }).unwrap();
///
/// shutdown.trigger(); // normally SIGTERM does this
/// let report = shutdown.run().await;
/// assert!(report.is_clean());
/// println!("{report}");
/// # }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("phases", &self.phases())
            .field("requested", &self.is_requested())
            .finish()
    }
}

impl Coordinator {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The phase names, in order.
    pub fn phases(&self) -> Vec<&str> {
        self.inner.phases.iter().map(|p| p.name.as_str()).collect()
    }

    fn phase(&self, phase: &str) -> Result<&Phase, RegisterError> {
        self.inner
            .phases
            .iter()
            .find(|p| p.name == phase)
            .ok_or_else(|| RegisterError::UnknownPhase {
                phase: phase.to_owned(),
                known: self.phases().into_iter().map(str::to_owned).collect(),
            })
    }

    fn push(&self, phase: &str, r: Registered) -> Result<(), RegisterError> {
        let p = self.phase(phase)?;
        match lock(&p.components).as_mut() {
            Some(list) => {
                list.push(r);
                Ok(())
            }
            None => Err(RegisterError::PhaseStarted(phase.to_owned())),
        }
    }

    /// Registers a [`Drain`] component (a pool, an actor system, a pipeline)
    /// into a phase. Its report appears in the coordinator's report.
    pub fn register(
        &self,
        phase: &str,
        name: impl Into<String>,
        component: impl Drain + 'static,
    ) -> Result<(), RegisterError> {
        self.push(
            phase,
            Registered {
                name: name.into(),
                component: Component::Drain(Arc::new(component)),
            },
        )
    }

    /// Registers an async closure into a phase; it gets the phase's deadline.
    pub fn register_fn<F, Fut>(
        &self,
        phase: &str,
        name: impl Into<String>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: FnOnce(Instant) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: DrainFn = Box::new(move |deadline| {
            let fut = f(deadline);
            Box::pin(async move {
                fut.await;
                None
            })
        });
        self.push(
            phase,
            Registered {
                name: name.into(),
                component: Component::Fn(f),
            },
        )
    }

    /// A [`ShutdownLayer`] that refuses new requests as soon as the shutdown
    /// is triggered, registered into `phase` so that the phase waits for its
    /// in-flight requests.
    pub fn layer(
        &self,
        phase: &str,
        name: impl Into<String>,
    ) -> Result<ShutdownLayer, RegisterError> {
        let name = name.into();
        let layer = ShutdownLayer::with_trigger(name.clone(), self.inner.trigger.clone());
        self.register(phase, name, layer.clone())?;
        Ok(layer)
    }

    /// Spawns a tracked task. `f` gets a token that is cancelled once every
    /// phase has run; a task still running `task_grace` later (or when a
    /// second trigger forces the shutdown) is aborted and named in the
    /// report. Panics are contained and counted.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, f: F) -> Result<(), SpawnError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Tasks::spawn_arc(&self.inner.tasks, name.into(), f)
    }

    /// A token cancelled as soon as the shutdown is triggered: loops that
    /// accept new work select on it to stop accepting.
    pub fn requested(&self) -> CancellationToken {
        self.inner.trigger.requested.clone()
    }

    /// Whether the shutdown has been triggered.
    pub fn is_requested(&self) -> bool {
        self.inner.trigger.requested.is_cancelled()
    }

    /// Triggers the shutdown; a second call forces it (skips the remaining
    /// phases, aborts running components).
    pub fn trigger(&self) {
        self.inner.trigger.fire(Trigger::Programmatic);
    }

    /// Waits for a trigger, runs every phase in order, then cancels and
    /// aborts the tracked tasks, and returns the report.
    ///
    /// Any number of clones may call `run`; the first drives the shutdown and
    /// the others wait for its report. Dropping the driving future abandons
    /// the shutdown where it is: the running phase's components are aborted,
    /// later phases and the tracked tasks' cancellation never happen, and
    /// any other `run` (now or later) waits forever. Put a hard limit on the
    /// whole shutdown with phase timeouts and `task_grace`, not by dropping
    /// `run`.
    pub async fn run(&self) -> Report {
        if self.inner.running.swap(true, Ordering::SeqCst) {
            let mut rx = self.inner.report.subscribe();
            loop {
                if let Some(r) = rx.borrow_and_update().clone() {
                    return r;
                }
                if rx.changed().await.is_err() {
                    // Unreachable while `self` holds the sender; wait forever
                    // rather than invent a report.
                    std::future::pending::<()>().await;
                }
            }
        }
        let report = self.drive().await;
        self.inner.report.send_replace(Some(report.clone()));
        report
    }

    async fn drive(&self) -> Report {
        let trigger = &self.inner.trigger;
        trigger.requested.cancelled().await;
        let started = Instant::now();
        let reason = lock(&trigger.reason)
            .clone()
            .unwrap_or(Trigger::Programmatic);
        let mut phases = Vec::with_capacity(self.inner.phases.len());
        for phase in &self.inner.phases {
            let components = lock(&phase.components).take().unwrap_or_default();
            phases.push(self.run_phase(phase, components).await);
        }
        let tasks = self
            .inner
            .tasks
            .finish(self.inner.task_grace, &trigger.forced)
            .await;
        for l in lock(&self.inner.listeners).drain(..) {
            l.abort();
        }
        let report = Report {
            trigger: reason,
            forced: trigger.forced.is_cancelled(),
            phases,
            tasks,
            elapsed: started.elapsed(),
        };
        if report.is_clean() {
            tracing::info!(elapsed = ?report.elapsed, "shutdown complete");
        } else {
            tracing::warn!(unfinished = ?report.unfinished(), "shutdown complete, not clean");
        }
        report
    }

    async fn run_phase(&self, phase: &Phase, components: Vec<Registered>) -> PhaseReport {
        let start = Instant::now();
        let forced = &self.inner.trigger.forced;
        let mut reports: Vec<ComponentReport> = components
            .iter()
            .map(|c| ComponentReport {
                name: c.name.clone(),
                outcome: ComponentOutcome::Skipped,
                elapsed: Duration::ZERO,
                detail: None,
            })
            .collect();
        if forced.is_cancelled() {
            tracing::warn!(phase = %phase.name, "phase skipped: shutdown forced");
            return PhaseReport {
                name: phase.name.clone(),
                timeout: phase.timeout,
                elapsed: Duration::ZERO,
                components: reports,
            };
        }
        tracing::info!(phase = %phase.name, components = components.len(), "shutdown phase starting");
        let deadline = start + phase.timeout;
        let mut set = JoinSet::new();
        let mut ids = std::collections::HashMap::new();
        for (i, c) in components.into_iter().enumerate() {
            let fut: BoxFuture<'static, Option<ShutdownReport>> = match c.component {
                Component::Drain(d) => Box::pin(async move { Some(d.drain(deadline).await) }),
                Component::Fn(f) => f(deadline),
            };
            let handle = set.spawn(fut);
            ids.insert(handle.id(), i);
        }
        let mut cut_off: Option<ComponentOutcome> = None;
        let cutoff = sleep_until(deadline + CUTOFF_MARGIN);
        tokio::pin!(cutoff);
        loop {
            tokio::select! {
                biased;
                joined = set.join_next_with_id() => {
                    let Some(joined) = joined else { break };
                    let (id, outcome, detail) = match joined {
                        Ok((id, detail)) => (id, ComponentOutcome::Completed, detail),
                        Err(e) if e.is_panic() => {
                            let id = e.id();
                            let p = Panicked::from_payload(e.into_panic().as_ref());
                            (id, ComponentOutcome::Panicked(p.message().to_owned()), None)
                        }
                        Err(e) => (e.id(), cut_off.clone().unwrap_or(ComponentOutcome::Aborted), None),
                    };
                    let i = ids[&id];
                    let r = &mut reports[i];
                    match &outcome {
                        ComponentOutcome::Completed => tracing::info!(component = %r.name, "component drained"),
                        ComponentOutcome::Panicked(m) => tracing::error!(component = %r.name, panic = %m, "component panicked while draining"),
                        _ => tracing::warn!(component = %r.name, outcome = ?outcome, "component cut off"),
                    }
                    r.outcome = outcome;
                    r.elapsed = start.elapsed();
                    r.detail = detail;
                }
                _ = forced.cancelled(), if cut_off.is_none() => {
                    cut_off = Some(ComponentOutcome::Aborted);
                    set.abort_all();
                }
                _ = &mut cutoff, if cut_off.is_none() => {
                    cut_off = Some(ComponentOutcome::TimedOut);
                    set.abort_all();
                }
            }
        }
        #[cfg(feature = "metrics")]
        {
            metrics::histogram!("weft_shutdown_phase_duration_seconds", "phase" => phase.name.clone())
                .record(start.elapsed().as_secs_f64());
            for r in &reports {
                let outcome = match r.outcome {
                    ComponentOutcome::Completed => "completed",
                    ComponentOutcome::TimedOut => "timed_out",
                    ComponentOutcome::Panicked(_) => "panicked",
                    ComponentOutcome::Aborted => "aborted",
                    ComponentOutcome::Skipped => "skipped",
                };
                metrics::counter!("weft_shutdown_components_total", "phase" => phase.name.clone(), "outcome" => outcome).increment(1);
            }
        }
        PhaseReport {
            name: phase.name.clone(),
            timeout: phase.timeout,
            elapsed: start.elapsed(),
            components: reports,
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

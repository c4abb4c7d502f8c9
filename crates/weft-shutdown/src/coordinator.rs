use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_core::{Drain, ShutdownReport};

use crate::admission::ShutdownLayer;
use crate::error::{BuildError, DEFAULT_PHASE_TIMEOUT, RegisterError, SpawnError};
use crate::report::{Report, Trigger};
use crate::tasks::Tasks;

/// How long after its phase's deadline a component is cut off. Components are
/// given the deadline and should return by it; this margin lets one that
/// stops exactly at the deadline report instead of being cut.
pub const CUTOFF_MARGIN: Duration = Duration::from_millis(50);

/// The default phases, in order, each with a 10 s timeout.
pub const DEFAULT_PHASES: [&str; 4] = ["stop-accepting", "drain", "flush", "close"];

pub(crate) type DrainFn =
    Box<dyn FnOnce(Instant) -> BoxFuture<'static, Option<ShutdownReport>> + Send>;

pub(crate) enum Component {
    Drain(Arc<dyn Drain>),
    Fn(DrainFn),
}

pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) component: Component,
}

pub(crate) struct Phase {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    /// `None` once the phase has started.
    pub(crate) components: Mutex<Option<Vec<Registered>>>,
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
    ///
    /// A timeout too large to add to the clock (`Duration::MAX`, the way to
    /// say "as long as it takes") gives a deadline about 30 years away, as
    /// `tokio::time::sleep` does; a zero timeout is refused by
    /// [`build`](Builder::build).
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
    /// and finish its current unit of work. `Duration::MAX` waits about 30
    /// years, as `tokio::time::sleep` does.
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
                driver: Mutex::new(None),
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
    pub(crate) reason: Mutex<Option<Trigger>>,
    pub(crate) requested: CancellationToken,
    pub(crate) forced: CancellationToken,
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

pub(crate) struct Inner {
    pub(crate) phases: Vec<Phase>,
    pub(crate) trigger: Arc<TriggerState>,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) task_grace: Duration,
    pub(crate) listeners: Mutex<Vec<AbortHandle>>,
    /// Whether a driver task has been started (and has not gone away before
    /// the trigger): the first `run` to set it starts one.
    pub(crate) running: AtomicBool,
    /// The driver task, aborted when the coordinator is dropped (it only
    /// holds a weak reference until the trigger, so this stops a driver
    /// that would otherwise wait for a trigger that can no longer come).
    pub(crate) driver: Mutex<Option<AbortHandle>>,
    /// The report, once the driver has published it; every `run` waits on
    /// it. Also poked (with the value unchanged) when a driver goes away
    /// before the trigger, so that a waiting `run` starts another.
    pub(crate) report: watch::Sender<Option<Report>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for l in lock(&self.listeners).drain(..) {
            l.abort();
        }
        if let Some(d) = lock(&self.driver).take() {
            d.abort();
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
    /// The closure is called when its phase starts, on the component's own
    /// task: a panic in it, before or after it returns its future, is
    /// reported as [`ComponentOutcome::Panicked`](crate::ComponentOutcome::Panicked)
    /// and does not stop the shutdown.
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
        // `f` is called inside the component's task, not where the phase
        // starts it: a panic while it builds its future (before its first
        // `.await`) is then contained like any other panic of the component.
        let f: DrainFn = Box::new(move |deadline| {
            Box::pin(async move {
                f(deadline).await;
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
    /// The shutdown runs on a task of its own, spawned on the current tokio
    /// runtime by the first call; every call, that first one included, waits
    /// for its report. So any number of clones may call `run` and all get the
    /// same report, and dropping a `run` future (a `select!` or a timeout
    /// around it) stops only that wait: the shutdown goes on, and a later
    /// `run` returns its report. A hard limit on the whole shutdown comes
    /// from the phase timeouts and `task_grace`.
    ///
    /// The shutdown's task holds the coordinator only once triggered: if
    /// every clone is dropped before the trigger, it ends. If the runtime it
    /// runs on shuts down before the trigger, the next `run` (on another
    /// runtime) starts it again; if that happens during the shutdown, or if
    /// the coordinator itself panics, the report is still published, with
    /// [`Report::interrupted`] saying what happened.
    ///
    /// # Panics
    ///
    /// If no shutdown is running yet and `run` is polled outside a tokio
    /// runtime (as `tokio::spawn` would).
    pub async fn run(&self) -> Report {
        let mut rx = self.inner.report.subscribe();
        loop {
            if let Some(report) = rx.borrow_and_update().clone() {
                return report;
            }
            if !self.inner.running.load(Ordering::SeqCst) {
                let handle = tokio::runtime::Handle::try_current().expect(
                    "Coordinator::run must be awaited inside a tokio runtime (e.g. in #[tokio::main])",
                );
                if !self.inner.running.swap(true, Ordering::SeqCst) {
                    crate::driver::start(&self.inner, &handle);
                    if !self.inner.running.load(Ordering::SeqCst) {
                        // The runtime dropped the new task at once: it is
                        // shutting down, and this call with it. Starting
                        // another would only loop; a `run` on another
                        // runtime (woken by that drop) takes over.
                        std::future::pending::<()>().await;
                    }
                }
            }
            if rx.changed().await.is_err() {
                // Unreachable while `self` holds the sender; wait forever
                // rather than invent a report.
                std::future::pending::<()>().await;
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

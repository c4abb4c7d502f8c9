//! Supervision trees in the style of Erlang/OTP.
//!
//! A [`Supervisor`] starts its children in order, watches every incarnation
//! end, and restarts children according to its [`Strategy`], each child's
//! [`Restart`] type, its [`Intensity`] limit and its [`Backoff`]. When the
//! intensity is exceeded it stops its children (in reverse order) and exits
//! with [`Exit::Escalated`]: a parent supervisor sees that as a failure of
//! its child and applies its own strategy. Supervisors nest with
//! [`SupervisorBuilder::add_supervisor`].
//!
//! A child's [`ActorRef`] stays valid across restarts: it points at the
//! mailbox, which outlives every incarnation, so messages sent during a
//! restart wait (within the mailbox bound) and reach the next incarnation. A
//! new incarnation is started only after the previous one has finished
//! stopping (its task has ended).
//!
//! ```
//! use std::time::Duration;
//! use weft_actor::{Actor, Context, Reply};
//! use weft_actor::supervisor::{Backoff, ChildSpec, Strategy, SupervisorBuilder};
//!
//! struct Flaky { handled: u32 }
//! enum Msg { Work(u32), Crash, Handled(Reply<u32>) }
//! impl Actor for Flaky {
//!     type Msg = Msg;
//!     async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
//!         match msg {
//!             Msg::Work(_) => self.handled += 1,
//!             Msg::Crash => panic!("bad message"),
//!             Msg::Handled(r) => { let _ = r.send(self.handled); }
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut b = SupervisorBuilder::new("app")
//!     .strategy(Strategy::OneForOne)
//!     .intensity(3, Duration::from_secs(5))
//!     .backoff(Backoff::new(Duration::from_millis(10), Duration::from_secs(1)));
//! let flaky = b.add(ChildSpec::new("flaky", || Flaky { handled: 0 })).unwrap();
//! let sup = b.start().unwrap();
//!
//! flaky.tell(Msg::Work(1)).await.unwrap();
//! flaky.tell(Msg::Crash).await.unwrap();
//! // Sent while the child restarts: waits in the mailbox for the new incarnation.
//! flaky.tell(Msg::Work(2)).await.unwrap();
//! assert_eq!(flaky.ask_with(Msg::Handled).await.unwrap(), 1, "fresh state after the restart");
//! assert_eq!(flaky.stats().restarts, 1);
//!
//! let report = sup.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
//! assert!(report.is_balanced());
//! # }
//! ```

mod child;
mod policy;

use std::collections::HashSet;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use weft_core::{Drain, Panicked, ShutdownReport};

pub use child::{ChildSpec, DEFAULT_STOP_TIMEOUT};
pub use policy::{Backoff, Intensity, Restart, Strategy};

use crate::actor::{Actor, Exit};
use crate::actor_ref::ActorRef;
use crate::error::BuildError;
use child::Child;

/// Configures a supervisor and its children, then starts it.
pub struct SupervisorBuilder {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    children: Vec<Box<dyn Child>>,
    ids: HashSet<String>,
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field("children", &self.ids.len())
            .finish()
    }
}

impl SupervisorBuilder {
    /// A one-for-one supervisor with the default intensity (3 restarts in
    /// 5 s) and backoff (10 ms doubling to 1 s, ±20 % jitter).
    pub fn new(name: impl Into<String>) -> Self {
        SupervisorBuilder {
            name: name.into(),
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
            ids: HashSet::new(),
        }
    }

    /// The restart strategy. Default [`Strategy::OneForOne`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `max_restarts` restarts within `period`, then escalate.
    /// Default 3 in 5 s.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity::new(max_restarts, period);
        self
    }

    /// The delay before a restart. Default [`Backoff::default`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn check_id(&mut self, id: &str) -> Result<(), BuildError> {
        if !self.ids.insert(id.to_owned()) {
            return Err(BuildError::DuplicateChild(id.to_owned()));
        }
        Ok(())
    }

    /// Adds an actor child (started after the children added before it) and
    /// returns its reference, valid across restarts.
    pub fn add<A: Actor>(&mut self, spec: ChildSpec<A>) -> Result<ActorRef<A>, BuildError> {
        let (myself, child) = spec.build()?;
        self.check_id(child.id())?;
        self.children.push(child);
        Ok(myself)
    }

    /// Adds a supervisor as a child: when it escalates, this supervisor
    /// treats it as a failed child. Returns its handle.
    pub fn add_supervisor(
        &mut self,
        sub: SupervisorBuilder,
        restart: Restart,
        stop_timeout: Duration,
    ) -> Result<Supervisor, BuildError> {
        let id = sub.name.clone();
        self.check_id(&id)?;
        let (handle, child) = sub.into_child(restart, stop_timeout)?;
        self.children.push(Box::new(child));
        Ok(handle)
    }

    fn into_child(
        self,
        restart: Restart,
        stop_timeout: Duration,
    ) -> Result<(Supervisor, SupChild), BuildError> {
        if self.intensity.period().is_zero() {
            return Err(BuildError::ZeroPeriod);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            tx,
            closing: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            escalations: AtomicU64::new(0),
            exit: OnceLock::new(),
            done: Notify::new(),
            report: Mutex::new(None),
            abort: Mutex::new(None),
        });
        let core = Core {
            children: self
                .children
                .into_iter()
                .map(|child| Slot {
                    child,
                    handle: None,
                    restart_at: None,
                    done: false,
                    recent: 0,
                    started_at: Instant::now(),
                })
                .collect(),
            rx,
            strategy: self.strategy,
            intensity: self.intensity,
            backoff: self.backoff,
            shared: shared.clone(),
        };
        for (i, slot) in core.children.iter().enumerate() {
            let tx = shared.tx.clone();
            slot.child.set_on_stop(Box::new(move || {
                let _ = tx.send(Cmd::ChildClosing(i));
            }));
        }
        let handle = Supervisor {
            shared: shared.clone(),
        };
        let child = SupChild {
            restart,
            stop_timeout,
            core: Arc::new(AsyncMutex::new(core)),
            shared,
        };
        Ok((handle, child))
    }

    /// Starts the supervisor and its children (in order) on the current
    /// tokio runtime.
    pub fn start(self) -> Result<Supervisor, BuildError> {
        let (handle, mut child) = self.into_child(Restart::Temporary, DEFAULT_STOP_TIMEOUT)?;
        tokio::spawn(async move {
            let task = child.start().await;
            let exit = match task.await {
                Ok(exit) => exit,
                Err(e) if e.is_cancelled() => Exit::Killed,
                Err(e) => Exit::Panicked(Panicked::from_payload(e.into_panic().as_ref())),
            };
            if exit.is_abnormal() {
                tracing::error!(supervisor = %child.shared.name, %exit, "top-level supervisor gave up");
            }
            child.finish(exit);
        });
        Ok(handle)
    }
}

/// A handle to a running supervisor: cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A snapshot of a supervisor's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorStats {
    /// Restarts decided (one per child failure that was restarted).
    pub restarts: u64,
    /// Times the intensity was exceeded and the supervisor gave up.
    pub escalations: u64,
    /// Whether it has terminated for good.
    pub terminated: bool,
}

impl Supervisor {
    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A snapshot of its counters.
    pub fn stats(&self) -> SupervisorStats {
        SupervisorStats {
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            escalations: self.shared.escalations.load(Ordering::Relaxed),
            terminated: self.shared.exit.get().is_some(),
        }
    }

    /// Waits until the supervisor has terminated for good, and returns why.
    pub async fn wait(&self) -> Exit {
        self.shared.terminated().await
    }

    /// Stops every child in reverse start order (each gracefully, within its
    /// stop timeout and `deadline`, then killed), hands undelivered messages
    /// to each child's hook, and returns the sum of the children's reports.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let start = Instant::now();
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = self.shared.tx.send(Cmd::Stop {
            final_: true,
            deadline: Some(deadline),
        });
        self.shared.terminated().await;
        let mut report = self
            .shared
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| ShutdownReport::new(self.shared.name.clone()));
        report.elapsed = start.elapsed();
        report
    }
}

impl Drain for Supervisor {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(self.shutdown(deadline))
    }
}

struct Shared {
    name: String,
    tx: mpsc::UnboundedSender<Cmd>,
    closing: AtomicBool,
    restarts: AtomicU64,
    escalations: AtomicU64,
    exit: OnceLock<Exit>,
    done: Notify,
    report: Mutex<Option<ShutdownReport>>,
    abort: Mutex<Option<AbortHandle>>,
}

impl Shared {
    async fn terminated(&self) -> Exit {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(exit) = self.exit.get() {
                return exit.clone();
            }
            notified.await;
        }
    }
}

enum Cmd {
    /// Stop every child; `final_` closes their mailboxes (a shutdown),
    /// otherwise they are stopped to be restarted with this supervisor.
    Stop {
        final_: bool,
        deadline: Option<Instant>,
    },
    /// A child's reference asked for its final stop.
    ChildClosing(usize),
}

struct Slot {
    child: Box<dyn Child>,
    handle: Option<JoinHandle<Exit>>,
    restart_at: Option<Instant>,
    /// Terminated for good (final stop, or not to be restarted).
    done: bool,
    recent: u32,
    started_at: Instant,
}

struct Core {
    children: Vec<Slot>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    shared: Arc<Shared>,
}

fn exit_of(res: Result<Exit, tokio::task::JoinError>) -> Exit {
    match res {
        Ok(exit) => exit,
        Err(e) if e.is_cancelled() => Exit::Killed,
        Err(e) => Exit::Panicked(Panicked::from_payload(e.into_panic().as_ref())),
    }
}

impl Core {
    /// One incarnation of the supervisor.
    async fn supervise(&mut self) -> Exit {
        self.intensity.reset();
        // Commands left from a previous incarnation.
        while let Ok(cmd) = self.rx.try_recv() {
            if matches!(cmd, Cmd::Stop { final_: true, .. }) {
                self.shared.closing.store(true, Ordering::SeqCst);
            }
        }
        if self.shared.closing.load(Ordering::SeqCst) {
            self.stop_children(true, None).await;
            return Exit::Stopped;
        }
        tracing::info!(supervisor = %self.shared.name, children = self.children.len(), "supervisor starting");
        for i in 0..self.children.len() {
            if !self.children[i].done {
                self.start_child(i).await;
            }
        }
        loop {
            let due = self.children.iter().filter_map(|s| s.restart_at).min();
            let children = &mut self.children;
            let next_exit = poll_fn(|cx| {
                for (i, slot) in children.iter_mut().enumerate() {
                    if let Some(h) = slot.handle.as_mut() {
                        if let Poll::Ready(res) = std::pin::Pin::new(h).poll(cx) {
                            slot.handle = None;
                            return Poll::Ready((i, exit_of(res)));
                        }
                    }
                }
                Poll::Pending
            });
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            enum Event {
                Cmd(Option<Cmd>),
                Exit(usize, Exit),
                Due,
            }
            let event = tokio::select! {
                biased;
                cmd = self.rx.recv() => Event::Cmd(cmd),
                (i, exit) = next_exit => Event::Exit(i, exit),
                _ = sleep => Event::Due,
            };
            match event {
                Event::Cmd(Some(Cmd::Stop { final_, deadline })) => {
                    if final_ {
                        self.shared.closing.store(true, Ordering::SeqCst);
                    }
                    self.stop_children(final_, deadline).await;
                    return if final_ { Exit::Stopped } else { Exit::Normal };
                }
                Event::Cmd(Some(Cmd::ChildClosing(i))) => {
                    let slot = &mut self.children[i];
                    if slot.handle.is_none() && !slot.done && slot.child.closing() {
                        slot.restart_at = None;
                        slot.done = true;
                        slot.child.finish(Exit::Stopped);
                    }
                }
                Event::Cmd(None) => return Exit::Stopped,
                Event::Exit(i, exit) => {
                    if let Some(exit) = self.on_exit(i, exit).await {
                        return exit;
                    }
                }
                Event::Due => self.restart_due().await,
            }
        }
    }

    async fn start_child(&mut self, i: usize) {
        let slot = &mut self.children[i];
        slot.restart_at = None;
        slot.started_at = Instant::now();
        slot.handle = Some(slot.child.start().await);
        tracing::debug!(supervisor = %self.shared.name, child = %self.children[i].child.id(), "child started");
    }

    async fn restart_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.children.len() {
            let slot = &self.children[i];
            if slot.restart_at.is_some_and(|at| at <= now) {
                if slot.child.closing() {
                    let slot = &mut self.children[i];
                    slot.restart_at = None;
                    slot.done = true;
                    slot.child.finish(Exit::Stopped);
                } else {
                    tracing::info!(supervisor = %self.shared.name, child = %slot.child.id(), "restarting child");
                    self.start_child(i).await;
                }
            }
        }
    }

    /// Handles the end of child `i`'s incarnation; `Some` when the
    /// supervisor itself must exit (escalation).
    async fn on_exit(&mut self, i: usize, exit: Exit) -> Option<Exit> {
        let name = self.shared.name.clone();
        let slot = &mut self.children[i];
        let id = slot.child.id().to_owned();
        if slot.child.closing() {
            slot.done = true;
            slot.child.finish(exit);
            return None;
        }
        if !slot.child.restart_type().restarts_after(&exit) {
            tracing::info!(supervisor = %name, child = %id, %exit, "child exited; not restarted");
            slot.done = true;
            slot.child.finish(exit);
            return None;
        }
        if exit.is_abnormal() {
            tracing::warn!(supervisor = %name, child = %id, %exit, "child failed");
        }
        let now = Instant::now();
        if !self.intensity.record(now) {
            self.shared.escalations.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                supervisor = %name, child = %id,
                max_restarts = self.intensity.max_restarts(),
                period = ?self.intensity.period(),
                "restart intensity exceeded; escalating"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!("weft_actor_escalations_total", "name" => name.clone()).increment(1);
            self.stop_children(false, None).await;
            return Some(Exit::Escalated(format!(
                "child {id:?} exceeded {} restarts in {:?} (last exit: {exit})",
                self.intensity.max_restarts(),
                self.intensity.period()
            )));
        }
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("weft_actor_restarts_total", "name" => name.clone()).increment(1);
        let slot = &mut self.children[i];
        if now.saturating_duration_since(slot.started_at) >= self.intensity.period() {
            slot.recent = 0;
        }
        // A delay too long for the clock (a backoff capped at
        // `Duration::MAX`) means "not in this process's lifetime".
        let delay = self.backoff.delay(slot.recent);
        let at = now
            .checked_add(delay)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        slot.recent = slot.recent.saturating_add(1);
        slot.restart_at = Some(at);
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::OneForAll => (0..self.children.len()).filter(|&j| j != i).collect(),
            Strategy::RestForOne => (i + 1..self.children.len()).collect(),
        };
        // Stop the others in reverse start order, then schedule them with
        // the failed child.
        for &j in group.iter().rev() {
            if self.children[j].done {
                continue;
            }
            let exit = self.stop_child(j, false, None).await;
            let slot = &mut self.children[j];
            if slot.child.closing() || slot.child.restart_type() == Restart::Temporary {
                slot.done = true;
                slot.child.finish(exit);
            } else {
                slot.restart_at = Some(at);
            }
        }
        None
    }

    /// Stops child `j`'s running incarnation (if any) within its stop
    /// timeout (and `deadline`), killing it after that; returns its exit.
    async fn stop_child(&mut self, j: usize, final_: bool, deadline: Option<Instant>) -> Exit {
        let slot = &mut self.children[j];
        slot.restart_at = None;
        let Some(mut handle) = slot.handle.take() else {
            return Exit::Stopped;
        };
        if final_ {
            slot.child.stop_final();
        } else {
            slot.child.stop_for_restart();
        }
        let mut until = Instant::now() + slot.child.stop_timeout();
        if let Some(d) = deadline {
            until = until.min(d);
        }
        match tokio::time::timeout_at(until, &mut handle).await {
            Ok(res) => exit_of(res),
            Err(_) => {
                tracing::warn!(child = %slot.child.id(), "child did not stop within its stop timeout; killing it");
                slot.child.kill();
                handle.abort();
                exit_of(handle.await)
            }
        }
    }

    /// Stops every child in reverse start order. A final stop also finishes
    /// them (undelivered messages to their hooks) and records the report.
    async fn stop_children(&mut self, final_: bool, deadline: Option<Instant>) {
        for j in (0..self.children.len()).rev() {
            if self.children[j].done {
                continue;
            }
            let exit = self.stop_child(j, final_, deadline).await;
            if final_ {
                let slot = &mut self.children[j];
                slot.done = true;
                slot.child.finish(exit);
            }
        }
        if final_ {
            self.record_report();
        }
    }

    fn finish_all(&mut self, exit: &Exit) {
        for slot in &mut self.children {
            if let Some(h) = slot.handle.take() {
                h.abort();
            }
            if !slot.done {
                slot.done = true;
                slot.child.finish(exit.clone());
            }
        }
        self.record_report();
    }

    fn record_report(&self) {
        let mut total = ShutdownReport::new(self.shared.name.clone());
        for slot in &self.children {
            let r = slot.child.report();
            total.accepted += r.accepted;
            total.completed += r.completed;
            total.failed += r.failed;
            total.cancelled += r.cancelled;
            total.aborted += r.aborted;
            total.returned += r.returned;
            total.rejected_after_close += r.rejected_after_close;
            total.unfinished.extend(r.unfinished);
        }
        *self.shared.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(total);
    }
}

/// A supervisor as a child of another supervisor (or run by `start`).
struct SupChild {
    restart: Restart,
    stop_timeout: Duration,
    core: Arc<AsyncMutex<Core>>,
    shared: Arc<Shared>,
}

/// Kills the children if a supervisor's task is aborted mid-way.
struct KillChildrenOnDrop {
    core: tokio::sync::OwnedMutexGuard<Core>,
    finished: bool,
}

impl Drop for KillChildrenOnDrop {
    fn drop(&mut self) {
        if !self.finished {
            for slot in &mut self.core.children {
                if let Some(h) = slot.handle.take() {
                    slot.child.kill();
                    h.abort();
                }
            }
        }
    }
}

impl Child for SupChild {
    fn id(&self) -> &str {
        &self.shared.name
    }

    fn restart_type(&self) -> Restart {
        self.restart
    }

    fn stop_timeout(&self) -> Duration {
        self.stop_timeout
    }

    // The future resolves to the handle of the spawned incarnation.
    #[allow(clippy::async_yields_async)]
    fn start(&mut self) -> BoxFuture<'_, JoinHandle<Exit>> {
        Box::pin(async move {
            // The lock is held by the previous incarnation until its task
            // has ended: a new one never overlaps it.
            let core = self.core.clone().lock_owned().await;
            let task = tokio::spawn(async move {
                let mut guard = KillChildrenOnDrop {
                    core,
                    finished: false,
                };
                let exit = guard.core.supervise().await;
                guard.finished = true;
                exit
            });
            *self.shared.abort.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(task.abort_handle());
            task
        })
    }

    fn stop_for_restart(&self) {
        let _ = self.shared.tx.send(Cmd::Stop {
            final_: false,
            deadline: None,
        });
    }

    fn stop_final(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = self.shared.tx.send(Cmd::Stop {
            final_: true,
            deadline: None,
        });
    }

    fn kill(&self) {
        if let Some(h) = self
            .shared
            .abort
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            h.abort();
        }
    }

    fn closing(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst)
    }

    fn finish(&self, exit: Exit) {
        if let Ok(mut core) = self.core.try_lock() {
            core.finish_all(&exit);
        }
        tracing::info!(supervisor = %self.shared.name, %exit, "supervisor terminated");
        let _ = self.shared.exit.set(exit);
        self.shared.done.notify_waiters();
    }

    fn report(&self) -> ShutdownReport {
        self.shared
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| ShutdownReport::new(self.shared.name.clone()))
    }

    fn set_on_stop(&self, _f: Box<dyn Fn() + Send + Sync>) {
        // A supervisor child is stopped through its `Supervisor` handle,
        // which sends its own command; nothing to wire.
    }
}

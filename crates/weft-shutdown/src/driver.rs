//! The task that runs a shutdown, spawned by the first `Coordinator::run`.
//!
//! Every `run` (the first included) only waits for the report this task
//! publishes, so a dropped `run` future does not stop the shutdown. The task
//! publishes a report however it ends: normally; after a panic of its own
//! (caught, the tracked tasks still finished); or when its runtime drops it
//! mid-shutdown (from `Drop`, with what it knows). Until the trigger it holds
//! the coordinator weakly, and if its runtime drops it then, it hands the
//! job back to the next `run`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use weft_core::{Panicked, ShutdownReport};

use crate::coordinator::{CUTOFF_MARGIN, Component, Inner, Phase, Registered, lock};
use crate::report::{ComponentOutcome, ComponentReport, PhaseReport, Report, TaskReport, Trigger};

/// Where a deadline goes when the timeout is too large to add to the clock
/// (`Duration::MAX`): about 30 years away, as `tokio::time::sleep` does.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + d`, or about 30 years after `start` when that overflows.
pub(crate) fn deadline_after(start: Instant, d: Duration) -> Instant {
    start.checked_add(d).unwrap_or_else(|| start + FAR_FUTURE)
}

/// A phase's report before it has run: every component `Skipped`, until
/// the phase's run says otherwise.
fn not_started(phase: &Phase, components: &[Registered]) -> PhaseReport {
    PhaseReport {
        name: phase.name.clone(),
        timeout: phase.timeout,
        elapsed: Duration::ZERO,
        components: components
            .iter()
            .map(|c| ComponentReport {
                name: c.name.clone(),
                outcome: ComponentOutcome::Skipped,
                elapsed: Duration::ZERO,
                detail: None,
            })
            .collect(),
    }
}

/// Spawns the driver on `handle` and records it in `inner`, to be aborted if
/// the coordinator is dropped before the trigger. The caller has set
/// `inner.running`.
pub(crate) fn start(inner: &Arc<Inner>, handle: &Handle) {
    let waiting = Waiting(Some(Arc::downgrade(inner)));
    let requested = inner.trigger.requested.clone();
    let task = handle.spawn(async move {
        let mut waiting = waiting;
        requested.cancelled().await;
        let Some(inner) = waiting.0.take().and_then(|w| w.upgrade()) else {
            return; // every clone is gone: nobody to report to
        };
        let mut driver = Driver::new(inner);
        let phases = weft_core::catch_unwind(driver.run_phases()).await;
        let mut interrupted = phases.err().map(|p| {
            tracing::error!(panic = %p.message(), "shutdown coordinator panicked; finishing the tracked tasks and reporting");
            format!("the coordinator panicked: {}", p.message())
        });
        let inner = driver.inner.clone();
        let finish = inner.tasks.finish(inner.task_grace, &inner.trigger.forced);
        let tasks = match weft_core::catch_unwind(finish).await {
            Ok(tasks) => tasks,
            Err(p) => {
                tracing::error!(panic = %p.message(), "shutdown coordinator panicked while finishing the tracked tasks");
                interrupted.get_or_insert_with(|| format!("the coordinator panicked: {}", p.message()));
                inner.tasks.abandon()
            }
        };
        driver.publish(tasks, interrupted);
    });
    *lock(&inner.driver) = Some(task.abort_handle());
}

/// Held by the driver until the trigger: if the driver is dropped before
/// then (its runtime shut down), lets the next `run` start another, and wakes
/// the ones already waiting so that one of them does.
struct Waiting(Option<Weak<Inner>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take().and_then(|w| w.upgrade()) {
            tracing::debug!(
                "shutdown driver dropped before the trigger; the next run() starts another"
            );
            inner.running.store(false, Ordering::SeqCst);
            inner.report.send_modify(|_| {});
        }
    }
}

/// A shutdown under way: the phases so far, and the one running.
struct Driver {
    inner: Arc<Inner>,
    reason: Trigger,
    started: Instant,
    /// The phases that have run (or been skipped), in order.
    phases: Vec<PhaseReport>,
    /// The phase running now and when it started; its components' outcomes
    /// are kept up to date (`Aborted` while running), so an interrupted
    /// phase is reported as far as it got.
    current: Option<(PhaseReport, Instant)>,
    published: bool,
}

impl Driver {
    fn new(inner: Arc<Inner>) -> Self {
        let reason = lock(&inner.trigger.reason)
            .clone()
            .unwrap_or(Trigger::Programmatic);
        Driver {
            inner,
            reason,
            started: Instant::now(),
            phases: Vec::new(),
            current: None,
            published: false,
        }
    }

    async fn run_phases(&mut self) {
        let inner = self.inner.clone();
        for phase in &inner.phases {
            let components = lock(&phase.components).take().unwrap_or_default();
            let report = not_started(phase, &components);
            let start = Instant::now();
            let (report, _) = self.current.insert((report, start));
            run_phase(&inner, phase, components, report, start).await;
            if let Some((report, _)) = self.current.take() {
                self.phases.push(report);
            }
        }
    }

    /// Builds the report, publishes it to every `run`, and stops the signal
    /// listeners. With `interrupted`, the phase that was running and the ones
    /// that never started are reported as far as they got.
    fn publish(&mut self, tasks: TaskReport, interrupted: Option<String>) {
        self.published = true;
        let mut phases = std::mem::take(&mut self.phases);
        if let Some((mut current, start)) = self.current.take() {
            current.elapsed = start.elapsed();
            phases.push(current);
        }
        // Phases that never started (only after an interruption). Their
        // components are dropped once the report is out: a panicking `Drop`
        // must not keep it from the waiters.
        let mut never_started = Vec::new();
        for phase in &self.inner.phases[phases.len()..] {
            let components = lock(&phase.components).take().unwrap_or_default();
            phases.push(not_started(phase, &components));
            never_started.push(components);
        }
        for l in lock(&self.inner.listeners).drain(..) {
            l.abort();
        }
        let report = Report {
            trigger: self.reason.clone(),
            forced: self.inner.trigger.forced.is_cancelled(),
            phases,
            tasks,
            elapsed: self.started.elapsed(),
            interrupted,
        };
        if let Some(why) = &report.interrupted {
            tracing::error!(interrupted = %why, unfinished = ?report.unfinished(), "shutdown interrupted");
        } else if report.is_clean() {
            tracing::info!(elapsed = ?report.elapsed, "shutdown complete");
        } else {
            tracing::warn!(unfinished = ?report.unfinished(), "shutdown complete, not clean");
        }
        self.inner.report.send_replace(Some(report));
        never_started.into_iter().for_each(drop_unrun);
    }
}

/// Drops components that never ran (a phase skipped or never started), each
/// inside a panic boundary: a registered closure (or what it captured) or a
/// `Drain` component whose `Drop` panics must not unwind the driver, where
/// it would be reported as the coordinator's own panic, and a second one
/// would abort the process (a panic while the first unwinds the `Vec`).
fn drop_unrun(components: Vec<Registered>) {
    for c in components {
        let Registered { name, component } = c;
        if let Err(p) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(component)))
        {
            let p = Panicked::from_payload(p.as_ref());
            tracing::error!(component = %name, panic = %p.message(), "a component that never ran panicked when dropped");
        }
    }
}

impl Drop for Driver {
    /// Dropped before publishing: its runtime is shutting down (nothing else
    /// drops the task once triggered). Reports what it knows to any `run` on
    /// another runtime; the runtime drops the components and tasks.
    fn drop(&mut self) {
        if !self.published {
            let tasks = self.inner.tasks.abandon();
            self.publish(
                tasks,
                Some(
                    "the tokio runtime running the shutdown shut down before it finished"
                        .to_owned(),
                ),
            );
        }
    }
}

/// Runs one phase's components concurrently until they finish, the phase's
/// deadline (plus [`CUTOFF_MARGIN`]) passes, or the shutdown is forced,
/// recording each outcome in `report` as it happens.
async fn run_phase(
    inner: &Inner,
    phase: &Phase,
    components: Vec<Registered>,
    report: &mut PhaseReport,
    start: Instant,
) {
    let forced = &inner.trigger.forced;
    if forced.is_cancelled() {
        tracing::warn!(phase = %phase.name, "phase skipped: shutdown forced");
        drop_unrun(components);
        return;
    }
    tracing::info!(phase = %phase.name, components = components.len(), "shutdown phase starting");
    let deadline = deadline_after(start, phase.timeout);
    let mut set = JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    for (i, c) in components.into_iter().enumerate() {
        // Only building futures here: user code (the closure, `drain`) runs
        // on the component's task, where its panics are contained.
        let fut: BoxFuture<'static, Option<ShutdownReport>> = match c.component {
            Component::Drain(d) => Box::pin(async move { Some(d.drain(deadline).await) }),
            Component::Fn(f) => f(deadline),
        };
        let handle = set.spawn(fut);
        ids.insert(handle.id(), i);
        // What it is if the phase is interrupted before it ends.
        report.components[i].outcome = ComponentOutcome::Aborted;
    }
    let mut cut_off: Option<ComponentOutcome> = None;
    let cutoff = sleep_until(deadline.checked_add(CUTOFF_MARGIN).unwrap_or(deadline));
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
                let r = &mut report.components[ids[&id]];
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
    report.elapsed = start.elapsed();
    #[cfg(feature = "metrics")]
    {
        metrics::histogram!("weft_shutdown_phase_duration_seconds", "phase" => phase.name.clone())
            .record(report.elapsed.as_secs_f64());
        for r in &report.components {
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
}

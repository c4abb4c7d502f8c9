use std::fmt;
use std::time::Duration;

use weft_core::ShutdownReport;

/// What started the shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// A signal (`SIGINT`, `SIGTERM`).
    Signal(&'static str),
    /// [`Coordinator::trigger`](crate::Coordinator::trigger).
    Programmatic,
    /// The external `CancellationToken` given to
    /// [`Builder::trigger_on`](crate::Builder::trigger_on).
    External,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Signal(s) => f.write_str(s),
            Trigger::Programmatic => f.write_str("programmatic trigger"),
            Trigger::External => f.write_str("external cancellation token"),
        }
    }
}

/// How one component's drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ComponentOutcome {
    /// It finished within the phase's deadline.
    Completed,
    /// It was still running at the phase's deadline and was cut off.
    TimedOut,
    /// Its drain panicked (while building its future or while running);
    /// the other components were not affected.
    Panicked(String),
    /// It was aborted while running because a second trigger forced the
    /// shutdown, or because the shutdown was interrupted (see
    /// [`Report::interrupted`]).
    Aborted,
    /// It never ran: its phase was skipped because the shutdown was forced
    /// before it, or because the shutdown was interrupted before it.
    Skipped,
}

impl ComponentOutcome {
    /// Whether the component finished normally.
    pub fn is_completed(&self) -> bool {
        matches!(self, ComponentOutcome::Completed)
    }
}

/// One component of one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentReport {
    /// The name it was registered under.
    pub name: String,
    /// How its drain ended.
    pub outcome: ComponentOutcome,
    /// How long its drain ran.
    pub elapsed: Duration,
    /// The component's own report, for [`Drain`](weft_core::Drain)
    /// components that completed.
    pub detail: Option<ShutdownReport>,
}

impl ComponentReport {
    /// Whether the component finished cleanly (completed, and its own report,
    /// if any, is clean).
    pub fn is_clean(&self) -> bool {
        self.outcome.is_completed() && self.detail.as_ref().is_none_or(|d| d.is_clean())
    }
}

/// One phase.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhaseReport {
    /// The phase's name.
    pub name: String,
    /// Its timeout.
    pub timeout: Duration,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its components, in registration order.
    pub components: Vec<ComponentReport>,
}

/// The tracked tasks spawned through the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskReport {
    /// Tasks spawned over the coordinator's life.
    pub spawned: u64,
    /// Tasks that had finished before they were asked to stop.
    pub completed: u64,
    /// Tasks that stopped after their cancellation token fired.
    pub cancelled: u64,
    /// Tasks that panicked (contained, logged).
    pub panicked: u64,
    /// Names of the tasks that were still running after the grace period
    /// and were aborted.
    pub aborted: Vec<String>,
}

/// Everything that happened during one shutdown.
///
/// `Display` prints it for a person; the fields are there for a program.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// What started it.
    pub trigger: Trigger,
    /// Whether a second trigger forced it (remaining phases skipped, running
    /// components aborted).
    pub forced: bool,
    /// The phases, in order.
    pub phases: Vec<PhaseReport>,
    /// The tracked tasks.
    pub tasks: TaskReport,
    /// How long the whole shutdown took.
    pub elapsed: Duration,
    /// Why the shutdown did not run to its end, if it did not: the
    /// coordinator itself panicked (outside any component or task, whose
    /// panics are reported above), or the tokio runtime running it shut down
    /// first. The phases are then reported as far as they got (components
    /// running at that moment `Aborted`, later ones `Skipped`), and tracked
    /// tasks are still cancelled and aborted. `None` for a shutdown that ran
    /// to its end, clean or not.
    pub interrupted: Option<String>,
}

impl Report {
    /// Whether everything finished in time: not forced, not interrupted,
    /// every component completed cleanly, no task aborted.
    pub fn is_clean(&self) -> bool {
        !self.forced
            && self.interrupted.is_none()
            && self.tasks.aborted.is_empty()
            && self
                .phases
                .iter()
                .all(|p| p.components.iter().all(ComponentReport::is_clean))
    }

    /// The names of everything that did not finish: components that timed
    /// out, panicked, were aborted or skipped; for components that did
    /// complete, what their own report lists as unfinished (as
    /// `"component: item"`, e.g. requests a `ShutdownLayer` still had in
    /// flight at its deadline); and aborted tasks (as `"task name"`).
    pub fn unfinished(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.phases.iter().flat_map(|p| p.components.iter()) {
            if !c.outcome.is_completed() {
                out.push(c.name.clone());
            } else if let Some(d) = &c.detail {
                out.extend(d.unfinished.iter().map(|u| format!("{}: {u}", c.name)));
            }
        }
        out.extend(self.tasks.aborted.iter().map(|t| format!("task {t}")));
        out
    }

    /// A component's report by name.
    pub fn component(&self, name: &str) -> Option<&ComponentReport> {
        self.phases
            .iter()
            .flat_map(|p| p.components.iter())
            .find(|c| c.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shutdown ({}) took {:.3}s{}{}",
            self.trigger,
            self.elapsed.as_secs_f64(),
            if self.forced { ", FORCED" } else { "" },
            if self.is_clean() { ", clean" } else { "" }
        )?;
        match &self.interrupted {
            Some(why) => writeln!(f, ", INTERRUPTED: {why}")?,
            None => writeln!(f)?,
        }
        // What cut components off or skipped phases.
        let why = if self.forced { "forced" } else { "interrupted" };
        for p in &self.phases {
            writeln!(
                f,
                "  phase {} ({:.3}s of {:.3}s)",
                p.name,
                p.elapsed.as_secs_f64(),
                p.timeout.as_secs_f64()
            )?;
            for c in &p.components {
                let outcome = match &c.outcome {
                    ComponentOutcome::Completed => "completed".to_owned(),
                    ComponentOutcome::TimedOut => "TIMED OUT".to_owned(),
                    ComponentOutcome::Panicked(m) => format!("PANICKED ({m})"),
                    ComponentOutcome::Aborted => format!("ABORTED ({why})"),
                    ComponentOutcome::Skipped => format!("skipped ({why})"),
                };
                write!(
                    f,
                    "    {}: {} in {:.3}s",
                    c.name,
                    outcome,
                    c.elapsed.as_secs_f64()
                )?;
                match &c.detail {
                    Some(d) => writeln!(f, " | {d}")?,
                    None => writeln!(f)?,
                }
            }
        }
        write!(
            f,
            "  tasks: {} spawned, {} completed, {} cancelled, {} panicked, {} aborted",
            self.tasks.spawned,
            self.tasks.completed,
            self.tasks.cancelled,
            self.tasks.panicked,
            self.tasks.aborted.len()
        )?;
        if !self.tasks.aborted.is_empty() {
            write!(f, " ({})", self.tasks.aborted.join(", "))?;
        }
        Ok(())
    }
}

//! The per-stage counters and the report a run returns.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use weft_core::Counter;

/// What kind of stage a [`StageReport`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageKind {
    /// The source.
    Source,
    /// A processing stage (`map`, `then`, `service`, ...).
    Stage,
    /// A batching stage.
    Batch,
    /// The sink.
    Sink,
}

/// How many outputs a processing stage makes per input item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Exactly one (`map`, `try_map`, `inspect`, `then`, `service`, ...):
    /// every item it completed must be emitted or cancelled downstream.
    OneToOne,
    /// At most one (`filter`, `filter_map`): the difference is `filtered`.
    Filter,
    /// Any number (`flat_map`), or not items at all (a batch stage, the
    /// source and the sink, which have their own kinds).
    Other,
}

/// Live counters of one stage, shared by its workers.
#[derive(Debug)]
pub(crate) struct StageStats {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    pub(crate) shape: Shape,
    pub(crate) workers: usize,
    pub(crate) received: Counter,
    pub(crate) completed: Counter,
    pub(crate) emitted: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) panicked: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) dropped: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) busy_ns: Counter,
    pub(crate) idle_ns: Counter,
    pub(crate) blocked_ns: Counter,
}

impl StageStats {
    pub(crate) fn new(name: impl Into<String>, kind: StageKind, workers: usize) -> Self {
        StageStats {
            name: name.into(),
            kind,
            shape: Shape::Other,
            workers,
            received: Counter::new(),
            completed: Counter::new(),
            emitted: Counter::new(),
            failed: Counter::new(),
            retried: Counter::new(),
            panicked: Counter::new(),
            dead_lettered: Counter::new(),
            dropped: Counter::new(),
            cancelled: Counter::new(),
            busy_ns: Counter::new(),
            idle_ns: Counter::new(),
            blocked_ns: Counter::new(),
        }
    }

    pub(crate) fn snapshot(&self) -> StageReport {
        let emitted = self.emitted.get();
        StageReport {
            name: self.name.clone(),
            kind: self.kind,
            workers: self.workers,
            // A source receives what it produces.
            received: if self.kind == StageKind::Source {
                emitted
            } else {
                self.received.get()
            },
            completed: self.completed.get(),
            emitted,
            failed: self.failed.get(),
            retried: self.retried.get(),
            panicked: self.panicked.get(),
            dead_lettered: self.dead_lettered.get(),
            dropped: self.dropped.get(),
            cancelled: self.cancelled.get(),
            busy: Duration::from_nanos(self.busy_ns.get()),
            idle: Duration::from_nanos(self.idle_ns.get()),
            blocked: Duration::from_nanos(self.blocked_ns.get()),
        }
    }
}

/// What one stage did, summed over its workers.
///
/// For a processing stage of a run that completed,
/// `received = completed + failed + dead_lettered`. Items shed by the
/// stage's input queue are counted in `dropped` and were never received;
/// items discarded when a run is cancelled (queued in front of the stage, or
/// held by it) are counted in `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// What kind of stage it is.
    pub kind: StageKind,
    /// Its number of workers.
    pub workers: usize,
    /// Items taken from the stage's input.
    pub received: u64,
    /// Items processed without error (a filter that said no still completed).
    pub completed: u64,
    /// Items (or batches) sent downstream.
    pub emitted: u64,
    /// Items that failed (skip or fail-fast policy), panics included.
    pub failed: u64,
    /// Retries made (not items).
    pub retried: u64,
    /// Items whose function panicked (also counted as failed or dead-lettered).
    pub panicked: u64,
    /// Items handed to the dead-letter sink after failing.
    pub dead_lettered: u64,
    /// Items shed by the stage's input queue under a non-`Block` overflow policy.
    pub dropped: u64,
    /// Items discarded unprocessed because the pipeline was cancelled.
    pub cancelled: u64,
    /// Time the workers spent processing, summed over workers.
    pub busy: Duration,
    /// Time the workers spent waiting for input, summed over workers.
    pub idle: Duration,
    /// Time the workers spent waiting for room downstream (backpressure).
    pub blocked: Duration,
}

impl StageReport {
    /// The share of the workers' time spent processing, from 0 to 1. The
    /// stage with the highest utilisation is the pipeline's bottleneck.
    pub fn utilisation(&self) -> f64 {
        let total = (self.busy + self.idle + self.blocked).as_secs_f64();
        if total == 0.0 {
            0.0
        } else {
            self.busy.as_secs_f64() / total
        }
    }
}

/// What a pipeline run did: items in and out, failures, and per-stage counts
/// and times (so the bottleneck is visible).
///
/// For pipelines of one-to-one stages (`map`, `then`, `try_map`, `service`,
/// `inspect`) and filters (`filter`, `filter_map`):
/// `items_in = items_out + filtered + failed + dead_lettered + dropped + cancelled`.
/// `flat_map` and `batch` change the number of items, so their downstream
/// stages count in their own units.
///
/// Only filters (and `flat_map`) count items as `filtered`: an item a
/// one-to-one stage completed but never handed on (which would be a bug)
/// is in no count, and `is_balanced` says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The pipeline's name.
    pub name: String,
    /// Items the source produced.
    pub items_in: u64,
    /// Items the sink consumed.
    pub items_out: u64,
    /// Items filtered out: items a `filter`, `filter_map` or `flat_map`
    /// stage completed and emitted nothing for.
    pub filtered: u64,
    /// Items that failed, over all stages.
    pub failed: u64,
    /// Items sent to dead-letter sinks, over all stages.
    pub dead_lettered: u64,
    /// Items shed by overflow policies, over all stages.
    pub dropped: u64,
    /// Items discarded because the pipeline was cancelled.
    pub cancelled: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per stage, source first and sink last.
    pub stages: Vec<StageReport>,
}

impl Report {
    /// The report of the stages' counters as they are now.
    pub(crate) fn from_stages(name: &str, stats: &[Arc<StageStats>], elapsed: Duration) -> Self {
        let mut r = Report {
            name: name.to_owned(),
            elapsed,
            ..Default::default()
        };
        let mut stages = Vec::with_capacity(stats.len());
        for st in stats {
            let s = st.snapshot();
            match s.kind {
                StageKind::Source => r.items_in += s.emitted,
                StageKind::Sink => r.items_out += s.completed,
                StageKind::Stage if st.shape != Shape::OneToOne => {
                    r.filtered += s.completed.saturating_sub(s.emitted);
                }
                StageKind::Stage | StageKind::Batch => {}
            }
            r.failed += s.failed;
            r.dead_lettered += s.dead_lettered;
            r.dropped += s.dropped;
            r.cancelled += s.cancelled;
            stages.push(s);
        }
        r.stages = stages;
        r
    }

    /// Whether every item is accounted for (exact for pipelines of
    /// one-to-one stages and filters; see the type's docs).
    pub fn is_balanced(&self) -> bool {
        self.items_in
            == self.items_out
                + self.filtered
                + self.failed
                + self.dead_lettered
                + self.dropped
                + self.cancelled
    }

    /// The stage with the highest utilisation (busy share of its time):
    /// the one to give more workers, or to make cheaper.
    pub fn bottleneck(&self) -> Option<&StageReport> {
        self.stages
            .iter()
            .filter(|s| s.kind != StageKind::Source)
            .max_by(|a, b| a.utilisation().total_cmp(&b.utilisation()))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {:?}: in {}, out {}, filtered {}, failed {}, dead-lettered {}, dropped {}, cancelled {} ({:.3}s)",
            self.name,
            self.items_in,
            self.items_out,
            self.filtered,
            self.failed,
            self.dead_lettered,
            self.dropped,
            self.cancelled,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  {:<16} {:>3} {:>9} {:>9} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>5}",
            "stage",
            "wrk",
            "received",
            "emitted",
            "failed",
            "dead",
            "drop",
            "busy ms",
            "idle ms",
            "block ms",
            "util"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "  {:<16} {:>3} {:>9} {:>9} {:>6} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>4.0}%",
                s.name,
                s.workers,
                s.received,
                s.emitted,
                s.failed,
                s.dead_lettered,
                s.dropped,
                s.busy.as_secs_f64() * 1e3,
                s.idle.as_secs_f64() * 1e3,
                s.blocked.as_secs_f64() * 1e3,
                s.utilisation() * 100.0
            )?;
        }
        Ok(())
    }
}

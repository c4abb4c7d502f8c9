//! Running a pipeline: the driver task, the handle, and `Drain`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weft_core::{Drain, Panicked, ShutdownReport};

use crate::channel::{Shared, Wiring};
use crate::error::{BuildError, PipelineError};
use crate::report::{Report, Shape, StageKind, StageStats};

pub(crate) type Slot<R> = Arc<Mutex<Option<R>>>;

/// Counts what is left in a queue once every task is gone.
pub(crate) type Leftover = Box<dyn FnOnce() + Send>;

type Outcome<R> = Result<(R, Report), PipelineError>;

/// A pipeline with its sink attached, ready to [`run`](Runnable::run) or
/// [`spawn`](Runnable::spawn).
pub struct Runnable<R> {
    name: String,
    build: Box<dyn FnOnce(&mut Wiring) + Send>,
    slot: Slot<R>,
}

impl<R> fmt::Debug for Runnable<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runnable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static> Runnable<R> {
    pub(crate) fn new(
        name: String,
        build: Box<dyn FnOnce(&mut Wiring) + Send>,
        slot: Slot<R>,
    ) -> Self {
        Runnable { name, build, slot }
    }

    /// Runs the pipeline to completion and returns the sink's output (the
    /// collected items for [`collect`](crate::Pipeline::collect)) and the
    /// report.
    ///
    /// Dropping the returned future before it completes cancels the
    /// pipeline (every stage stops at its next await).
    pub async fn run(self) -> Result<(R, Report), PipelineError> {
        let running = self.spawn()?;
        let guard = CancelOnDrop(Some(running.inner.shared.clone()));
        let r = running.join().await;
        guard.disarm();
        r
    }

    /// Starts the pipeline's tasks on the current tokio runtime and returns
    /// a handle to join it, watch it, or shut it down.
    ///
    /// Fails, starting nothing, if a stage's configuration is invalid.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (like `tokio::spawn`).
    pub fn spawn(self) -> Result<Running<R>, BuildError> {
        let shared = Arc::new(Shared::new(self.name));
        let mut w = Wiring::new(shared.clone());
        (self.build)(&mut w);
        if let Some(e) = w.errors.into_iter().next() {
            return Err(e);
        }
        let mut stages = w.stages;
        stages.reverse();
        let (done_tx, done_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            stages: stages.clone(),
            started: Instant::now(),
            outcome: Mutex::new(None),
            report: Mutex::new(None),
            leftovers: Mutex::new(w.leftovers),
            lost: AtomicBool::new(false),
            done: done_rx,
        });
        tracing::info!(pipeline = %shared.name, stages = stages.len(), "pipeline started");
        let tasks = w.tasks;
        let slot = self.slot;
        let driver_inner = inner.clone();
        tokio::spawn(async move {
            let inner = driver_inner;
            let mut set = JoinSet::new();
            // Which stage each task belongs to, so that a panic that escapes
            // a stage's own unwind boundaries still names the stage.
            let mut stage_of = HashMap::with_capacity(tasks.len());
            for t in tasks {
                let id = set.spawn(t.fut).id();
                stage_of.insert(id, t.stage);
            }
            #[cfg(feature = "metrics")]
            let mut emitted = crate::metrics::Emitted::default();
            #[cfg(feature = "metrics")]
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                #[cfg(feature = "metrics")]
                let next = tokio::select! {
                    r = set.join_next_with_id() => r,
                    _ = tick.tick() => {
                        emitted.emit(&inner.shared.name, &inner.stages);
                        continue;
                    }
                };
                #[cfg(not(feature = "metrics"))]
                let next = set.join_next_with_id().await;
                let Some(r) = next else { break };
                if let Err(e) = r {
                    if e.is_panic() {
                        let stage = stage_of.get(&e.id()).map_or("pipeline", String::as_str);
                        let p = Panicked::from_payload(e.into_panic().as_ref());
                        tracing::error!(pipeline = %inner.shared.name, stage, error = %p, "stage task panicked");
                        inner.shared.fail(stage, p.into());
                    }
                }
            }
            inner.count_leftovers();
            #[cfg(feature = "metrics")]
            emitted.emit(&inner.shared.name, &inner.stages);
            let report = inner.snapshot();
            let shared = &inner.shared;
            let fault = shared
                .fault
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let outcome = if let Some((stage, error)) = fault {
                Err(PipelineError::Failed {
                    stage,
                    error,
                    report: Box::new(report.clone()),
                })
            } else if shared.sink_closed.load(Ordering::SeqCst) {
                Err(PipelineError::SinkClosed {
                    report: Box::new(report.clone()),
                })
            } else if shared.kill.is_cancelled() {
                Err(PipelineError::Cancelled {
                    report: Box::new(report.clone()),
                })
            } else {
                match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(r) => Ok((r, report.clone())),
                    None => Err(PipelineError::Cancelled {
                        report: Box::new(report.clone()),
                    }),
                }
            };
            tracing::info!(
                pipeline = %shared.name,
                ok = outcome.is_ok(),
                items_in = report.items_in,
                items_out = report.items_out,
                failed = report.failed,
                dead_lettered = report.dead_lettered,
                dropped = report.dropped,
                cancelled = report.cancelled,
                "pipeline finished"
            );
            tracing::debug!(pipeline = %shared.name, "pipeline report\n{report}");
            *inner.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
            *inner.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
            let _ = done_tx.send(true);
        });
        Ok(Running { inner })
    }
}

/// Cancels a run whose `run()` future was dropped.
struct CancelOnDrop(Option<Arc<Shared>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            tracing::debug!(pipeline = %shared.name, "run() dropped; cancelling the pipeline");
            shared.kill.cancel();
        }
    }
}

struct Inner<R> {
    shared: Arc<Shared>,
    stages: Vec<Arc<StageStats>>,
    started: Instant,
    outcome: Mutex<Option<Outcome<R>>>,
    report: Mutex<Option<Report>>,
    /// Run once, by the driver when every task has finished, or by the
    /// handle if the driver is gone.
    leftovers: Mutex<Vec<Leftover>>,
    /// The driver task was dropped unfinished (see [`Inner::lost`]).
    lost: AtomicBool,
    done: watch::Receiver<bool>,
}

impl<R> Inner<R> {
    fn snapshot(&self) -> Report {
        Report::from_stages(&self.shared.name, &self.stages, self.started.elapsed())
    }

    /// Waits for the driver task to finish (or to be dropped unfinished,
    /// when its runtime shuts down).
    async fn finished(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Whether every stage counts in the source's items: each passes items
    /// on one for one or filters them (no `flat_map`, no batch stage).
    fn counts_in_items(&self) -> bool {
        self.stages.iter().all(|s| match s.kind {
            StageKind::Source | StageKind::Sink => true,
            StageKind::Stage => s.shape != Shape::Other,
            StageKind::Batch => false,
        })
    }

    fn count_leftovers(&self) {
        let leftovers =
            std::mem::take(&mut *self.leftovers.lock().unwrap_or_else(|p| p.into_inner()));
        for l in leftovers {
            l();
        }
    }

    /// The report of a run whose driver task was dropped before it stored
    /// one (its runtime shut down, dropping every task of the run): what was
    /// still queued is counted as cancelled; items that a dropped task held
    /// are in no count.
    fn lost(&self) -> Report {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(pipeline = %self.shared.name, "the pipeline's tasks were dropped before it finished (did its runtime shut down?)");
        }
        self.shared.kill.cancel();
        self.count_leftovers();
        self.snapshot()
    }
}

/// A running pipeline: join it, look at its live counts, or shut it down
/// (it implements [`Drain`]). Dropping the handle detaches the pipeline, as
/// dropping a `JoinHandle` does.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::{Instant, sleep};
/// use weft_core::Drain;
/// use weft_pipeline::{Batch, Pipeline};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let running = Pipeline::from_iter(0u64..) // never ends by itself
///     .then("work", |x| async move { sleep(Duration::from_millis(1)).await; x })
///     .batch("write", Batch::size(1_000))
///     .collect()
///     .spawn()
///     .unwrap();
/// sleep(Duration::from_millis(100)).await;
/// // Stop the source, finish what was accepted, flush the partial batch.
/// let report = running.drain(Instant::now() + Duration::from_secs(5)).await;
/// assert!(report.is_clean());
/// let (batches, _) = running.join().await.unwrap();
/// assert_eq!(batches.iter().map(Vec::len).sum::<usize>() as u64, report.accepted);
/// # }
/// ```
pub struct Running<R> {
    inner: Arc<Inner<R>>,
}

impl<R> fmt::Debug for Running<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("name", &self.inner.shared.name)
            .field("finished", &*self.inner.done.borrow())
            .finish()
    }
}

impl<R> Running<R> {
    /// A snapshot of the counts so far (exact once the pipeline finished).
    pub fn stats(&self) -> Report {
        self.inner.snapshot()
    }

    /// Whether every task of the pipeline has finished.
    pub fn is_finished(&self) -> bool {
        *self.inner.done.borrow()
    }

    /// Waits for the pipeline to finish; returns the sink's output and the
    /// report, or why it stopped.
    ///
    /// If the runtime the pipeline was spawned on shut down before the
    /// pipeline finished (its tasks were dropped), returns
    /// [`PipelineError::Cancelled`] with the counts as they were: items
    /// still queued between stages count as cancelled, items a dropped task
    /// was holding are in no count.
    pub async fn join(self) -> Result<(R, Report), PipelineError> {
        self.inner.finished().await;
        let outcome = self
            .inner
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        outcome.unwrap_or_else(|| {
            Err(PipelineError::Cancelled {
                report: Box::new(self.inner.lost()),
            })
        })
    }

    /// Stops the source now; the stages drain what is queued, batches are
    /// flushed. If that has not finished by `deadline`, every stage is
    /// cancelled (items still queued are counted as cancelled).
    ///
    /// A [`from_receiver`](crate::Pipeline::from_receiver) source closes its
    /// channel (later sends fail and hand the item back) and passes on what
    /// the senders had already put in it; other sources simply stop pulling.
    ///
    /// If the pipeline's runtime has shut down, returns the counts as they
    /// were (see [`join`](Running::join)).
    pub async fn shutdown(&self, deadline: Instant) -> Report {
        let shared = &self.inner.shared;
        tracing::info!(pipeline = %shared.name, "pipeline shutting down");
        shared.stop.cancel();
        if tokio::time::timeout_at(deadline, self.inner.finished())
            .await
            .is_err()
        {
            tracing::warn!(pipeline = %shared.name, "pipeline did not drain by the deadline; cancelling");
            shared.kill.cancel();
            self.inner.finished().await;
        }
        let report = self
            .inner
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        report.unwrap_or_else(|| self.inner.lost())
    }
}

impl<R: Send> Drain for Running<R> {
    /// Stops the source, drains the stages and flushes batches until
    /// `deadline`, then cancels (see [`shutdown`](Running::shutdown)).
    ///
    /// In the `ShutdownReport`, `accepted` is the items the source produced
    /// (for [`from_receiver`](crate::Pipeline::from_receiver), every item
    /// whose `send` succeeded); `failed` counts failed, dead-lettered and
    /// shed items; `cancelled` the items discarded at the deadline.
    ///
    /// When every stage passes items on one for one or filters them (no
    /// `flat_map`, no `batch`), `completed` is what was finished: the items
    /// the sink consumed plus the items a filter dropped. Nothing is
    /// derived, so an item that went missing shows as an unbalanced report.
    /// If the pipeline's runtime shut down under it, the items its dropped
    /// tasks were holding are counted as `aborted`.
    ///
    /// `flat_map` and `batch` change the unit of the stages after them (a
    /// failed batch counts once), so for those pipelines `completed` is
    /// `accepted` less the failed and cancelled counts of every stage, each
    /// in its own unit, capped so that the report balances.
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.shutdown(deadline).await;
            let mut s = ShutdownReport::new(r.name.clone());
            s.accepted = r.items_in;
            if self.inner.counts_in_items() {
                s.completed = r.items_out + r.filtered;
                s.failed = r.failed + r.dead_lettered + r.dropped;
                s.cancelled = r.cancelled;
                if self.inner.lost.load(Ordering::SeqCst) {
                    s.aborted = s
                        .accepted
                        .saturating_sub(s.completed + s.failed + s.cancelled);
                }
            } else {
                s.failed = (r.failed + r.dead_lettered + r.dropped).min(s.accepted);
                s.cancelled = r.cancelled.min(s.accepted - s.failed);
                s.completed = s.accepted - s.failed - s.cancelled;
            }
            s.elapsed = start.elapsed();
            s
        })
    }
}

//! The bounded, chunked channels between stages, and the per-run context.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weft_core::queue::{Admitted, PushError, Queue};
use weft_core::{Overflow, OverflowError, Panicked};

use crate::error::{BuildError, DeadLetter, OverflowKind, StageError};
use crate::report::StageStats;
use crate::stage::{OnError, Retry};

/// State shared by every task of one run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    /// Cancels every task (fail fast, shutdown deadline).
    pub(crate) kill: CancellationToken,
    /// Stops the source only (graceful drain).
    pub(crate) stop: CancellationToken,
    pub(crate) fault: Mutex<Option<(String, StageError)>>,
    pub(crate) sink_closed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(name: String) -> Self {
        Shared {
            name,
            kill: CancellationToken::new(),
            stop: CancellationToken::new(),
            fault: Mutex::new(None),
            sink_closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn fail(&self, stage: &str, err: StageError) {
        let mut slot = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(pipeline = %self.name, stage, error = %err, "stage failed; cancelling the pipeline");
            *slot = Some((stage.to_owned(), err));
        }
        drop(slot);
        self.kill.cancel();
    }

    pub(crate) fn sink_closed(&self) {
        self.sink_closed.store(true, Ordering::SeqCst);
        self.kill.cancel();
    }
}

/// A task of a run, with the name of the stage it belongs to (so that a
/// panic that escapes the stage's own boundaries is still put on it).
pub(crate) struct Task {
    pub(crate) stage: String,
    pub(crate) fut: BoxFuture<'static, ()>,
}

/// What a run is built into: the tasks to spawn, the stages' counters, and
/// the leftover counters run once every task has finished.
pub(crate) struct Wiring {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) stages: Vec<Arc<StageStats>>,
    pub(crate) leftovers: Vec<crate::run::Leftover>,
    pub(crate) errors: Vec<BuildError>,
}

impl Wiring {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Wiring {
            shared,
            tasks: Vec::new(),
            stages: Vec::new(),
            leftovers: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Adds a task of the stage wired last, inside a debug span naming the
    /// pipeline and the stage.
    pub(crate) fn spawn(&mut self, fut: impl Future<Output = ()> + Send + 'static) {
        use tracing::Instrument;
        let stage = self.stages.last().map(|s| s.name.as_str()).unwrap_or("");
        let span = tracing::debug_span!("weft_pipeline_stage", pipeline = %self.shared.name, stage);
        self.tasks.push(Task {
            stage: stage.to_owned(),
            fut: Box::pin(fut.instrument(span)),
        });
    }

    /// Counts what is left in `rx` once the run is over as cancelled in
    /// `stats` (and, for outputs, as emitted by `from`).
    pub(crate) fn leftover_channel<T: Send + 'static>(
        &mut self,
        rx: async_channel::Receiver<Vec<T>>,
        cancelled_in: Arc<StageStats>,
        emitted_by: Option<Arc<StageStats>>,
    ) {
        self.leftovers.push(Box::new(move || {
            let mut n = 0;
            while let Ok(v) = rx.try_recv() {
                n += v.len() as u64;
            }
            cancelled_in.cancelled.add(n);
            if let Some(from) = emitted_by {
                from.emitted.add(n);
            }
        }));
    }
}

/// How a stage goes on after handling a failed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// The runtime side of a stage's configuration, shared by its workers.
pub(crate) struct StageCtx<T> {
    pub(crate) stats: Arc<StageStats>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) on_error: OnError<T>,
    pub(crate) retry: Option<Retry>,
    pub(crate) cloner: Option<fn(&T) -> T>,
}

impl<T> StageCtx<T> {
    pub(crate) fn plain(stats: Arc<StageStats>, shared: Arc<Shared>) -> Self {
        StageCtx {
            stats,
            shared,
            on_error: OnError::FailFast,
            retry: None,
            cloner: None,
        }
    }

    #[inline]
    pub(crate) fn backup(&self, item: &T) -> Option<T> {
        self.cloner.map(|c| c(item))
    }

    pub(crate) fn name(&self) -> &str {
        &self.stats.name
    }

    /// Applies the stage's policy to an item that failed for good.
    pub(crate) fn give_up(&self, item: Option<T>, err: StageError) -> Flow {
        if err.is_panic() {
            self.stats.panicked.incr();
            tracing::error!(pipeline = %self.shared.name, stage = self.name(), error = %err, "stage function panicked");
        }
        match &self.on_error {
            OnError::FailFast => {
                self.stats.failed.incr();
                self.shared.fail(self.name(), err);
                Flow::Stop
            }
            OnError::Skip => {
                self.stats.failed.incr();
                tracing::debug!(pipeline = %self.shared.name, stage = self.name(), error = %err, "item failed; skipped");
                Flow::Continue
            }
            OnError::DeadLetter(sink) => match item {
                Some(item) => {
                    tracing::debug!(pipeline = %self.shared.name, stage = self.name(), error = %err, "item failed; dead-lettered");
                    self.dead_letter(sink, item, err);
                    self.stats.dead_lettered.incr();
                    Flow::Continue
                }
                None => {
                    self.stats.failed.incr();
                    Flow::Continue
                }
            },
        }
    }

    fn dead_letter(
        &self,
        sink: &Arc<dyn Fn(DeadLetter<T>) + Send + Sync>,
        item: T,
        error: StageError,
    ) {
        let letter = DeadLetter {
            stage: self.name().to_owned(),
            item,
            error,
        };
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(letter))) {
            let p = Panicked::from_payload(p.as_ref());
            tracing::error!(pipeline = %self.shared.name, stage = self.name(), error = %p, "dead-letter sink panicked");
        }
    }

    /// Items the stage's input queue shed.
    pub(crate) fn shed(&self, items: Vec<T>, kind: OverflowKind) {
        let n = items.len() as u64;
        if n == 0 {
            return;
        }
        self.stats.dropped.add(n);
        tracing::warn!(pipeline = %self.shared.name, stage = self.name(), items = n, ?kind, "stage input full; items shed");
        if let OnError::DeadLetter(sink) = &self.on_error {
            for item in items {
                self.dead_letter(sink, item, StageError::Overflow(kind));
            }
        }
    }
}

struct CloseOnDrop<T>(Queue<Vec<T>>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The sending side of a stage's input queue, held by the upstream.
pub(crate) struct Outlet<T> {
    queue: Queue<Vec<T>>,
    pub(crate) chunk: usize,
    pub(crate) target: Arc<StageCtx<T>>,
    _producers: Arc<CloseOnDrop<T>>,
}

impl<T> Clone for Outlet<T> {
    fn clone(&self) -> Self {
        Outlet {
            queue: self.queue.clone(),
            chunk: self.chunk,
            target: self.target.clone(),
            _producers: self._producers.clone(),
        }
    }
}

/// The receiving side of a stage's input queue.
pub(crate) struct Inlet<T> {
    queue: Queue<Vec<T>>,
    _consumers: Arc<CloseOnDrop<T>>,
}

impl<T> Clone for Inlet<T> {
    fn clone(&self) -> Self {
        Inlet {
            queue: self.queue.clone(),
            _consumers: self._consumers.clone(),
        }
    }
}

/// A stage's input queue: `capacity` items in chunks of `chunk` (1 when the
/// policy is not `Block`, so that exactly the overflowing items are shed).
pub(crate) fn channel<T: Send + 'static>(
    w: &mut Wiring,
    target: Arc<StageCtx<T>>,
    capacity: usize,
    chunk: usize,
    overflow: Overflow,
) -> Result<(Outlet<T>, Inlet<T>), OverflowError> {
    OverflowError::check(capacity, overflow)?;
    let chunk = if overflow == Overflow::Block {
        chunk.clamp(1, capacity)
    } else {
        1
    };
    let slots = capacity.div_ceil(chunk);
    let queue = Queue::bounded(slots, overflow)?;
    let leftover = queue.clone();
    let stats = target.stats.clone();
    w.leftovers.push(Box::new(move || {
        let n: usize = leftover.drain_now().iter().map(Vec::len).sum();
        stats.cancelled.add(n as u64);
    }));
    Ok((
        Outlet {
            queue: queue.clone(),
            chunk,
            target,
            _producers: Arc::new(CloseOnDrop(queue.clone())),
        },
        Inlet {
            queue: queue.clone(),
            _consumers: Arc::new(CloseOnDrop(queue)),
        },
    ))
}

impl<T> Inlet<T> {
    /// The next chunk if one is queued right now.
    #[inline]
    pub(crate) fn try_recv(&self) -> Option<Vec<T>> {
        self.queue.try_pop()
    }

    /// Waits for the next chunk; `None` when the upstream is done or the run
    /// is cancelled. Time spent waiting is counted as idle.
    pub(crate) async fn recv(&self, shared: &Shared, stats: &StageStats) -> Option<Vec<T>> {
        if shared.kill.is_cancelled() {
            return None;
        }
        if let Some(c) = self.queue.try_pop() {
            return Some(c);
        }
        let start = Instant::now();
        let r = self.recv_uncounted(shared).await;
        stats.idle_ns.add(start.elapsed().as_nanos() as u64);
        r
    }

    /// Like [`recv`](Inlet::recv), for callers that count the wait
    /// themselves.
    pub(crate) async fn recv_uncounted(&self, shared: &Shared) -> Option<Vec<T>> {
        if shared.kill.is_cancelled() {
            return None;
        }
        tokio::select! {
            biased;
            _ = shared.kill.cancelled() => None,
            c = self.queue.pop() => c,
        }
    }
}

/// The upstream's end of a channel with a buffer that fills to a chunk.
pub(crate) struct Emitter<T> {
    out: Outlet<T>,
    pub(crate) buf: Vec<T>,
    own: Arc<StageStats>,
    shared: Arc<Shared>,
}

/// The run was cancelled or the downstream is gone.
#[derive(Debug)]
pub(crate) struct Stopped;

impl<T> Emitter<T> {
    pub(crate) fn new(out: Outlet<T>, own: Arc<StageStats>, shared: Arc<Shared>) -> Self {
        Emitter {
            buf: Vec::with_capacity(out.chunk),
            out,
            own,
            shared,
        }
    }

    pub(crate) fn chunk(&self) -> usize {
        self.out.chunk
    }

    /// Adds one item, sending when a chunk is full.
    #[inline]
    pub(crate) async fn emit(&mut self, item: T) -> Result<(), Stopped> {
        self.buf.push(item);
        if self.buf.len() >= self.out.chunk {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Adds many items: sends `v` as it is when nothing is buffered and it is
    /// big enough, otherwise buffers it.
    ///
    /// If the run stops part-way, the items not handed over are counted as
    /// emitted by this stage and cancelled in front of the next one (as
    /// [`abandon`](Emitter::abandon) does), so none of them vanish.
    pub(crate) async fn emit_vec(&mut self, v: Vec<T>) -> Result<(), Stopped> {
        let chunk = self.out.chunk;
        if self.buf.is_empty() && v.len() >= chunk / 2 && v.len() <= chunk {
            // `send` counts the whole vector if it fails.
            return self.send(v).await;
        }
        let mut items = v.into_iter();
        let r = self.emit_iter(&mut items, chunk).await;
        if r.is_err() {
            self.cancel_unsent(items.len() as u64);
        }
        r
    }

    /// The body of [`emit_vec`](Emitter::emit_vec): stops at the first
    /// failed hand-off, leaving the rest in `items`.
    async fn emit_iter(
        &mut self,
        items: &mut std::vec::IntoIter<T>,
        chunk: usize,
    ) -> Result<(), Stopped> {
        if items.len() <= chunk {
            for item in items.by_ref() {
                self.emit(item).await?;
            }
            return Ok(());
        }
        self.flush().await?;
        loop {
            let c: Vec<T> = items.by_ref().take(chunk).collect();
            if c.len() < chunk {
                self.buf = c;
                return Ok(());
            }
            self.send(c).await?;
        }
    }

    /// Counts `n` items this stage finished with but will never hand over
    /// (the run stopped) as emitted by it and cancelled in front of the next
    /// stage.
    pub(crate) fn cancel_unsent(&self, n: u64) {
        if n > 0 {
            self.own.emitted.add(n);
            self.out.target.stats.cancelled.add(n);
        }
    }

    /// Sends whatever is buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), Stopped> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let v = std::mem::replace(&mut self.buf, Vec::with_capacity(self.out.chunk));
        self.send(v).await
    }

    async fn send(&mut self, v: Vec<T>) -> Result<(), Stopped> {
        let n = v.len() as u64;
        if n == 0 {
            return Ok(());
        }
        self.own.emitted.add(n);
        if self.shared.kill.is_cancelled() {
            self.out.target.stats.cancelled.add(n);
            return Err(Stopped);
        }
        // Fast path: room right now.
        let v = match self.out.queue.try_push(v) {
            Ok(Admitted::Queued) => return Ok(()),
            Ok(Admitted::Evicted(old)) => {
                for v in old {
                    self.out.target.shed(v, OverflowKind::DroppedOldest);
                }
                return Ok(());
            }
            Err(PushError::Full(v)) if self.out.queue.overflow().waits() => v,
            Err(e) => return self.refused(e),
        };
        let start = Instant::now();
        let r = tokio::select! {
            biased;
            _ = self.shared.kill.cancelled() => None,
            r = self.out.queue.push(v) => Some(r),
        };
        self.own.blocked_ns.add(start.elapsed().as_nanos() as u64);
        match r {
            None => {
                self.out.target.stats.cancelled.add(n);
                Err(Stopped)
            }
            Some(Ok(Admitted::Queued)) => Ok(()),
            Some(Ok(Admitted::Evicted(old))) => {
                for v in old {
                    self.out.target.shed(v, OverflowKind::DroppedOldest);
                }
                Ok(())
            }
            Some(Err(e)) => self.refused(e),
        }
    }

    fn refused(&mut self, e: PushError<Vec<T>>) -> Result<(), Stopped> {
        let kind = match &e {
            PushError::Full(_) => OverflowKind::Rejected,
            PushError::Dropped(_) => OverflowKind::DroppedNewest,
            PushError::Timeout(_) => OverflowKind::TimedOut,
            PushError::Closed(_) => {
                self.out
                    .target
                    .stats
                    .cancelled
                    .add(e.into_inner().len() as u64);
                return Err(Stopped);
            }
        };
        self.out.target.shed(e.into_inner(), kind);
        Ok(())
    }

    /// Counts whatever is still buffered as cancelled (the run stopped).
    pub(crate) fn abandon(&mut self) {
        self.cancel_unsent(self.buf.len() as u64);
        self.buf.clear();
    }
}

impl<T> Drop for Emitter<T> {
    fn drop(&mut self) {
        self.abandon();
    }
}

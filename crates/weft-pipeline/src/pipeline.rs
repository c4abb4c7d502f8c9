//! The typed builder: a source, stages, a sink.

use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, Stream, StreamExt};
use tower_service::Service;
use weft_core::{BoxError, Overflow, Panicked};

use crate::batch::{Batch, batcher};
use crate::channel::{Emitter, Inlet, Outlet, Shared, StageCtx, Wiring, channel};
use crate::error::{BuildError, PipelineError};
use crate::report::{Report, Shape, StageKind, StageStats};
use crate::run::{Runnable, Slot};
use crate::stage::{DEFAULT_CAPACITY, DEFAULT_CHUNK, Stage};
use crate::worker::{AsyncFn, Process, SyncFn, spawn_workers};

type Build<T> = Box<dyn FnOnce(&mut Wiring, Outlet<T>) + Send>;

/// A typed pipeline under construction: a source and the stages so far,
/// producing items of type `T`. Nothing runs until a sink is attached and
/// the result is run (or spawned).
///
/// ```
/// use weft_pipeline::{Pipeline, Stage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (out, report) = Pipeline::from_iter(1..=1000u64)
///     .map(Stage::new("square").workers(2), |x| x * x)
///     .filter("even", |x| x % 2 == 0)
///     .collect()
///     .run()
///     .await
///     .unwrap();
/// assert_eq!(out.len(), 500);
/// assert_eq!(out[0], 4); // ordered by default
/// assert_eq!(report.items_in, 1000);
/// assert_eq!(report.filtered, 500);
/// assert!(report.is_balanced());
/// # }
/// ```
pub struct Pipeline<T> {
    name: String,
    build: Build<T>,
}

impl<T> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn source_stats(w: &mut Wiring) -> Arc<StageStats> {
    let stats = Arc::new(StageStats::new("source", StageKind::Source, 1));
    w.stages.push(stats.clone());
    stats
}

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline whose source is an iterator, run on its own task. The
    /// iterator is advanced on a tokio worker thread, so it should not block
    /// (wrap a blocking reader in a channel and use
    /// [`from_receiver`](Pipeline::from_receiver)).
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        let iter = iter.into_iter();
        Pipeline {
            name: "pipeline".to_owned(),
            build: Box::new(move |w, out| {
                let stats = source_stats(w);
                let shared = w.shared.clone();
                let mut em = Emitter::new(out, stats, shared.clone());
                w.spawn(async move {
                    let mut iter = iter;
                    let chunk = em.chunk();
                    loop {
                        if shared.stop.is_cancelled() || shared.kill.is_cancelled() {
                            break;
                        }
                        // Fill a chunk straight from the iterator.
                        let room = chunk - em.buf.len();
                        em.buf.extend(iter.by_ref().take(room));
                        if em.buf.len() < chunk {
                            break; // exhausted
                        }
                        if em.flush().await.is_err() {
                            return;
                        }
                        // A source that never waits must still let other
                        // tasks run.
                        tokio::task::consume_budget().await;
                    }
                    let _ = em.flush().await;
                });
            }),
        }
    }

    /// A pipeline whose source is a stream, polled on its own task.
    ///
    /// On [`shutdown`](crate::Running::shutdown) the source stops pulling:
    /// items the stream has not yielded yet (in a channel behind it, say)
    /// were never part of the pipeline, are in no count, and are dropped
    /// with the stream. For a tokio mpsc channel, use
    /// [`from_receiver`](Pipeline::from_receiver), which closes the channel
    /// and processes what its senders had already put in.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Pipeline {
            name: "pipeline".to_owned(),
            build: Box::new(move |w, out| {
                let stats = source_stats(w);
                let shared = w.shared.clone();
                let mut em = Emitter::new(out, stats, shared.clone());
                w.spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        if shared.stop.is_cancelled() || shared.kill.is_cancelled() {
                            break;
                        }
                        let item = match stream.next().now_or_never() {
                            Some(Some(item)) => item,
                            Some(None) => break,
                            None => {
                                // Nothing ready: send what we have, then wait.
                                if em.flush().await.is_err() {
                                    return;
                                }
                                tokio::select! {
                                    biased;
                                    _ = shared.kill.cancelled() => return,
                                    _ = shared.stop.cancelled() => break,
                                    next = stream.next() => match next {
                                        Some(item) => item,
                                        None => break,
                                    },
                                }
                            }
                        };
                        if em.emit(item).await.is_err() {
                            return;
                        }
                        if em.buf.is_empty() {
                            // A chunk went out: let other tasks run even if
                            // the stream is always ready.
                            tokio::task::consume_budget().await;
                        }
                    }
                    let _ = em.flush().await;
                });
            }),
        }
    }

    /// A pipeline whose source is a tokio mpsc channel; it completes when
    /// every sender is dropped.
    ///
    /// An item whose `send` succeeded is part of the pipeline: on
    /// [`shutdown`](crate::Running::shutdown) the source closes the channel
    /// (later sends fail and hand the item back) and passes on every item
    /// already in it, which the stages then process like the rest of the
    /// queued work. If the deadline passes (or a stage fails fast) first,
    /// the items still in the channel are counted as cancelled.
    pub fn from_receiver(rx: tokio::sync::mpsc::Receiver<T>) -> Self {
        Pipeline {
            name: "pipeline".to_owned(),
            build: Box::new(move |w, out| {
                let stats = source_stats(w);
                let shared = w.shared.clone();
                let em = Emitter::new(out, stats, shared.clone());
                w.spawn(receive(rx, em, shared));
            }),
        }
    }

    /// Names the pipeline (in logs, metrics and the report).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn stage<U, P>(self, stage: Stage<T>, shape: Shape, default_chunk: usize, p: P) -> Pipeline<U>
    where
        U: Send + 'static,
        P: Process<T, U>,
    {
        let prev = self.build;
        Pipeline {
            name: self.name,
            build: Box::new(move |w, out| {
                match wire_stage(w, stage, shape, default_chunk, p, out) {
                    Ok(outlet) => prev(w, outlet),
                    Err(e) => w.errors.push(e),
                }
            }),
        }
    }

    fn sync_stage<U>(
        self,
        stage: impl Into<Stage<T>>,
        shape: Shape,
        f: impl Fn(T, &mut Vec<U>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Pipeline<U>
    where
        U: Send + 'static,
    {
        self.stage(stage.into(), shape, DEFAULT_CHUNK, SyncFn(f))
    }

    fn async_stage<U, F, Fut>(self, stage: impl Into<Stage<T>>, f: F) -> Pipeline<U>
    where
        U: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, BoxError>> + Send + 'static,
    {
        self.stage(stage.into(), Shape::OneToOne, 1, AsyncFn(f))
    }

    /// Transforms each item.
    pub fn map<U: Send + 'static>(
        self,
        stage: impl Into<Stage<T>>,
        f: impl Fn(T) -> U + Send + Sync + 'static,
    ) -> Pipeline<U> {
        self.sync_stage(stage, Shape::OneToOne, move |t, out| {
            out.push(f(t));
            Ok(())
        })
    }

    /// Transforms each item, or fails it (the stage's [`OnError`](crate::OnError)
    /// and [`Retry`](crate::Retry) apply).
    pub fn try_map<U, E>(
        self,
        stage: impl Into<Stage<T>>,
        f: impl Fn(T) -> Result<U, E> + Send + Sync + 'static,
    ) -> Pipeline<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
    {
        self.sync_stage(stage, Shape::OneToOne, move |t, out| {
            out.push(f(t).map_err(Into::into)?);
            Ok(())
        })
    }

    /// Keeps the items for which `f` is true.
    pub fn filter(
        self,
        stage: impl Into<Stage<T>>,
        f: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Pipeline<T> {
        self.sync_stage(stage, Shape::Filter, move |t, out| {
            if f(&t) {
                out.push(t);
            }
            Ok(())
        })
    }

    /// Transforms and filters in one step.
    pub fn filter_map<U: Send + 'static>(
        self,
        stage: impl Into<Stage<T>>,
        f: impl Fn(T) -> Option<U> + Send + Sync + 'static,
    ) -> Pipeline<U> {
        self.sync_stage(stage, Shape::Filter, move |t, out| {
            out.extend(f(t));
            Ok(())
        })
    }

    /// Turns each item into zero or more items.
    pub fn flat_map<U, I>(
        self,
        stage: impl Into<Stage<T>>,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> Pipeline<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U>,
    {
        self.sync_stage(stage, Shape::Other, move |t, out| {
            out.extend(f(t));
            Ok(())
        })
    }

    /// Looks at each item as it passes.
    pub fn inspect(
        self,
        stage: impl Into<Stage<T>>,
        f: impl Fn(&T) + Send + Sync + 'static,
    ) -> Pipeline<T> {
        self.sync_stage(stage, Shape::OneToOne, move |t, out| {
            f(&t);
            out.push(t);
            Ok(())
        })
    }

    /// Transforms each item asynchronously. Each worker runs one item at a
    /// time; give the stage `workers(n)` for `n` concurrent items.
    pub fn then<U, F, Fut>(self, stage: impl Into<Stage<T>>, f: F) -> Pipeline<U>
    where
        U: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = U> + Send + 'static,
    {
        self.async_stage(stage, move |t| f(t).map(Ok))
    }

    /// Transforms each item asynchronously, or fails it.
    pub fn try_then<U, E, F, Fut>(self, stage: impl Into<Stage<T>>, f: F) -> Pipeline<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        self.async_stage(stage, move |t| f(t).map(|r| r.map_err(Into::into)))
    }

    /// Calls a tower `Service` for each item (waiting for readiness first).
    /// The service is cloned per call, as tower services expect.
    pub fn service<S>(self, stage: impl Into<Stage<T>>, svc: S) -> Pipeline<S::Response>
    where
        S: Service<T> + Clone + Send + Sync + 'static,
        S::Response: Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.async_stage(stage, move |t| {
            let mut svc = svc.clone();
            async move {
                futures::future::poll_fn(|cx| svc.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                svc.call(t).await.map_err(Into::into)
            }
        })
    }

    /// Per-key ordered asynchronous transformation: shorthand for `then` on a
    /// stage partitioned by `key` with `partitions` workers.
    pub fn then_by_key<K, U, F, Fut>(
        self,
        stage: impl Into<Stage<T>>,
        partitions: usize,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        f: F,
    ) -> Pipeline<U>
    where
        K: Hash,
        U: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = U> + Send + 'static,
    {
        let stage = stage.into().workers(partitions).partition_by(key);
        self.then(stage, f)
    }

    /// Groups items into batches (see [`Batch`]).
    pub fn batch(self, name: impl Into<String>, cfg: Batch<T>) -> Pipeline<Vec<T>> {
        let name = name.into();
        let prev = self.build;
        Pipeline {
            name: self.name,
            build: Box::new(move |w, out| {
                if cfg.max_size == 0 {
                    w.errors.push(BuildError::Batch {
                        stage: name,
                        what: "max_size",
                    });
                    return;
                }
                if cfg.weight.as_ref().is_some_and(|(m, _)| *m == 0) {
                    w.errors.push(BuildError::Batch {
                        stage: name,
                        what: "max_weight",
                    });
                    return;
                }
                let stats = Arc::new(StageStats::new(name.clone(), StageKind::Batch, 1));
                w.stages.push(stats.clone());
                let ctx = Arc::new(StageCtx::plain(stats.clone(), w.shared.clone()));
                let chunk = cfg.max_size.min(DEFAULT_CHUNK);
                match channel(w, ctx.clone(), cfg.capacity, chunk, Overflow::Block) {
                    Ok((outlet, inlet)) => {
                        let em = Emitter::new(out, stats, w.shared.clone());
                        w.spawn(batcher(ctx, cfg, inlet, em));
                        prev(w, outlet);
                    }
                    Err(source) => w.errors.push(BuildError::Queue {
                        stage: name,
                        source,
                    }),
                }
            }),
        }
    }

    fn sink<R: Send + 'static, Fut>(
        self,
        make: impl FnOnce(Arc<StageCtx<T>>, Inlet<T>, Slot<R>) -> Fut + Send + 'static,
    ) -> Runnable<R>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let prev = self.build;
        let slot: Slot<R> = Arc::new(Mutex::new(None));
        let s = slot.clone();
        Runnable::new(
            self.name,
            Box::new(move |w: &mut Wiring| {
                let stats = Arc::new(StageStats::new("sink", StageKind::Sink, 1));
                w.stages.push(stats.clone());
                let ctx = Arc::new(StageCtx::plain(stats, w.shared.clone()));
                let (outlet, inlet) = channel(
                    w,
                    ctx.clone(),
                    DEFAULT_CAPACITY,
                    DEFAULT_CHUNK,
                    Overflow::Block,
                )
                .expect("the default capacity is valid");
                w.spawn(make(ctx, inlet, s));
                prev(w, outlet);
            }),
            slot,
        )
    }

    /// Ends the pipeline with a closure called on each item, in one task. A
    /// panic in it fails the pipeline.
    pub fn for_each(self, mut f: impl FnMut(T) + Send + 'static) -> Runnable<()> {
        self.sink(move |ctx, inlet, slot| async move {
            drain_sync(&ctx, &inlet, &mut f).await;
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(());
        })
    }

    /// Ends the pipeline by collecting the items into a `Vec`.
    pub fn collect(self) -> Runnable<Vec<T>> {
        self.sink(move |ctx, inlet, slot| async move {
            let mut all = Vec::new();
            drain_sync(&ctx, &inlet, |item| all.push(item)).await;
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(all);
        })
    }

    /// Ends the pipeline by sending each item into a tokio mpsc channel
    /// (waiting for room: backpressure reaches the source). If the receiver
    /// is dropped the pipeline stops with
    /// [`PipelineError::SinkClosed`].
    pub fn send_to(self, tx: tokio::sync::mpsc::Sender<T>) -> Runnable<()> {
        self.sink(move |ctx, inlet, slot| async move {
            let stats = &ctx.stats;
            let shared = &ctx.shared;
            while let Some(chunk) = inlet.recv(shared, stats).await {
                stats.received.add(chunk.len() as u64);
                let mut it = chunk.into_iter();
                while let Some(item) = it.next() {
                    let start = tokio::time::Instant::now();
                    let r = tokio::select! {
                        biased;
                        _ = shared.kill.cancelled() => Err(()),
                        r = tx.send(item) => r.map_err(|_| ()),
                    };
                    stats.blocked_ns.add(start.elapsed().as_nanos() as u64);
                    if r.is_err() {
                        if !shared.kill.is_cancelled() {
                            tracing::warn!(pipeline = %shared.name, "sink receiver dropped; stopping the pipeline");
                            shared.sink_closed();
                        }
                        stats.cancelled.add(1 + it.len() as u64);
                        return;
                    }
                    stats.completed.incr();
                }
            }
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(());
        })
    }

    /// Runs the pipeline to completion, discarding its output items (they
    /// count as `items_out`), and returns the report.
    pub async fn run(self) -> Result<Report, PipelineError> {
        self.for_each(drop).run().await.map(|((), report)| report)
    }
}

/// The task behind [`Pipeline::from_receiver`].
async fn receive<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
    mut em: Emitter<T>,
    shared: Arc<Shared>,
) {
    use tokio::sync::mpsc::error::TryRecvError;
    // Whether the channel was closed by a shutdown (admission closed; what
    // is in it is still passed on).
    let mut closed = false;
    loop {
        if shared.kill.is_cancelled() {
            break;
        }
        if !closed && shared.stop.is_cancelled() {
            rx.close();
            closed = true;
        }
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                // Nothing ready: send what we have, then wait.
                if em.flush().await.is_err() {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = shared.kill.cancelled() => break,
                    _ = shared.stop.cancelled(), if !closed => continue,
                    next = rx.recv() => match next {
                        Some(item) => item,
                        None => break,
                    },
                }
            }
        };
        if em.emit(item).await.is_err() {
            break;
        }
        if em.buf.is_empty() {
            // A chunk went out: let other tasks run even if the channel is
            // always ready.
            tokio::task::consume_budget().await;
        }
    }
    // Cut off (or the channel is simply done): whatever the senders put in
    // the channel and the source did not pass on is cancelled, not lost.
    rx.close();
    let mut left = 0u64;
    while rx.try_recv().is_ok() {
        left += 1;
    }
    em.cancel_unsent(left);
    let _ = em.flush().await;
}

async fn drain_sync<T>(ctx: &StageCtx<T>, inlet: &Inlet<T>, mut f: impl FnMut(T)) {
    let stats = &ctx.stats;
    while let Some(chunk) = inlet.recv(&ctx.shared, stats).await {
        let start = tokio::time::Instant::now();
        let n = chunk.len() as u64;
        stats.received.add(n);
        let mut it = chunk.into_iter();
        let mut done = 0u64;
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            for item in it.by_ref() {
                f(item);
                done += 1;
            }
        }));
        stats.completed.add(done);
        stats.busy_ns.add(start.elapsed().as_nanos() as u64);
        if let Err(p) = r {
            ctx.give_up(None, Panicked::from_payload(p.as_ref()).into());
            stats.cancelled.add(it.len() as u64);
            return;
        }
    }
}

fn wire_stage<T, U, P>(
    w: &mut Wiring,
    stage: Stage<T>,
    shape: Shape,
    default_chunk: usize,
    p: P,
    out: Outlet<U>,
) -> Result<Outlet<T>, BuildError>
where
    T: Send + 'static,
    U: Send + 'static,
    P: Process<T, U>,
{
    if stage.workers == 0 {
        return Err(BuildError::ZeroWorkers { stage: stage.name });
    }
    if stage.chunk == Some(0) {
        return Err(BuildError::ZeroChunk { stage: stage.name });
    }
    let stats = Arc::new(StageStats {
        shape,
        ..StageStats::new(stage.name.clone(), StageKind::Stage, stage.workers)
    });
    w.stages.push(stats.clone());
    let keeps = stage.keeps_items();
    let ctx = Arc::new(StageCtx {
        stats,
        shared: w.shared.clone(),
        on_error: stage.on_error,
        retry: stage.retry,
        cloner: if keeps { stage.cloner } else { None },
    });
    let chunk = stage.chunk.unwrap_or(default_chunk);
    let (outlet, inlet) =
        channel(w, ctx.clone(), stage.capacity, chunk, stage.overflow).map_err(|source| {
            BuildError::Queue {
                stage: stage.name.clone(),
                source,
            }
        })?;
    let partition_slots = stage.capacity / (outlet.chunk * stage.workers);
    spawn_workers(
        w,
        ctx,
        stage.workers,
        stage.mode,
        p,
        inlet,
        out,
        partition_slots,
    );
    Ok(outlet)
}

//! The tasks behind a stage: workers, and for ordered and keyed stages the
//! dispatcher (and collector) around them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::time::{Instant, sleep};
use weft_core::{BoxError, Panicked, catch_unwind};

use crate::channel::{Emitter, Flow, Inlet, Shared, StageCtx, Wiring};
use crate::report::StageStats;
use crate::stage::KeyFn;

/// Processes one chunk of a stage's input into its output.
pub(crate) trait Process<T, U>: Send + Sync + 'static {
    /// Processes `chunk` (counting it received), pushing results to `out`.
    /// Returns `Flow::Stop` when the stage must stop (fail fast, cancelled);
    /// unprocessed items are then counted as cancelled.
    fn process(
        &self,
        ctx: &StageCtx<T>,
        chunk: Vec<T>,
        out: &mut Vec<U>,
    ) -> impl Future<Output = Flow> + Send;
}

/// A synchronous stage function: `item -> zero or more outputs`, or an error.
pub(crate) struct SyncFn<F>(pub(crate) F);

/// An asynchronous one-to-one stage function.
pub(crate) struct AsyncFn<F>(pub(crate) F);

enum Failure {
    Error(BoxError),
    Panic(Panicked),
}

enum Handled {
    Recovered,
    Flow(Flow),
}

impl<T, U, F> Process<T, U> for SyncFn<F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T, &mut Vec<U>) -> Result<(), BoxError> + Send + Sync + 'static,
{
    async fn process(&self, ctx: &StageCtx<T>, chunk: Vec<T>, out: &mut Vec<U>) -> Flow {
        ctx.stats.received.add(chunk.len() as u64);
        let f = &self.0;
        let keep = ctx.cloner.is_some();
        let mut iter = chunk.into_iter();
        let mut completed = 0u64;
        let mut flow = Flow::Continue;
        loop {
            let mut backup: Option<T> = None;
            // One unwind boundary per run of good items, not per item.
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                for item in iter.by_ref() {
                    if keep {
                        backup = ctx.backup(&item);
                    }
                    if let Err(e) = f(item, out) {
                        return Some(e);
                    }
                    completed += 1;
                }
                None
            }));
            let failure = match r {
                Ok(None) => break,
                Ok(Some(e)) => Failure::Error(e),
                Err(p) => Failure::Panic(Panicked::from_payload(p.as_ref())),
            };
            let handled = handle(ctx, backup, failure, |item| match std::panic::catch_unwind(
                AssertUnwindSafe(|| f(item, out)),
            ) {
                Ok(r) => std::future::ready(r.map_err(Failure::Error)),
                Err(p) => {
                    std::future::ready(Err(Failure::Panic(Panicked::from_payload(p.as_ref()))))
                }
            })
            .await;
            match handled {
                Handled::Recovered => completed += 1,
                Handled::Flow(Flow::Continue) => {}
                Handled::Flow(Flow::Stop) => {
                    flow = Flow::Stop;
                    break;
                }
            }
        }
        ctx.stats.completed.add(completed);
        if flow == Flow::Stop {
            ctx.stats.cancelled.add(iter.len() as u64);
        }
        flow
    }
}

impl<T, U, F, Fut> Process<T, U> for AsyncFn<F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<U, BoxError>> + Send + 'static,
{
    async fn process(&self, ctx: &StageCtx<T>, chunk: Vec<T>, out: &mut Vec<U>) -> Flow {
        ctx.stats.received.add(chunk.len() as u64);
        let mut iter = chunk.into_iter();
        let mut flow = Flow::Continue;
        for item in iter.by_ref() {
            let backup = ctx.backup(&item);
            let r = tokio::select! {
                biased;
                _ = ctx.shared.kill.cancelled() => {
                    ctx.stats.cancelled.incr();
                    flow = Flow::Stop;
                    break;
                }
                r = call_async(&self.0, item) => r,
            };
            let failure = match r {
                Ok(Ok(u)) => {
                    out.push(u);
                    ctx.stats.completed.incr();
                    continue;
                }
                Ok(Err(e)) => Failure::Error(e),
                Err(p) => Failure::Panic(p),
            };
            let handled = handle(ctx, backup, failure, |item| {
                let fut = call_async(&self.0, item);
                async move {
                    match fut.await {
                        Ok(Ok(u)) => Ok(u),
                        Ok(Err(e)) => Err(Failure::Error(e)),
                        Err(p) => Err(Failure::Panic(p)),
                    }
                }
            });
            // `handle` pushes nothing: async outputs come back through the
            // closure's result, pushed here.
            match handled.await {
                (Handled::Recovered, Some(u)) => {
                    out.push(u);
                    ctx.stats.completed.incr();
                }
                (Handled::Flow(Flow::Stop), _) => {
                    flow = Flow::Stop;
                    break;
                }
                _ => {}
            }
        }
        if flow == Flow::Stop {
            ctx.stats.cancelled.add(iter.len() as u64);
        }
        flow
    }
}

/// Calls an async stage function, catching a panic both in the call that
/// makes the future and while the future runs.
fn call_async<T, U, F, Fut>(
    f: &F,
    item: T,
) -> impl Future<Output = Result<Result<U, BoxError>, Panicked>> + Send + 'static
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<U, BoxError>> + Send + 'static,
    U: Send + 'static,
{
    let made = std::panic::catch_unwind(AssertUnwindSafe(|| f(item)))
        .map_err(|p| Panicked::from_payload(p.as_ref()));
    async move {
        match made {
            Ok(fut) => catch_unwind(fut).await,
            Err(p) => Err(p),
        }
    }
}

/// What [`handle`] gives back: how the stage goes on, and for asynchronous
/// stages the output of a successful retry.
trait Attempt {
    type Out;
    fn handled(h: Handled, out: Option<Self::Out>) -> Self;
}

impl Attempt for Handled {
    type Out = ();
    fn handled(h: Handled, _: Option<()>) -> Self {
        h
    }
}

impl<U> Attempt for (Handled, Option<U>) {
    type Out = U;
    fn handled(h: Handled, out: Option<U>) -> Self {
        (h, out)
    }
}

/// Retries (if configured and the error is retryable), then applies the
/// stage's error policy. `attempt` runs the stage function once more on a
/// copy of the item.
async fn handle<T, O, R, A, Fut>(
    ctx: &StageCtx<T>,
    backup: Option<T>,
    failure: Failure,
    mut attempt: A,
) -> R
where
    R: Attempt<Out = O>,
    A: FnMut(T) -> Fut,
    Fut: Future<Output = Result<O, Failure>>,
{
    let mut err = match failure {
        Failure::Panic(p) => return R::handled(Handled::Flow(ctx.give_up(backup, p.into())), None),
        Failure::Error(e) => e,
    };
    let (Some(retry), true) = (&ctx.retry, backup.is_some()) else {
        // No retries (or nothing to retry with): the policy decides, with
        // the item if the stage keeps one (dead letters).
        return R::handled(
            Handled::Flow(ctx.give_up(backup, crate::StageError::Failed(err))),
            None,
        );
    };
    let item = backup.expect("checked above");
    let mut attempts = 1;
    loop {
        let (again, e) = match retry.should_retry(err) {
            Ok(r) => r,
            Err(p) => {
                return R::handled(Handled::Flow(ctx.give_up(Some(item), p.into())), None);
            }
        };
        err = e;
        if !again || attempts >= retry.attempts {
            return R::handled(
                Handled::Flow(ctx.give_up(Some(item), crate::StageError::Failed(err))),
                None,
            );
        }
        tokio::select! {
            biased;
            _ = ctx.shared.kill.cancelled() => {
                ctx.stats.cancelled.incr();
                return R::handled(Handled::Flow(Flow::Stop), None);
            }
            _ = sleep(retry.delay(attempts - 1)) => {}
        }
        ctx.stats.retried.incr();
        attempts += 1;
        let copy = ctx
            .backup(&item)
            .expect("a stage that retries keeps its items");
        match attempt(copy).await {
            Ok(o) => return R::handled(Handled::Recovered, Some(o)),
            Err(Failure::Error(e)) => err = e,
            Err(Failure::Panic(p)) => {
                return R::handled(Handled::Flow(ctx.give_up(Some(item), p.into())), None);
            }
        }
    }
}

/// Where a worker takes its chunks from.
pub(crate) enum Input<T> {
    /// The stage's input queue, shared by the workers.
    Shared(Inlet<T>),
    /// The worker's own channel, fed by a dispatcher.
    Own(async_channel::Receiver<Vec<T>>),
}

impl<T> Input<T> {
    #[inline]
    fn try_recv(&self) -> Option<Vec<T>> {
        match self {
            Input::Shared(i) => i.try_recv(),
            Input::Own(rx) => rx.try_recv().ok(),
        }
    }

    async fn recv(&self, shared: &Shared, stats: &StageStats) -> Option<Vec<T>> {
        match self {
            Input::Shared(i) => i.recv(shared, stats).await,
            Input::Own(rx) => {
                if shared.kill.is_cancelled() {
                    return None;
                }
                if let Ok(c) = rx.try_recv() {
                    return Some(c);
                }
                let start = Instant::now();
                let r = tokio::select! {
                    biased;
                    _ = shared.kill.cancelled() => None,
                    c = rx.recv() => c.ok(),
                };
                stats.idle_ns.add(start.elapsed().as_nanos() as u64);
                r
            }
        }
    }
}

/// A worker whose results go straight downstream.
pub(crate) async fn worker<T, U, P>(
    ctx: Arc<StageCtx<T>>,
    p: Arc<P>,
    input: Input<T>,
    mut em: Emitter<U>,
) where
    T: Send + 'static,
    U: Send + 'static,
    P: Process<T, U>,
{
    let shared = ctx.shared.clone();
    loop {
        if shared.kill.is_cancelled() {
            break;
        }
        let chunk = match input.try_recv() {
            Some(c) => c,
            None => {
                // About to wait: send the partial chunk first (latency).
                if em.flush().await.is_err() {
                    break;
                }
                match input.recv(&shared, &ctx.stats).await {
                    Some(c) => c,
                    None => break,
                }
            }
        };
        let start = Instant::now();
        let mut out = Vec::with_capacity(chunk.len().min(em.chunk()));
        let flow = p.process(&ctx, chunk, &mut out).await;
        ctx.stats.busy_ns.add(start.elapsed().as_nanos() as u64);
        let sent = em.emit_vec(out).await;
        if flow == Flow::Stop || sent.is_err() {
            break;
        }
    }
    let _ = em.flush().await;
}

/// A worker of an ordered stage: one output vector (maybe empty) per input
/// chunk, so that the collector can restore the order.
async fn ordered_worker<T, U, P>(
    ctx: Arc<StageCtx<T>>,
    p: Arc<P>,
    rx: async_channel::Receiver<Vec<T>>,
    tx: async_channel::Sender<Vec<U>>,
    target: Arc<StageStats>,
) where
    T: Send + 'static,
    U: Send + 'static,
    P: Process<T, U>,
{
    let shared = ctx.shared.clone();
    let input = Input::Own(rx);
    while let Some(chunk) = input.recv(&shared, &ctx.stats).await {
        let start = Instant::now();
        let mut out = Vec::with_capacity(chunk.len());
        let flow = p.process(&ctx, chunk, &mut out).await;
        ctx.stats.busy_ns.add(start.elapsed().as_nanos() as u64);
        if flow == Flow::Stop {
            // Completed but never emitted.
            ctx.stats.emitted.add(out.len() as u64);
            target.cancelled.add(out.len() as u64);
            break;
        }
        let n = out.len() as u64;
        let start = Instant::now();
        let sent = tokio::select! {
            biased;
            _ = shared.kill.cancelled() => Err(n),
            r = tx.send(out) => r.map_err(|e| e.0.len() as u64),
        };
        ctx.stats.blocked_ns.add(start.elapsed().as_nanos() as u64);
        if let Err(lost) = sent {
            // Completed but never emitted.
            ctx.stats.emitted.add(lost);
            target.cancelled.add(lost);
            break;
        }
    }
}

async fn send_own<T>(
    shared: &Shared,
    stats: &StageStats,
    tx: &async_channel::Sender<Vec<T>>,
    chunk: Vec<T>,
) -> bool {
    let n = chunk.len() as u64;
    if n == 0 {
        return true;
    }
    let r = tokio::select! {
        biased;
        _ = shared.kill.cancelled() => Err(n),
        r = tx.send(chunk) => r.map_err(|e| e.0.len() as u64),
    };
    match r {
        Ok(()) => true,
        Err(lost) => {
            stats.cancelled.add(lost);
            false
        }
    }
}

/// Hands input chunks to the workers in turn.
async fn round_robin<T: Send + 'static>(
    shared: Arc<Shared>,
    stats: Arc<StageStats>,
    inlet: Inlet<T>,
    txs: Vec<async_channel::Sender<Vec<T>>>,
) {
    let mut i = 0;
    while let Some(chunk) = inlet.recv_uncounted(&shared).await {
        if chunk.is_empty() {
            continue;
        }
        if !send_own(&shared, &stats, &txs[i], chunk).await {
            break;
        }
        i = (i + 1) % txs.len();
    }
}

/// Collects the workers' outputs in the order the chunks were handed out.
async fn collect_in_turn<U: Send + 'static>(
    rxs: Vec<async_channel::Receiver<Vec<U>>>,
    mut em: Emitter<U>,
) {
    let mut i = 0;
    loop {
        let v = match rxs[i].try_recv() {
            Ok(v) => v,
            Err(_) => {
                if em.flush().await.is_err() {
                    return;
                }
                // A closed, empty channel in turn means every worker is done.
                match rxs[i].recv().await {
                    Ok(v) => v,
                    Err(_) => break,
                }
            }
        };
        if em.emit_vec(v).await.is_err() {
            return;
        }
        i = (i + 1) % rxs.len();
    }
    let _ = em.flush().await;
}

/// Routes each item to the worker its key hashes to.
async fn by_key<T: Send + 'static>(
    ctx: Arc<StageCtx<T>>,
    inlet: Inlet<T>,
    key: KeyFn<T>,
    txs: Vec<async_channel::Sender<Vec<T>>>,
) {
    let mut bufs: Vec<Vec<T>> = (0..txs.len()).map(|_| Vec::new()).collect();
    route(&ctx, &inlet, &key, &txs, &mut bufs).await;
    let rest: usize = bufs.iter().map(Vec::len).sum();
    ctx.stats.cancelled.add(rest as u64);
}

async fn route<T: Send + 'static>(
    ctx: &StageCtx<T>,
    inlet: &Inlet<T>,
    key: &KeyFn<T>,
    txs: &[async_channel::Sender<Vec<T>>],
    bufs: &mut [Vec<T>],
) {
    let (shared, stats) = (&*ctx.shared, &*ctx.stats);
    let n = txs.len() as u64;
    while let Some(chunk) = inlet.recv_uncounted(shared).await {
        let mut it = chunk.into_iter();
        while let Some(item) = it.next() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| key(&item))) {
                Ok(k) => bufs[(k % n) as usize].push(item),
                Err(p) => {
                    // The item never reaches a worker: the dispatcher applies
                    // the stage's policy to it (it still has the item).
                    stats.received.incr();
                    let p = Panicked::from_payload(p.as_ref());
                    if ctx.give_up(Some(item), p.into()) == Flow::Stop {
                        stats.cancelled.add(it.len() as u64);
                        return;
                    }
                }
            }
        }
        for (buf, tx) in bufs.iter_mut().zip(txs) {
            if !send_own(shared, stats, tx, std::mem::take(buf)).await {
                return;
            }
        }
    }
}

/// Spawns the tasks of a stage with `workers` workers in `mode`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_workers<T, U, P>(
    w: &mut Wiring,
    ctx: Arc<StageCtx<T>>,
    workers: usize,
    mode: crate::stage::Mode<T>,
    p: P,
    inlet: Inlet<T>,
    out: crate::channel::Outlet<U>,
    partition_slots: usize,
) where
    T: Send + 'static,
    U: Send + 'static,
    P: Process<T, U>,
{
    use crate::stage::Mode;
    let p = Arc::new(p);
    let shared = w.shared.clone();
    let stats = ctx.stats.clone();
    let mode = if workers == 1 { Mode::Unordered } else { mode };
    match mode {
        Mode::Unordered => {
            for _ in 0..workers {
                let em = Emitter::new(out.clone(), stats.clone(), shared.clone());
                w.spawn(worker(
                    ctx.clone(),
                    p.clone(),
                    Input::Shared(inlet.clone()),
                    em,
                ));
            }
        }
        Mode::Ordered => {
            let mut txs = Vec::with_capacity(workers);
            let mut out_rxs = Vec::with_capacity(workers);
            for _ in 0..workers {
                let (tx, rx) = async_channel::bounded::<Vec<T>>(2);
                let (otx, orx) = async_channel::bounded::<Vec<U>>(2);
                w.leftover_channel(rx.clone(), stats.clone(), None);
                w.leftover_channel(orx.clone(), out.target.stats.clone(), Some(stats.clone()));
                txs.push(tx);
                out_rxs.push(orx);
                w.spawn(ordered_worker(
                    ctx.clone(),
                    p.clone(),
                    rx,
                    otx,
                    out.target.stats.clone(),
                ));
            }
            w.spawn(round_robin(shared.clone(), stats.clone(), inlet, txs));
            let em = Emitter::new(out, stats, shared);
            w.spawn(collect_in_turn(out_rxs, em));
        }
        Mode::Keyed(key) => {
            let mut txs = Vec::with_capacity(workers);
            // Each partition gets its share of the stage's capacity, so that
            // one busy key does not hold the dispatcher (and every other key)
            // back for long.
            for _ in 0..workers {
                let (tx, rx) = async_channel::bounded::<Vec<T>>(partition_slots.max(2));
                w.leftover_channel(rx.clone(), stats.clone(), None);
                txs.push(tx);
                let em = Emitter::new(out.clone(), stats.clone(), shared.clone());
                w.spawn(worker(ctx.clone(), p.clone(), Input::Own(rx), em));
            }
            w.spawn(by_key(ctx, inlet, key, txs));
        }
    }
}

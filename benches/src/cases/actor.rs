//! Actors: weft-actor against kameo, ractor and a hand-rolled tokio
//! mpsc + oneshot actor, on multi-thread (`/mt`) and current-thread (`/ct`)
//! runtimes.
//!
//! - `actor-tell/*`: 100 actors, messages sent round robin by one producer,
//!   a task on the runtime; each message carries a semaphore permit released
//!   when it is handled, so the time covers processing, not just enqueueing
//!   (at most 1,024 in flight). `actor-tell/mt-external` sends from a thread
//!   outside the runtime, where most sends wake a sleeping worker thread.
//! - `actor-ask/*`: sequential ask round trips to one actor (ns per ask),
//!   asked from a task on the runtime (as a request handler asks);
//!   `actor-ask/mt-external` asks from a thread outside the runtime, where
//!   each round trip wakes two sleeping threads and the OS's wake-up latency
//!   dominates.
//! - `actor-spawn/*`: cost of spawning one actor (ns per actor; stopping is
//!   not timed).
//! - `actor-idle-memory`: resident memory per idle actor (bytes), from the
//!   growth of the process's RSS over 20,000 idle actors: approximate.
//!
//! The targets are set on the cases where senders are tasks on the runtime,
//! as they are in a service. The `-external` cases are printed for
//! completeness: on this 2-core VM their figures swing by ±50% between runs,
//! because what they time is mostly how fast the OS wakes a sleeping thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::workload;
use crate::{Ctx, Group, Row, Target, Unit};

/// The actor group.
pub const GROUP: Group = Group {
    name: "actor",
    run,
    overheads: &[],
    targets: &[
        t("actor-tell/mt", "kameo", 1.2),
        t("actor-tell/mt", "ractor", 1.2),
        t("actor-tell/mt", RAW, 0.8),
        t("actor-tell/ct", "kameo", 1.2),
        t("actor-tell/ct", "ractor", 1.2),
        t("actor-tell/ct", RAW, 0.8),
        t("actor-ask/mt", "kameo", 1.0),
        t("actor-ask/mt", RAW, 0.8),
        t("actor-ask/ct", "kameo", 1.0),
        t("actor-ask/ct", RAW, 0.8),
        t("actor-spawn/mt", RAW, 0.8),
        t("actor-spawn/ct", RAW, 0.8),
    ],
};

const fn t(case: &'static str, peer: &'static str, at_least: f64) -> Target {
    Target {
        case,
        weft: WEFT,
        peer,
        at_least,
    }
}

/// weft's row name.
pub const WEFT: &str = "weft-actor";
/// weft's ask with the ask timeout turned off (the default is 5 s), to show
/// what the timer costs.
pub const WEFT_NO_TIMEOUT: &str = "weft-actor-no-timeout";
/// The hand-rolled tokio actor's row name.
pub const RAW: &str = "tokio-mpsc-actor";
/// Every implementation, by row name.
pub const IMPLS: [&str; 4] = [WEFT, "kameo", "ractor", RAW];
/// Actors in the tell case.
pub const ACTORS: usize = 100;
/// Messages in flight at most in the tell case (semaphore permits).
pub const IN_FLIGHT: usize = 1_024;

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let (tells, asks, spawns) = if ctx.quick {
        (100_000u64, 5_000u64, 2_000u64)
    } else {
        (1_000_000, 50_000, 20_000)
    };
    // Memory first, before the other cases free memory the allocator
    // would hand back out; every implementation's actors stay alive until
    // all are measured, for the same reason.
    let case = "actor-idle-memory";
    if ctx.wants(case) {
        let rt = workload::current_thread();
        let n = if ctx.quick { 20_000 } else { 50_000 };
        let mut keep = Vec::new();
        for imp in IMPLS {
            let (bytes, refs) = rt.block_on(idle_memory(imp, n));
            keep.push(refs);
            rows.push(Row::new(case, imp, bytes as f64, Unit::Bytes));
        }
        rt.block_on(async {
            for refs in keep {
                stop_all(refs).await;
            }
        });
    }
    // The implementations take turns within each sample round (rather than
    // running all samples of one, then the next), so that load from other
    // processes on a shared machine falls on all of them alike; each row is
    // the median of its samples.
    let rounds = if ctx.quick { 5 } else { 9 };
    for (flavor, rt) in [
        ("mt", workload::runtime()),
        ("ct", workload::current_thread()),
    ] {
        let case = format!("actor-tell/{flavor}");
        if ctx.wants(&case) {
            // The sender is a task on the runtime, as a request handler is.
            let times = interleaved(rounds, &IMPLS, |imp| {
                let imp = imp.to_owned();
                in_task(&rt, async move { tell(&imp, tells).await })
            });
            push_rate(rows, &case, &IMPLS, tells, times);
        }
        let case = format!("actor-tell/{flavor}-external");
        if flavor == "mt" && ctx.wants(&case) {
            // The sender is a thread outside the runtime (`block_on`).
            let times = interleaved(rounds, &IMPLS, |imp| rt.block_on(tell(imp, tells)));
            push_rate(rows, &case, &IMPLS, tells, times);
        }
        let imps = [WEFT, "kameo", "ractor", RAW, WEFT_NO_TIMEOUT];
        let case = format!("actor-ask/{flavor}");
        if ctx.wants(&case) {
            // The asker is a task on the runtime, as a request handler is.
            let times = interleaved(rounds, &imps, |imp| {
                let imp = imp.to_owned();
                in_task(&rt, async move { ask(&imp, asks).await })
            });
            for (imp, d) in imps.iter().zip(times) {
                rows.push(per_call(&case, imp, d, asks));
            }
        }
        let case = format!("actor-ask/{flavor}-external");
        if flavor == "mt" && ctx.wants(&case) {
            // The asker is a thread outside the runtime (`block_on`): every
            // round trip wakes two sleeping threads, so this mostly measures
            // the OS's thread wake-up latency.
            let times = interleaved(rounds, &imps, |imp| rt.block_on(ask(imp, asks)));
            for (imp, d) in imps.iter().zip(times) {
                rows.push(per_call(&case, imp, d, asks));
            }
        }
        let case = format!("actor-spawn/{flavor}");
        if ctx.wants(&case) {
            let times = interleaved(rounds, &IMPLS, |imp| {
                rt.block_on(spawn(imp, spawns as usize))
            });
            for (imp, d) in IMPLS.iter().zip(times) {
                rows.push(per_call(&case, imp, d, spawns));
            }
        }
    }
}

fn push_rate(rows: &mut Vec<Row>, case: &str, imps: &[&str], n: u64, times: Vec<Duration>) {
    for (imp, d) in imps.iter().zip(times) {
        rows.push(Row::new(
            case,
            *imp,
            n as f64 / d.as_secs_f64(),
            Unit::ItemsPerSec,
        ));
    }
}

/// Runs `f` for every implementation in turn, `rounds` times (see
/// [`crate::interleaved`]), and returns each implementation's median.
fn interleaved(rounds: usize, imps: &[&str], f: impl FnMut(&str) -> Duration) -> Vec<Duration> {
    let f = std::cell::RefCell::new(f);
    let mut fs: Vec<Box<dyn FnMut() -> Duration + '_>> = imps
        .iter()
        .map(|imp| Box::new(|| (f.borrow_mut())(imp)) as Box<dyn FnMut() -> Duration + '_>)
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Duration> = fs
        .iter_mut()
        .map(|f| &mut **f as &mut dyn FnMut() -> Duration)
        .collect();
    crate::interleaved(rounds, &mut refs)
}

/// Runs `f` as a task on `rt` (a request handler's place) and waits for it.
fn in_task<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async move { tokio::spawn(f).await.expect("benchmark task") })
}

fn per_call(case: &str, imp: &str, d: Duration, calls: u64) -> Row {
    Row::new(
        case,
        imp,
        d.as_nanos() as f64 / calls as f64,
        Unit::NsPerCall,
    )
}

// ---------------------------------------------------------------- weft

/// weft's bench actor.
#[derive(Debug)]
pub struct WeftWorker;

/// Its one message type.
#[derive(Debug)]
pub enum WeftMsg {
    /// Release the permit.
    Work(OwnedSemaphorePermit),
    /// Answer 1.
    Ping(weft_actor::Reply<u64>),
}

impl weft_actor::Actor for WeftWorker {
    type Msg = WeftMsg;
    async fn handle(&mut self, msg: WeftMsg, _ctx: &mut weft_actor::Context<Self>) {
        match msg {
            WeftMsg::Work(permit) => drop(permit),
            WeftMsg::Ping(reply) => {
                let _ = reply.send(1);
            }
        }
    }
}

// ---------------------------------------------------------------- kameo

/// kameo's bench actor.
#[derive(Debug)]
pub struct KameoWorker;

/// A permit to release.
#[derive(Debug)]
pub struct KWork(pub OwnedSemaphorePermit);
/// Answer 1.
#[derive(Debug)]
pub struct KPing;

impl kameo::Actor for KameoWorker {
    type Args = Self;
    type Error = kameo::error::Infallible;
    async fn on_start(
        args: Self,
        _actor_ref: kameo::actor::ActorRef<Self>,
    ) -> Result<Self, Self::Error> {
        Ok(args)
    }
}

impl kameo::message::Message<KWork> for KameoWorker {
    type Reply = ();
    async fn handle(
        &mut self,
        msg: KWork,
        _ctx: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> Self::Reply {
        drop(msg);
    }
}

impl kameo::message::Message<KPing> for KameoWorker {
    type Reply = u64;
    async fn handle(
        &mut self,
        _msg: KPing,
        _ctx: &mut kameo::message::Context<Self, Self::Reply>,
    ) -> Self::Reply {
        1
    }
}

// ---------------------------------------------------------------- ractor

/// ractor's bench actor.
#[derive(Debug)]
pub struct RactorWorker;

/// Its message type.
#[derive(Debug)]
pub enum RMsg {
    /// Release the permit.
    Work(OwnedSemaphorePermit),
    /// Answer 1.
    Ping(ractor::RpcReplyPort<u64>),
}

impl ractor::Actor for RactorWorker {
    type Msg = RMsg;
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<RMsg>,
        _args: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _myself: ractor::ActorRef<RMsg>,
        msg: RMsg,
        _state: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            RMsg::Work(permit) => drop(permit),
            RMsg::Ping(port) => {
                let _ = port.send(1);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- raw tokio

/// The hand-rolled actor's message type.
#[derive(Debug)]
pub enum RawMsg {
    /// Release the permit.
    Work(OwnedSemaphorePermit),
    /// Answer 1.
    Ping(oneshot::Sender<u64>),
}

/// Spawns the hand-rolled actor: a task draining a bounded mpsc channel.
pub fn raw_spawn() -> (mpsc::Sender<RawMsg>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<RawMsg>(64);
    let handle = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                RawMsg::Work(permit) => drop(permit),
                RawMsg::Ping(tx) => {
                    let _ = tx.send(1);
                }
            }
        }
    });
    (tx, handle)
}

// ---------------------------------------------------------------- cases

enum Refs {
    Weft(Vec<weft_actor::ActorRef<WeftWorker>>),
    Kameo(Vec<kameo::actor::ActorRef<KameoWorker>>),
    Ractor(Vec<(ractor::ActorRef<RMsg>, tokio::task::JoinHandle<()>)>),
    Raw(Vec<(mpsc::Sender<RawMsg>, tokio::task::JoinHandle<()>)>),
}

async fn spawn_n(imp: &str, n: usize) -> Refs {
    match imp {
        WEFT => Refs::Weft((0..n).map(|_| weft_actor::spawn(WeftWorker)).collect()),
        WEFT_NO_TIMEOUT => Refs::Weft(
            (0..n)
                .map(|_| {
                    weft_actor::Builder::new()
                        .ask_timeout(None)
                        .spawn(WeftWorker)
                        .expect("valid")
                })
                .collect(),
        ),
        "kameo" => {
            use kameo::actor::Spawn;
            Refs::Kameo((0..n).map(|_| KameoWorker::spawn(KameoWorker)).collect())
        }
        "ractor" => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(
                    ractor::Actor::spawn(None, RactorWorker, ())
                        .await
                        .expect("ractor spawn"),
                );
            }
            Refs::Ractor(v)
        }
        RAW => Refs::Raw((0..n).map(|_| raw_spawn()).collect()),
        other => panic!("unknown actor impl {other}"),
    }
}

async fn stop_all(refs: Refs) {
    match refs {
        Refs::Weft(v) => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            for a in &v {
                a.stop_now();
            }
            for a in &v {
                let _ = a.stop(deadline).await;
            }
        }
        Refs::Kameo(v) => {
            for a in &v {
                let _ = a.stop_gracefully().await;
            }
            for a in &v {
                a.wait_for_shutdown().await;
            }
        }
        Refs::Ractor(v) => {
            for (a, _) in &v {
                a.stop(None);
            }
            for (_, h) in v {
                let _ = h.await;
            }
        }
        Refs::Raw(v) => {
            let handles: Vec<_> = v.into_iter().map(|(_, h)| h).collect();
            for h in handles {
                let _ = h.await;
            }
        }
    }
}

/// Sends `msgs` messages round robin to [`ACTORS`] actors, each carrying a
/// permit released when handled; returns the time until all were handled.
pub async fn tell(imp: &str, msgs: u64) -> Duration {
    let refs = spawn_n(imp, ACTORS).await;
    let sem = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = Instant::now();
    for i in 0..msgs as usize {
        let permit = sem.clone().acquire_owned().await.expect("open");
        let k = i % ACTORS;
        match &refs {
            Refs::Weft(v) => v[k].tell(WeftMsg::Work(permit)).await.expect("tell"),
            Refs::Kameo(v) => v[k].tell(KWork(permit)).send().await.expect("tell"),
            Refs::Ractor(v) => v[k].0.cast(RMsg::Work(permit)).expect("cast"),
            Refs::Raw(v) => v[k].0.send(RawMsg::Work(permit)).await.expect("send"),
        }
    }
    let _all = sem.acquire_many(IN_FLIGHT as u32).await.expect("open");
    let elapsed = start.elapsed();
    stop_all(refs).await;
    elapsed
}

/// `n` sequential ask round trips to one actor.
pub async fn ask(imp: &str, n: u64) -> Duration {
    let refs = spawn_n(imp, 1).await;
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..n {
        sum += match &refs {
            Refs::Weft(v) => v[0].ask_with(WeftMsg::Ping).await.expect("ask"),
            Refs::Kameo(v) => v[0].ask(KPing).send().await.expect("ask"),
            Refs::Ractor(v) => match v[0].0.call(RMsg::Ping, None).await.expect("call") {
                ractor::rpc::CallResult::Success(x) => x,
                _ => panic!("ractor call failed"),
            },
            Refs::Raw(v) => {
                let (tx, rx) = oneshot::channel();
                v[0].0.send(RawMsg::Ping(tx)).await.expect("send");
                rx.await.expect("reply")
            }
        };
    }
    let elapsed = start.elapsed();
    assert_eq!(sum, n);
    stop_all(refs).await;
    elapsed
}

/// Time to spawn `n` actors (not counting stopping them).
pub async fn spawn(imp: &str, n: usize) -> Duration {
    let start = Instant::now();
    let refs = spawn_n(imp, n).await;
    let elapsed = start.elapsed();
    stop_all(refs).await;
    elapsed
}

/// Approximate resident bytes per idle actor, over `n` actors, and the
/// actors (still alive).
async fn idle_memory(imp: &str, n: usize) -> (u64, Refs) {
    let before = crate::workload::resident_bytes().unwrap_or(0);
    let refs = spawn_n(imp, n).await;
    // Let every actor start and park on its empty mailbox.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let after = crate::workload::resident_bytes().unwrap_or(0);
    (after.saturating_sub(before) / n as u64, refs)
}

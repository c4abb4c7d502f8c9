//! ActorRef, mailbox, asks, panics, and stopping.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};
use weft_actor::{
    Actor, ActorRef, AskError, AskFor, BuildError, Builder, Context, Exit, Reply, SendError,
};
use weft_core::{Drain, Overflow, OverflowError};

#[derive(Default)]
struct Acc {
    seen: Vec<u32>,
    dropped: Option<Arc<AtomicBool>>,
}

enum Msg {
    Add(u32),
    Sleep(Duration),
    Panic,
    Get(Reply<Vec<u32>>),
    StopSelf,
    Ignore(Reply<u32>),
}

impl Drop for Acc {
    fn drop(&mut self) {
        if let Some(flag) = &self.dropped {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Actor for Acc {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
        match msg {
            Msg::Add(n) => self.seen.push(n),
            Msg::Sleep(d) => tokio::time::sleep(d).await,
            Msg::Panic => panic!("bad message"),
            Msg::Get(r) => {
                let _ = r.send(self.seen.clone());
            }
            Msg::StopSelf => ctx.stop(),
            Msg::Ignore(_r) => {}
        }
    }
}

struct Get;
impl AskFor<Get> for Acc {
    type Reply = Vec<u32>;
    fn wrap(_: Get, reply: Reply<Vec<u32>>) -> Msg {
        Msg::Get(reply)
    }
}

fn collected() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(Msg) + Send + Sync + 'static,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (log, move |m: Msg| {
        let tag = match m {
            Msg::Add(n) => format!("add{n}"),
            Msg::Sleep(_) => "sleep".into(),
            Msg::Panic => "panic".into(),
            Msg::Get(_) => "get".into(),
            Msg::StopSelf => "stop".into(),
            Msg::Ignore(_) => "ignore".into(),
        };
        l.lock().unwrap().push(tag);
    })
}

#[tokio::test]
async fn tell_then_ask_sees_messages_in_order() {
    let a = weft_actor::spawn(Acc::default());
    for i in 0..100 {
        a.tell(Msg::Add(i)).await.unwrap();
    }
    assert_eq!(
        a.ask_with(Msg::Get).await.unwrap(),
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(a.ask(Get).await.unwrap().len(), 100);
    let s = a.stats();
    assert_eq!(s.accepted, 102);
    assert_eq!(s.completed, 102);
}

#[tokio::test(start_paused = true)]
async fn try_tell_hands_the_message_back_when_full() {
    let a = Builder::new().capacity(2).spawn(Acc::default()).unwrap();
    a.tell(Msg::Sleep(Duration::from_secs(10))).await.unwrap();
    tokio::task::yield_now().await; // the actor takes the sleep message
    a.try_tell(Msg::Add(1)).unwrap();
    a.try_tell(Msg::Add(2)).unwrap();
    match a.try_tell(Msg::Add(3)) {
        Err(SendError::Full(Msg::Add(3))) => {}
        other => panic!("expected Full(Add(3)), got {other:?}"),
    }
    assert_eq!(a.stats().rejected, 1);
    // Block: tell waits for room.
    let a2 = a.clone();
    let t = tokio::spawn(async move { a2.tell(Msg::Add(3)).await.is_ok() });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!t.is_finished());
    assert!(t.await.unwrap());
    assert_eq!(a.ask_with(Msg::Get).await.unwrap(), vec![1, 2, 3]);
}

#[tokio::test]
async fn reject_policy_refuses_at_once() {
    let a = Builder::new()
        .capacity(1)
        .overflow(Overflow::Reject)
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_millis(50))).await.unwrap();
    tokio::task::yield_now().await;
    a.tell(Msg::Add(1)).await.unwrap();
    let err = a.tell(Msg::Add(2)).await.unwrap_err();
    assert!(matches!(err.into_inner(), Msg::Add(2)));
}

#[tokio::test]
async fn drop_oldest_hands_evicted_messages_to_the_hook() {
    let (log, hook) = collected();
    let a = Builder::new()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .on_undelivered(hook)
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_millis(20))).await.unwrap();
    tokio::task::yield_now().await;
    for i in 0..4 {
        a.tell(Msg::Add(i)).await.unwrap();
    }
    assert_eq!(*log.lock().unwrap(), vec!["add0", "add1"]);
    let r = a.stop(Instant::now() + Duration::from_secs(1)).await;
    assert_eq!((r.accepted, r.completed, r.returned), (5, 3, 2));
    assert!(r.is_balanced(), "{r}");
}

#[tokio::test]
async fn zero_capacity_is_refused() {
    let err = Builder::<Msg>::new()
        .capacity(0)
        .spawn(Acc::default())
        .unwrap_err();
    assert_eq!(err, BuildError::Overflow(OverflowError::ZeroCapacity));
    assert!(err.to_string().contains("at least 1"));
}

#[tokio::test(start_paused = true)]
async fn ask_times_out_on_a_slow_actor() {
    let a = Builder::new()
        .ask_timeout(Some(Duration::from_millis(100)))
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_secs(1))).await.unwrap();
    let start = Instant::now();
    let err = a.ask_with(Msg::Get).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // A longer explicit timeout succeeds.
    let got = a
        .ask_timeout(Msg::Get, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn unanswered_reply_is_no_reply() {
    let a = weft_actor::spawn(Acc::default());
    let err = a.ask_with(Msg::Ignore).await.unwrap_err();
    assert!(matches!(err, AskError::NoReply), "{err:?}");
}

struct PanicOnAsk;
impl Actor for PanicOnAsk {
    type Msg = Reply<u32>;
    async fn handle(&mut self, reply: Reply<u32>, _: &mut Context<Self>) {
        let _keep = reply;
        panic!("kaboom {}", 7);
    }
}

#[tokio::test]
async fn a_panic_reaches_the_ask_and_stops_a_standalone_actor() {
    let a = weft_actor::spawn(PanicOnAsk);
    let err = a.ask_with(|r| r).await.unwrap_err();
    match &err {
        AskError::Panicked(p) => assert_eq!(p.message(), "kaboom 7"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    match a.wait().await {
        Exit::Panicked(p) => assert_eq!(p.message(), "kaboom 7"),
        other => panic!("{other:?}"),
    }
    assert!(!a.is_alive());
    let err = a.try_tell(Reply::<u32>::detached()).unwrap_err();
    assert!(err.is_stopped());
    let s = a.stats();
    assert_eq!((s.failed, s.rejected_after_close), (1, 1));
}

#[tokio::test]
async fn panic_with_queued_messages_hands_them_to_the_hook() {
    let (log, hook) = collected();
    let a = Builder::new()
        .on_undelivered(hook)
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_millis(10))).await.unwrap();
    a.tell(Msg::Panic).await.unwrap();
    a.tell(Msg::Add(1)).await.unwrap();
    a.tell(Msg::Add(2)).await.unwrap();
    assert!(matches!(a.wait().await, Exit::Panicked(_)));
    assert_eq!(*log.lock().unwrap(), vec!["add1", "add2"]);
    let r = a.stop(Instant::now()).await;
    assert_eq!(
        (r.accepted, r.completed, r.failed, r.returned),
        (4, 1, 1, 2)
    );
    assert!(r.is_balanced(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_drains_the_queue_and_refuses_new_messages() {
    let dropped = Arc::new(AtomicBool::new(false));
    let a = weft_actor::spawn(Acc {
        dropped: Some(dropped.clone()),
        seen: Vec::new(),
    });
    a.tell(Msg::Sleep(Duration::from_millis(100)))
        .await
        .unwrap();
    for i in 0..10 {
        a.tell(Msg::Add(i)).await.unwrap();
    }
    let stopper = {
        let a = a.clone();
        tokio::spawn(async move { a.stop(Instant::now() + Duration::from_secs(5)).await })
    };
    tokio::task::yield_now().await;
    let err = a.tell(Msg::Add(99)).await.unwrap_err();
    assert!(err.is_stopped());
    let r = stopper.await.unwrap();
    assert_eq!(r.completed, 11);
    assert_eq!(r.rejected_after_close, 1);
    assert!(r.is_clean(), "{r}");
    assert_eq!(a.wait().await, Exit::Stopped);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the actor's state is dropped: no task left"
    );
    // Drain again: same totals.
    let again = Drain::drain(&a, Instant::now()).await;
    assert_eq!(again.completed, 11);
}

#[tokio::test(start_paused = true)]
async fn stop_deadline_kills_a_stuck_actor() {
    let (log, hook) = collected();
    let dropped = Arc::new(AtomicBool::new(false));
    let a = Builder::new()
        .on_undelivered(hook)
        .spawn(Acc {
            dropped: Some(dropped.clone()),
            seen: Vec::new(),
        })
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_secs(3600))).await.unwrap();
    a.tell(Msg::Add(1)).await.unwrap();
    let start = Instant::now();
    let r = a.stop(Instant::now() + Duration::from_secs(2)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!((r.accepted, r.aborted, r.returned), (2, 1, 1));
    assert!(r.is_balanced() && !r.is_clean(), "{r}");
    assert_eq!(*log.lock().unwrap(), vec!["add1"]);
    assert_eq!(a.wait().await, Exit::Killed);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn stop_now_overtakes_queued_messages() {
    let (log, hook) = collected();
    let a = Builder::new()
        .on_undelivered(hook)
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_millis(10))).await.unwrap();
    tokio::task::yield_now().await;
    for i in 0..5 {
        a.tell(Msg::Add(i)).await.unwrap();
    }
    a.stop_now();
    assert_eq!(a.wait().await, Exit::Stopped);
    assert_eq!(
        log.lock().unwrap().len(),
        5,
        "queued messages were not handled"
    );
    let s = a.stats();
    assert_eq!((s.completed, s.returned), (1, 5));
}

#[tokio::test]
async fn ctx_stop_ends_a_standalone_actor_normally() {
    let a = weft_actor::spawn(Acc::default());
    a.tell(Msg::StopSelf).await.unwrap();
    assert_eq!(a.wait().await, Exit::Normal);
}

#[tokio::test(start_paused = true)]
async fn actor_ref_is_a_tower_service() {
    let a = weft_actor::spawn(Acc::default());
    a.tell(Msg::Add(5)).await.unwrap();
    let got = a.clone().oneshot(Get).await.unwrap();
    assert_eq!(got, vec![5]);

    // Through a timeout layer, against a slow actor.
    a.tell(Msg::Sleep(Duration::from_secs(10))).await.unwrap();
    let mut svc = tower::ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(a.clone());
    let err = svc.ready().await.unwrap().call(Get).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");

    // A stopped actor fails poll_ready with a weft error.
    a.kill();
    a.wait().await;
    let mut svc = a.clone();
    let err = match svc.ready().await {
        Err(e) => e,
        Ok(_) => panic!("a stopped actor must not be ready"),
    };
    let e = err.downcast_ref::<AskError<()>>().expect("weft error");
    assert!(matches!(e, AskError::Send(SendError::Stopped(()))));
}

#[tokio::test]
async fn service_reports_panics() {
    struct P;
    struct Req;
    impl Actor for P {
        type Msg = Reply<()>;
        async fn handle(&mut self, r: Reply<()>, _: &mut Context<Self>) {
            let _r = r;
            panic!("service boom");
        }
    }
    impl AskFor<Req> for P {
        type Reply = ();
        fn wrap(_: Req, r: Reply<()>) -> Reply<()> {
            r
        }
    }
    let a: ActorRef<P> = weft_actor::spawn(P);
    let err = a.oneshot(Req).await.unwrap_err();
    let e = err.downcast_ref::<AskError<()>>().unwrap();
    assert!(e.is_panicked());
}

#[test]
fn many_actors_on_a_multi_thread_runtime_lose_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        struct Count(Arc<AtomicUsize>);
        impl Actor for Count {
            type Msg = u32;
            async fn handle(&mut self, _: u32, _: &mut Context<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        let actors: Vec<_> = (0..20)
            .map(|_| weft_actor::spawn(Count(n.clone())))
            .collect();
        let mut senders = Vec::new();
        for s in 0..4 {
            let actors = actors.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..5_000u32 {
                    actors[(i as usize + s) % actors.len()]
                        .tell(i)
                        .await
                        .unwrap();
                }
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for a in &actors {
            let r = a.stop(deadline).await;
            assert!(r.is_clean(), "{r}");
        }
        assert_eq!(n.load(Ordering::Relaxed), 20_000);
    });
}

#[tokio::test(start_paused = true)]
async fn ask_timeout_also_bounds_the_wait_for_mailbox_room() {
    let a = Builder::new()
        .capacity(1)
        .ask_timeout(Some(Duration::from_millis(300)))
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_secs(60))).await.unwrap();
    tokio::task::yield_now().await;
    a.tell(Msg::Add(1)).await.unwrap(); // fills the mailbox
    let start = Instant::now();
    let err = a.ask_with(Msg::Get).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(a.stats().accepted, 2, "the timed-out ask was never queued");
    // The message comes back with the error, as every refusal hands it back.
    assert!(
        matches!(err.into_inner(), Some(Msg::Get(_))),
        "the message is handed back"
    );
}

/// On a multi-thread runtime an ask from a task yields once, then arms its
/// deadline timer; a reply that comes only after that (the handler waits
/// on a gate the test opens later) still arrives, and quick asks from a
/// task on the runtime (the yield path) all come back.
#[test]
fn asks_from_tasks_on_a_multi_thread_runtime_get_their_replies() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        struct Gated(Option<tokio::sync::oneshot::Receiver<()>>);
        enum G {
            Wait(Reply<u32>),
            Echo(u32, Reply<u32>),
        }
        impl Actor for Gated {
            type Msg = G;
            async fn handle(&mut self, msg: G, _: &mut Context<Self>) {
                match msg {
                    G::Wait(r) => {
                        if let Some(gate) = self.0.take() {
                            gate.await.unwrap();
                        }
                        let _ = r.send(7);
                    }
                    G::Echo(x, r) => {
                        let _ = r.send(x);
                    }
                }
            }
        }
        let (open, gate) = tokio::sync::oneshot::channel();
        let a = weft_actor::spawn(Gated(Some(gate)));
        let slow = tokio::spawn({
            let a = a.clone();
            async move { a.ask_with(G::Wait).await }
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!slow.is_finished(), "the handler is still gated");
        open.send(()).unwrap();
        assert_eq!(slow.await.unwrap().unwrap(), 7);

        let quick = tokio::spawn({
            let a = a.clone();
            async move {
                let mut sum = 0u64;
                for i in 0..2_000u32 {
                    sum += u64::from(a.ask_with(|r| G::Echo(i, r)).await.unwrap());
                }
                sum
            }
        });
        assert_eq!(quick.await.unwrap(), (0..2_000u64).sum::<u64>());
        let r = a.stop(Instant::now() + Duration::from_secs(10)).await;
        assert!(r.is_clean(), "{r}");
    });
}

/// Through the tower `Service`, the ask timeout counts from `call`: a
/// response awaited only later times out at once if the timeout has
/// already passed, instead of waiting a whole timeout more.
#[tokio::test(start_paused = true)]
async fn a_service_call_times_out_from_the_call_not_from_the_first_poll() {
    let mut a = Builder::new()
        .ask_timeout(Some(Duration::from_secs(1)))
        .spawn(Acc::default())
        .unwrap();
    a.tell(Msg::Sleep(Duration::from_secs(60))).await.unwrap();
    std::future::poll_fn(|cx| Service::<Get>::poll_ready(&mut a, cx))
        .await
        .unwrap();
    let start = Instant::now();
    let response = Service::<Get>::call(&mut a, Get);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let err = response.await.unwrap_err();
    assert!(
        err.to_string().contains("timed out") || format!("{err:?}").contains("Timeout"),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10), "no second wait");
}

struct Delegator;

enum DMsg {
    /// Hands the reply to a helper task, which panics before answering.
    Delegate(Reply<u32>),
    /// Catches a panic of its own while the reply is being dropped.
    CatchInside(Reply<u32>),
    /// Answers normally (the actor is still serving after the above).
    Echo(u32, Reply<u32>),
}

impl Actor for Delegator {
    type Msg = DMsg;
    async fn handle(&mut self, msg: DMsg, _ctx: &mut Context<Self>) {
        match msg {
            DMsg::Delegate(reply) => {
                tokio::spawn(async move {
                    let _held = reply;
                    panic!("helper failed");
                });
            }
            DMsg::CatchInside(reply) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _held = reply;
                    panic!("caught by the handler itself");
                }));
            }
            DMsg::Echo(x, reply) => {
                let _ = reply.send(x);
            }
        }
    }
}

/// A reply handed to a helper task that panics holding it (as `Reply`'s
/// docs allow) answers the ask at once with `Panicked`: the panic unwinds
/// outside any handler, so the actor will never catch it and answer later.
#[tokio::test(start_paused = true)]
async fn an_ask_resolves_when_a_helper_task_panics_holding_the_reply() {
    let actor = Builder::new().ask_timeout(None).spawn(Delegator).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), actor.ask_with(DMsg::Delegate))
        .await
        .expect("the ask must resolve once the reply is dropped");
    assert!(matches!(r, Err(AskError::Panicked(_))), "{r:?}");
    assert_eq!(actor.ask_with(|r| DMsg::Echo(7, r)).await.unwrap(), 7);
}

/// A handler that catches a panic of its own while the reply is dropped
/// answers the ask with `Panicked` once that poll returns, and serves on.
#[tokio::test(start_paused = true)]
async fn an_ask_resolves_when_the_handler_catches_a_panic_holding_the_reply() {
    let actor = Builder::new().ask_timeout(None).spawn(Delegator).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), actor.ask_with(DMsg::CatchInside))
        .await
        .expect("the ask must resolve once the reply is dropped");
    assert!(matches!(r, Err(AskError::Panicked(_))), "{r:?}");
    assert_eq!(actor.ask_with(|r| DMsg::Echo(8, r)).await.unwrap(), 8);
    let report = actor.stop(Instant::now() + Duration::from_secs(1)).await;
    assert!(report.is_balanced(), "{report}");
    assert_eq!(report.completed, 2, "{report}");
}

struct StopsAfterOne;
impl Actor for StopsAfterOne {
    type Msg = u32;
    async fn handle(&mut self, _: u32, ctx: &mut Context<Self>) {
        // Stop after the first message, leaving the rest queued.
        ctx.stop();
    }
}

/// A panicking undelivered hook (user code, run while the actor
/// terminates) is contained per message: every queued message is still
/// offered to it, the actor terminates, and `stop` returns a balanced
/// report by its deadline.
#[tokio::test(start_paused = true)]
async fn stop_returns_by_its_deadline_when_the_undelivered_hook_panics() {
    let offered = Arc::new(AtomicUsize::new(0));
    let o = offered.clone();
    let actor = Builder::new()
        .on_undelivered(move |_m: u32| {
            o.fetch_add(1, Ordering::SeqCst);
            panic!("hook failed")
        })
        .spawn(StopsAfterOne)
        .unwrap();
    for i in 0..4 {
        actor.try_tell(i).unwrap();
    }
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        actor.stop(Instant::now() + Duration::from_secs(1)),
    )
    .await
    .expect("stop() hung although its deadline was 1 s");
    assert!(report.is_balanced(), "{report}");
    assert_eq!((report.completed, report.returned), (1, 3), "{report}");
    assert_eq!(
        offered.load(Ordering::SeqCst),
        3,
        "every message was offered"
    );
}

struct Sink;
impl Actor for Sink {
    type Msg = u32;
    async fn handle(&mut self, _: u32, _: &mut Context<Self>) {}
}

/// A stop report balances while a sender on another thread keeps sending:
/// a message is counted where it leaves the queue, so the actor cannot
/// handle (and report) a message that its sender has not counted yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_report_balances_with_a_concurrent_sender() {
    for i in 0..3_000 {
        let actor = Builder::new().spawn(Sink).unwrap();
        let sender = actor.clone();
        let t = std::thread::spawn(move || {
            let mut sent = 0u64;
            loop {
                match sender.try_tell(1) {
                    Ok(()) => sent += 1,
                    Err(e) if e.is_stopped() => break sent,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        });
        for _ in 0..(i % 50) {
            tokio::task::yield_now().await;
        }
        let report = actor.stop(Instant::now() + Duration::from_secs(5)).await;
        let sent = t.join().unwrap();
        assert!(report.is_balanced(), "iteration {i}: {report}");
        assert_eq!(report.accepted, sent, "iteration {i}: {report}");
    }
}

/// A handler whose reply is held by a combinator (not an `async` block's
/// local, which the unwind drops): when the handler panics, the ask still
/// gets `Panicked`, because the panic is recorded before the handler's
/// future is dropped.
struct CombinatorReply;
impl Actor for CombinatorReply {
    type Msg = Reply<u32>;
    fn handle(
        &mut self,
        reply: Reply<u32>,
        _ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        use futures::FutureExt;
        async { panic!("handler bug") }.map(move |()| {
            let _ = reply.send(1);
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_reply_held_by_a_combinator_answers_panicked() {
    let actor = Builder::new().spawn(CombinatorReply).unwrap();
    match actor.ask_with(|r| r).await {
        Err(AskError::Panicked(p)) => assert_eq!(p.message(), "handler bug"),
        other => panic!("{other:?}"),
    }
}

/// Durations too long for the clock (`Duration::MAX` for "no limit") as
/// the mailbox's wait timeout or as the ask timeout do not panic: an ask
/// into a full mailbox then waits for room, and gets its answer.
#[tokio::test(start_paused = true)]
async fn asks_with_durations_too_long_for_the_clock_wait_without_limit() {
    for (overflow, ask_timeout) in [
        (
            Overflow::WaitTimeout(Duration::MAX),
            Some(Duration::from_secs(5)),
        ),
        (Overflow::Block, Some(Duration::MAX)),
    ] {
        let a = Builder::new()
            .capacity(1)
            .overflow(overflow)
            .ask_timeout(ask_timeout)
            .spawn(Acc::default())
            .unwrap();
        a.tell(Msg::Sleep(Duration::from_secs(1))).await.unwrap();
        tokio::task::yield_now().await;
        a.tell(Msg::Add(1)).await.unwrap(); // fills the mailbox
        // Room comes after 1 s, within any of these limits.
        assert_eq!(a.ask_with(Msg::Get).await.unwrap(), vec![1], "{overflow:?}");
    }
}

//! The tower `Service` path reserves a mailbox slot in `poll_ready`
//! (DESIGN contract 6), sharing one bound with `tell` / `try_tell`.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use tokio::sync::Semaphore;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::Service;
use weft_actor::pool::{Pool, Routing};
use weft_actor::{Actor, ActorRef, AskError, AskFor, Builder, Context, Reply, SendError};
use weft_core::Overflow;

/// Handles a message only when the test lets it (one gate permit each).
struct Gated {
    gate: Arc<Semaphore>,
    handled: Arc<AtomicUsize>,
}

enum Msg {
    Work,
    Echo(u32, Reply<u32>),
}

impl Actor for Gated {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
        self.gate.acquire().await.unwrap().forget();
        self.handled.fetch_add(1, Ordering::SeqCst);
        if let Msg::Echo(n, r) = msg {
            let _ = r.send(n);
        }
    }
}

impl AskFor<u32> for Gated {
    type Reply = u32;
    fn wrap(n: u32, reply: Reply<u32>) -> Msg {
        Msg::Echo(n, reply)
    }
}

struct Fixture {
    actor: ActorRef<Gated>,
    gate: Arc<Semaphore>,
    handled: Arc<AtomicUsize>,
}

fn gated(capacity: usize, overflow: Overflow) -> Fixture {
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let actor = Builder::new()
        .capacity(capacity)
        .overflow(overflow)
        .spawn(Gated {
            gate: gate.clone(),
            handled: handled.clone(),
        })
        .unwrap();
    Fixture {
        actor,
        gate,
        handled,
    }
}

/// Lets the actor run until `cond` holds (current-thread runtime).
async fn settle(cond: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

fn ready(
    svc: &mut ActorRef<Gated>,
) -> impl std::future::Future<Output = Result<(), weft_core::BoxError>> + '_ {
    poll_fn(move |cx| Service::<u32>::poll_ready(svc, cx))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn poll_ready_is_pending_while_full_and_ready_after_the_actor_takes_one() {
    let f = gated(2, Overflow::Block);
    // The actor takes the first message and waits at the gate; two more
    // fill the mailbox.
    f.actor.try_tell(Msg::Work).ok().unwrap();
    settle(|| f.actor.queued() == 0).await;
    f.actor.try_tell(Msg::Work).ok().unwrap();
    f.actor.try_tell(Msg::Work).ok().unwrap();

    let mut svc = f.actor.clone();
    let mut reserving = task::spawn(ready(&mut svc));
    assert_pending!(reserving.poll());
    assert!(!reserving.is_woken());

    // The actor finishes one and takes the next: a slot frees, the waiting
    // reservation is woken and gets it.
    f.gate.add_permits(1);
    settle(|| f.handled.load(Ordering::SeqCst) == 1 && f.actor.queued() == 1).await;
    assert!(reserving.is_woken());
    assert_ready_ok!(reserving.poll());
    drop(reserving);

    // The reserved slot counts against the bound: no over-admission.
    assert!(matches!(
        f.actor.try_tell(Msg::Work),
        Err(SendError::Full(Msg::Work))
    ));
    // `call` uses the reserved slot and cannot fail for lack of room.
    let answer = svc.call(7);
    assert_eq!(f.actor.queued(), 2);
    f.gate.add_permits(10);
    assert_eq!(answer.await.unwrap(), 7);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_a_reserved_service_releases_its_slot() {
    let f = gated(1, Overflow::Reject);
    let mut svc = f.actor.clone();
    assert_ready_ok!(task::spawn(ready(&mut svc)).poll());
    // The only slot is reserved: tell is refused, another service waits.
    assert!(matches!(
        f.actor.try_tell(Msg::Work),
        Err(SendError::Full(_))
    ));
    let mut other = f.actor.clone();
    let mut waiting = task::spawn(ready(&mut other));
    assert_pending!(waiting.poll());

    drop(svc);
    assert!(waiting.is_woken());
    assert_ready_ok!(waiting.poll());
    drop(waiting);
    drop(other);
    // Both reservations are gone again: the slot is free for a tell.
    f.actor.try_tell(Msg::Work).ok().unwrap();
    assert_eq!(f.actor.queued(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_poll_ready_wait_leaves_no_slot_behind() {
    let f = gated(1, Overflow::Block);
    f.actor.try_tell(Msg::Work).ok().unwrap();
    settle(|| f.actor.queued() == 0).await;
    f.actor.try_tell(Msg::Work).ok().unwrap();
    {
        let mut svc = f.actor.clone();
        let mut waiting = task::spawn(ready(&mut svc));
        assert_pending!(waiting.poll());
    }
    // The actor frees the slot; the abandoned wait must not hold it.
    f.gate.add_permits(1);
    settle(|| f.actor.queued() == 0).await;
    f.actor.try_tell(Msg::Work).ok().unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_clone_starts_unreserved() {
    let f = gated(1, Overflow::Reject);
    let mut svc = f.actor.clone();
    assert_ready_ok!(task::spawn(ready(&mut svc)).poll());
    let mut clone = svc.clone();
    // The clone has to reserve for itself, and the mailbox has no room.
    assert_pending!(task::spawn(ready(&mut clone)).poll());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(clone.call(1));
    }));
    let msg = *outcome.unwrap_err().downcast::<&str>().unwrap();
    assert!(msg.contains("without a reserved mailbox slot"), "{msg}");
    // The original still holds its slot and can call.
    let answer = svc.call(3);
    f.gate.add_permits(1);
    assert_eq!(answer.await.unwrap(), 3);
}

#[test]
#[should_panic(expected = "call poll_ready (until ready) before every call")]
fn call_without_poll_ready_panics() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let f = gated(4, Overflow::Block);
        let mut svc = f.actor.clone();
        drop(svc.call(1));
    });
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stopping_the_actor_fails_a_waiting_poll_ready_and_a_reserved_call() {
    let f = gated(1, Overflow::Block);
    let mut reserved = f.actor.clone();
    assert_ready_ok!(task::spawn(ready(&mut reserved)).poll());
    let mut waiting_svc = f.actor.clone();
    let mut waiting = task::spawn(ready(&mut waiting_svc));
    assert_pending!(waiting.poll());

    f.actor.stop_now();
    assert!(waiting.is_woken());
    let err = assert_ready!(waiting.poll()).unwrap_err();
    assert!(matches!(
        err.downcast_ref::<AskError<()>>(),
        Some(AskError::Send(SendError::Stopped(())))
    ));
    let err = reserved.call(1).await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<AskError<()>>(),
        Some(AskError::Send(SendError::Stopped(())))
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pool_reserves_on_the_member_it_picks() {
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (g, h) = (gate.clone(), handled.clone());
    let mut pool = Pool::builder("gated", 1, move |_| Gated {
        gate: g.clone(),
        handled: h.clone(),
    })
    .routing(Routing::RoundRobin)
    .mailbox(|| Builder::new().capacity(1).overflow(Overflow::Reject))
    .start()
    .unwrap();
    let poll = |pool: &mut Pool<Gated>| {
        task::spawn(poll_fn(|cx| Service::<u32>::poll_ready(pool, cx))).poll()
    };
    assert!(poll(&mut pool).is_ready());
    // The reserved slot is the member's only one.
    assert!(matches!(
        pool.tell(Msg::Work).await,
        Err(SendError::Full(_))
    ));
    let answer = pool.call(9);
    gate.add_permits(1);
    assert_eq!(answer.await.unwrap(), 9);
    // Reserve again, then drop the pool handle: the slot comes back.
    let mut handle = pool.clone();
    assert!(poll(&mut handle).is_ready());
    assert!(pool.try_tell(Msg::Work).is_err());
    drop(handle);
    pool.try_tell(Msg::Work).ok().unwrap();
    gate.add_permits(1);
    settle(|| handled.load(Ordering::SeqCst) == 2).await;
}

#[derive(Debug, Clone)]
enum Op {
    TryTell,
    Reserve,
    DropReservation,
    Call,
    ActorTakesOne,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::TryTell),
        Just(Op::Reserve),
        Just(Op::DropReservation),
        Just(Op::Call),
        Just(Op::ActorTakesOne),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Against a model: queued messages plus reserved slots never exceed
    /// the capacity; `try_tell` and reservations succeed exactly when the
    /// model has room; a reserved `call` always gets in.
    #[test]
    fn tell_and_reservations_share_one_bound(cap in 1usize..4, ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let f = gated(cap, Overflow::Reject);
            // The actor's first message is parked at the gate, out of the
            // mailbox, so every later message stays queued until released.
            f.actor.try_tell(Msg::Work).ok().unwrap();
            settle(|| f.actor.queued() == 0).await;
            let mut reserved: Vec<ActorRef<Gated>> = Vec::new();
            let mut queued = 0usize;
            let mut taken = 0usize;
            let mut answers = Vec::new();
            for op in ops {
                match op {
                    Op::TryTell => {
                        let ok = f.actor.try_tell(Msg::Work).is_ok();
                        assert_eq!(ok, queued + reserved.len() < cap);
                        queued += ok as usize;
                    }
                    Op::Reserve => {
                        let mut svc = f.actor.clone();
                        let ready = task::spawn(ready(&mut svc)).poll().is_ready();
                        assert_eq!(ready, queued + reserved.len() < cap);
                        if ready {
                            reserved.push(svc);
                        }
                    }
                    Op::DropReservation => {
                        reserved.pop();
                    }
                    Op::Call => {
                        if let Some(mut svc) = reserved.pop() {
                            answers.push(svc.call(1));
                            queued += 1;
                        }
                    }
                    Op::ActorTakesOne => {
                        if queued > 0 {
                            taken += 1;
                            f.gate.add_permits(1);
                            settle(|| f.handled.load(Ordering::SeqCst) == taken).await;
                            queued -= 1;
                        }
                    }
                }
                assert_eq!(f.actor.queued(), queued);
                assert!(queued + reserved.len() <= cap);
            }
            f.gate.add_permits(1_000);
            for a in answers {
                assert_eq!(a.await.unwrap(), 1);
            }
        });
    }
}

/// The overflow policies, now applied by the mailbox's bound.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn overflow_policies_on_the_shared_bound() {
    use std::time::Duration;

    // Block: a tell waits for room, and gets in when the actor takes one.
    let f = gated(1, Overflow::Block);
    f.actor.try_tell(Msg::Work).ok().unwrap();
    settle(|| f.actor.queued() == 0).await;
    f.actor.try_tell(Msg::Work).ok().unwrap();
    let a = f.actor.clone();
    let mut blocked = task::spawn(async move { a.tell(Msg::Work).await.is_ok() });
    assert_pending!(blocked.poll());
    f.gate.add_permits(1);
    settle(|| f.handled.load(Ordering::SeqCst) == 1).await;
    assert!(blocked.is_woken());
    assert!(assert_ready!(blocked.poll()));
    assert_eq!(f.actor.queued(), 1);
    // A stop wakes a blocked tell, refused.
    let a = f.actor.clone();
    let mut blocked = task::spawn(async move { a.tell(Msg::Work).await });
    assert_pending!(blocked.poll());
    f.actor.stop_now();
    assert!(matches!(
        assert_ready!(blocked.poll()),
        Err(SendError::Stopped(_))
    ));

    // WaitTimeout: waits up to its timeout, then hands the message back.
    let f = gated(1, Overflow::WaitTimeout(Duration::from_millis(100)));
    f.actor.try_tell(Msg::Work).ok().unwrap();
    settle(|| f.actor.queued() == 0).await;
    f.actor.try_tell(Msg::Work).ok().unwrap();
    let start = tokio::time::Instant::now();
    assert!(matches!(
        f.actor.tell(Msg::Work).await,
        Err(SendError::Timeout(_))
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let (gate, actor) = (f.gate.clone(), f.actor.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.add_permits(1);
    });
    actor.tell(Msg::Work).await.ok().unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(150));

    // DropNewest: the new message is refused and handed back.
    let f = gated(1, Overflow::DropNewest);
    f.actor.try_tell(Msg::Work).ok().unwrap();
    settle(|| f.actor.queued() == 0).await;
    f.actor.try_tell(Msg::Work).ok().unwrap();
    assert!(matches!(
        f.actor.tell(Msg::Work).await,
        Err(SendError::Dropped(_))
    ));
    assert_eq!(f.actor.queued(), 1);
}

/// Many senders on a multi-thread runtime, through `tell` and the Service
/// path at once, into a small mailbox: every message is handled exactly
/// once and nobody hangs (no lost wake-up, no leaked slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tells_and_service_calls_all_get_through() {
    use tower::ServiceExt;
    let f = gated(4, Overflow::Block);
    f.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let mut tasks = Vec::new();
    for i in 0..4u32 {
        let a = f.actor.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..2_000u32 {
                if i % 2 == 0 {
                    a.tell(Msg::Work).await.ok().unwrap();
                } else {
                    let got = a.clone().oneshot(n).await.unwrap();
                    assert_eq!(got, n);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle_mt(|| f.handled.load(Ordering::SeqCst) == 8_000).await;
    assert_eq!(f.actor.stats().accepted, 8_000);
    assert_eq!(f.actor.queued(), 0);
    // All slots came back.
    for _ in 0..4 {
        f.actor.try_tell(Msg::Work).ok().unwrap();
    }
}

async fn settle_mt(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("condition never held");
}

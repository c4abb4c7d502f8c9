//! Supervision: strategies, restart types, intensity and escalation,
//! backoff, ordered start/stop, stop timeouts, references across restarts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use weft_actor::supervisor::{Backoff, ChildSpec, Restart, Strategy, SupervisorBuilder};
use weft_actor::{Actor, ActorRef, AskError, Context, Exit, Reply, SendError};
use weft_core::BoxError;

type Log = Arc<Mutex<Vec<String>>>;

struct Probe {
    id: &'static str,
    log: Log,
    alive: Arc<AtomicUsize>,
    handled: u32,
    stop_delay: Duration,
}

enum Msg {
    Work,
    Panic,
    StopSelf,
    Handled(Reply<u32>),
    Incarnation(Reply<u64>),
    Hang,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Actor for Probe {
    type Msg = Msg;
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), BoxError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {} #{}", self.id, ctx.incarnation()));
        Ok(())
    }
    async fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
        match msg {
            Msg::Work => self.handled += 1,
            Msg::Panic => panic!("{} crashed", self.id),
            Msg::StopSelf => ctx.stop(),
            Msg::Handled(r) => {
                let _ = r.send(self.handled);
            }
            Msg::Incarnation(r) => {
                let _ = r.send(ctx.incarnation());
            }
            Msg::Hang => std::future::pending::<()>().await,
        }
    }
    async fn stopping(&mut self, _ctx: &mut Context<Self>) {
        tokio::time::sleep(self.stop_delay).await;
        self.log.lock().unwrap().push(format!("stop {}", self.id));
    }
}

struct Kit {
    log: Log,
    alive: Arc<AtomicUsize>,
    max_alive: Arc<AtomicUsize>,
}

impl Kit {
    fn new() -> Self {
        Kit {
            log: Arc::default(),
            alive: Arc::default(),
            max_alive: Arc::default(),
        }
    }

    fn spec(&self, id: &'static str) -> ChildSpec<Probe> {
        self.spec_with(id, Duration::ZERO)
    }

    fn spec_with(&self, id: &'static str, stop_delay: Duration) -> ChildSpec<Probe> {
        let (log, alive, max_alive) =
            (self.log.clone(), self.alive.clone(), self.max_alive.clone());
        ChildSpec::new(id, move || {
            let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
            max_alive.fetch_max(now, Ordering::SeqCst);
            Probe {
                id,
                log: log.clone(),
                alive: alive.clone(),
                handled: 0,
                stop_delay,
            }
        })
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

async fn incarnation(a: &ActorRef<Probe>) -> u64 {
    a.ask_with(Msg::Incarnation).await.unwrap()
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child_and_refs_stay_valid() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup").backoff(Backoff::none());
    let a = b.add(kit.spec("a")).unwrap();
    let c = b.add(kit.spec("c")).unwrap();
    let sup = b.start().unwrap();
    a.tell(Msg::Work).await.unwrap();
    c.tell(Msg::Work).await.unwrap();
    c.tell(Msg::Panic).await.unwrap();
    // Sent while c restarts: reaches the new incarnation.
    c.tell(Msg::Work).await.unwrap();
    assert_eq!(c.ask_with(Msg::Handled).await.unwrap(), 1);
    assert_eq!(incarnation(&c).await, 1);
    assert_eq!(incarnation(&a).await, 0);
    assert_eq!(
        a.ask_with(Msg::Handled).await.unwrap(),
        1,
        "a kept its state"
    );
    assert_eq!(sup.stats().restarts, 1);
    assert_eq!(c.stats().restarts, 1);
    let r = sup.shutdown(far()).await;
    assert!(r.is_balanced(), "{r}");
    assert_eq!(r.failed, 1);
    assert_eq!(kit.alive.load(Ordering::SeqCst), 0, "every actor dropped");
    assert_eq!(
        kit.max_alive.load(Ordering::SeqCst),
        2,
        "incarnations never overlap"
    );
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_everyone_in_order_after_stopping_in_reverse() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .strategy(Strategy::OneForAll)
        .backoff(Backoff::none());
    let a = b.add(kit.spec("a")).unwrap();
    let m = b.add(kit.spec("m")).unwrap();
    let z = b.add(kit.spec("z")).unwrap();
    let sup = b.start().unwrap();
    for r in [&a, &m, &z] {
        assert_eq!(incarnation(r).await, 0);
    }
    assert_eq!(
        kit.take_log(),
        vec!["start a #0", "start m #0", "start z #0"]
    );
    m.tell(Msg::Panic).await.unwrap();
    // m answers from its new incarnation once the supervisor has restarted
    // the whole group.
    for r in [&m, &a, &z] {
        assert_eq!(incarnation(r).await, 1);
    }
    assert_eq!(
        kit.take_log(),
        vec![
            "stop m",
            "stop z",
            "stop a",
            "start a #1",
            "start m #1",
            "start z #1"
        ]
    );
    sup.shutdown(far()).await;
    assert_eq!(kit.take_log(), vec!["stop z", "stop m", "stop a"]);
    assert_eq!(kit.max_alive.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .strategy(Strategy::RestForOne)
        .backoff(Backoff::none());
    let a = b.add(kit.spec("a")).unwrap();
    let m = b.add(kit.spec("m")).unwrap();
    let z = b.add(kit.spec("z")).unwrap();
    let sup = b.start().unwrap();
    for r in [&a, &m, &z] {
        assert_eq!(incarnation(r).await, 0);
    }
    m.tell(Msg::Panic).await.unwrap();
    assert_eq!(incarnation(&m).await, 1);
    assert_eq!(incarnation(&z).await, 1);
    assert_eq!(incarnation(&a).await, 0);
    let log = kit.take_log();
    assert_eq!(&log[3..], ["stop m", "stop z", "start m #1", "start z #1"]);
    sup.shutdown(far()).await;
}

#[tokio::test(start_paused = true)]
async fn restart_types() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup").backoff(Backoff::none());
    let perm = b.add(kit.spec("perm")).unwrap();
    let trans = b
        .add(kit.spec("trans").restart(Restart::Transient))
        .unwrap();
    let temp = b.add(kit.spec("temp").restart(Restart::Temporary)).unwrap();
    let trans2 = b
        .add(kit.spec("trans2").restart(Restart::Transient))
        .unwrap();
    let sup = b.start().unwrap();

    // Permanent: restarted even after a normal stop.
    perm.tell(Msg::StopSelf).await.unwrap();
    assert_eq!(incarnation(&perm).await, 1);
    // Transient: restarted after a panic, not after a normal stop.
    trans.tell(Msg::Panic).await.unwrap();
    assert_eq!(incarnation(&trans).await, 1);
    trans2.tell(Msg::StopSelf).await.unwrap();
    assert_eq!(trans2.wait().await, Exit::Normal);
    assert!(matches!(
        trans2.try_tell(Msg::Work),
        Err(SendError::Stopped(_))
    ));
    // Temporary: never restarted.
    temp.tell(Msg::Panic).await.unwrap();
    assert!(matches!(temp.wait().await, Exit::Panicked(_)));
    assert!(!temp.is_alive());
    assert_eq!(sup.stats().restarts, 2);
    sup.shutdown(far()).await;
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_escalates_and_stops_children() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .intensity(2, Duration::from_secs(5))
        .backoff(Backoff::none());
    let a = b.add(kit.spec("a")).unwrap();
    let other = b.add(kit.spec("other")).unwrap();
    let sup = b.start().unwrap();
    for expected in 1..=2 {
        a.tell(Msg::Panic).await.unwrap();
        assert_eq!(incarnation(&a).await, expected);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A third failure within 5 s exceeds 2 restarts in 5 s.
    a.tell(Msg::Panic).await.unwrap();
    match sup.wait().await {
        Exit::Escalated(why) => assert!(why.contains("\"a\""), "{why}"),
        other => panic!("expected escalation, got {other:?}"),
    }
    assert_eq!(sup.stats().escalations, 1);
    assert!(!other.is_alive() && !a.is_alive());
    assert!(matches!(
        a.ask_with(Msg::Handled).await,
        Err(AskError::Send(SendError::Stopped(_)))
    ));
    assert_eq!(kit.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn failures_spread_over_time_do_not_escalate() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .intensity(1, Duration::from_secs(5))
        .backoff(Backoff::none());
    let a = b.add(kit.spec("a")).unwrap();
    let sup = b.start().unwrap();
    for expected in 1..=4 {
        a.tell(Msg::Panic).await.unwrap();
        assert_eq!(incarnation(&a).await, expected);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(sup.stats().escalations, 0);
    sup.shutdown(far()).await;
}

#[tokio::test(start_paused = true)]
async fn nested_supervisor_escalates_to_its_parent_which_restarts_it() {
    let kit = Kit::new();
    let mut inner = SupervisorBuilder::new("inner")
        .intensity(0, Duration::from_secs(5))
        .backoff(Backoff::none());
    let leaf = inner.add(kit.spec("leaf")).unwrap();
    let sibling = inner.add(kit.spec("sibling")).unwrap();
    let mut outer = SupervisorBuilder::new("outer").backoff(Backoff::none());
    let peer = outer.add(kit.spec("peer")).unwrap();
    let inner_sup = outer
        .add_supervisor(inner, Restart::Permanent, Duration::from_secs(5))
        .unwrap();
    let outer_sup = outer.start().unwrap();
    assert_eq!(incarnation(&leaf).await, 0);
    sibling.tell(Msg::Work).await.unwrap();

    // inner allows 0 restarts: the first failure escalates to outer, which
    // restarts inner, which starts fresh incarnations of both its children.
    leaf.tell(Msg::Panic).await.unwrap();
    assert_eq!(incarnation(&leaf).await, 1);
    assert_eq!(incarnation(&sibling).await, 1);
    assert_eq!(sibling.ask_with(Msg::Handled).await.unwrap(), 0);
    assert_eq!(incarnation(&peer).await, 0);
    assert_eq!(inner_sup.stats().escalations, 1);
    assert_eq!(outer_sup.stats().restarts, 1);

    let r = outer_sup.shutdown(far()).await;
    assert!(r.is_balanced(), "{r}");
    assert!(!leaf.is_alive() && !peer.is_alive());
    assert!(inner_sup.stats().terminated);
    assert_eq!(kit.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_restarts_and_grows() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .intensity(10, Duration::from_secs(60))
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).jitter(0.0));
    let a = b.add(kit.spec("a")).unwrap();
    let sup = b.start().unwrap();
    for (n, expected) in [(1, 100), (2, 200), (3, 400)] {
        a.tell(Msg::Panic).await.unwrap();
        tokio::task::yield_now().await;
        let start = Instant::now();
        assert_eq!(incarnation(&a).await, n);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(expected),
            "restart #{n}"
        );
    }
    sup.shutdown(far()).await;
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_within_bounds() {
    let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).jitter(0.5);
    for _ in 0..200 {
        let d = b.delay(1);
        assert!(
            d >= Duration::from_millis(100) && d <= Duration::from_millis(300),
            "{d:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_child_is_killed_after_its_stop_timeout_and_restart_waits_for_it() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .strategy(Strategy::OneForAll)
        .backoff(Backoff::none());
    let slow = b
        .add(kit.spec("slow").stop_timeout(Duration::from_secs(2)))
        .unwrap();
    let bad = b.add(kit.spec("bad")).unwrap();
    let sup = b.start().unwrap();
    slow.tell(Msg::Hang).await.unwrap();
    slow.tell(Msg::Work).await.unwrap();
    tokio::task::yield_now().await;
    let start = Instant::now();
    bad.tell(Msg::Panic).await.unwrap();
    assert_eq!(incarnation(&slow).await, 1);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "killed at its stop timeout"
    );
    // The queued message survived the restart.
    assert_eq!(slow.ask_with(Msg::Handled).await.unwrap(), 1);
    assert_eq!(slow.stats().aborted, 1);
    assert_eq!(kit.max_alive.load(Ordering::SeqCst), 2, "no overlap");
    let r = sup.shutdown(far()).await;
    assert!(r.is_balanced(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_slow_stopping_hooks_up_to_the_deadline() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup");
    let a = b
        .add(kit.spec_with("a", Duration::from_millis(300)))
        .unwrap();
    let z = b
        .add(kit.spec("z").stop_timeout(Duration::from_secs(1)))
        .unwrap();
    let sup = b.start().unwrap();
    assert_eq!(incarnation(&z).await, 0);
    z.tell(Msg::Hang).await.unwrap();
    for _ in 0..5 {
        a.tell(Msg::Work).await.unwrap();
    }
    let start = Instant::now();
    let r = sup.shutdown(far()).await;
    // z (last) is stopped first and killed after 1 s; a then drains and
    // takes 300 ms in its stopping hook.
    assert_eq!(start.elapsed(), Duration::from_millis(1300));
    assert_eq!((r.accepted, r.completed, r.aborted), (7, 6, 1));
    assert!(r.is_balanced(), "{r}");
    assert_eq!(kit.take_log(), vec!["start a #0", "start z #0", "stop a"]);
    assert_eq!(kit.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn stopping_a_supervised_child_through_its_ref_is_final() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup").backoff(Backoff::none());
    let a = b.add(kit.spec("a")).unwrap();
    let sup = b.start().unwrap();
    a.tell(Msg::Work).await.unwrap();
    let r = a.stop(far()).await;
    assert_eq!(r.completed, 1);
    assert_eq!(a.wait().await, Exit::Stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sup.stats().restarts, 0);
    assert!(!sup.stats().terminated);
    sup.shutdown(far()).await;
}

#[tokio::test(start_paused = true)]
async fn stop_during_backoff_is_final() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup")
        .backoff(Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).jitter(0.0));
    let a = b.add(kit.spec("a")).unwrap();
    let sup = b.start().unwrap();
    a.tell(Msg::Panic).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    a.stop(far()).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "not held up by the backoff"
    );
    assert!(!a.is_alive());
    sup.shutdown(far()).await;
    assert_eq!(kit.alive.load(Ordering::SeqCst), 0);
}

#[test]
fn duplicate_ids_and_zero_period_are_refused() {
    let kit = Kit::new();
    let mut b = SupervisorBuilder::new("sup");
    b.add(kit.spec("a")).unwrap();
    let err = b.add(kit.spec("a")).unwrap_err();
    assert!(err.to_string().contains("duplicate child id"), "{err}");
    let err = SupervisorBuilder::new("s")
        .intensity(1, Duration::ZERO)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("period"), "{err}");
}

struct FailsToStart;
impl Actor for FailsToStart {
    type Msg = ();
    async fn started(&mut self, _: &mut Context<Self>) -> Result<(), BoxError> {
        Err("no database".into())
    }
    async fn handle(&mut self, _: (), _: &mut Context<Self>) {}
}

#[tokio::test(start_paused = true)]
async fn failed_starts_and_panicking_factories_count_as_failures() {
    // `started` fails every time: restarted until the intensity is exceeded.
    let mut b = SupervisorBuilder::new("sup")
        .intensity(2, Duration::from_secs(5))
        .backoff(Backoff::none());
    let c = b.add(ChildSpec::new("db", || FailsToStart)).unwrap();
    let sup = b.start().unwrap();
    assert!(matches!(sup.wait().await, Exit::Escalated(_)));
    assert_eq!(sup.stats().restarts, 2);
    assert!(matches!(
        c.wait().await,
        Exit::Escalated(_) | Exit::StartFailed(_)
    ));

    // A factory that panics after its first call.
    let kit = Kit::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut b = SupervisorBuilder::new("sup2")
        .intensity(1, Duration::from_secs(5))
        .backoff(Backoff::none());
    let (log, alive, max_alive, n) = (
        kit.log.clone(),
        kit.alive.clone(),
        kit.max_alive.clone(),
        calls.clone(),
    );
    let p = b
        .add(ChildSpec::new("p", move || {
            if n.fetch_add(1, Ordering::SeqCst) > 0 {
                panic!("factory broke");
            }
            alive.fetch_add(1, Ordering::SeqCst);
            max_alive.fetch_max(1, Ordering::SeqCst);
            Probe {
                id: "p",
                log: log.clone(),
                alive: alive.clone(),
                handled: 0,
                stop_delay: Duration::ZERO,
            }
        }))
        .unwrap();
    let sup2 = b.start().unwrap();
    p.tell(Msg::Panic).await.unwrap();
    assert!(matches!(sup2.wait().await, Exit::Escalated(_)));
    // Restart 1 calls the factory again, which panics; restart 2 exceeds 1 in 5 s.
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "first build, then one failed rebuild"
    );
    assert_eq!(kit.alive.load(Ordering::SeqCst), 0);
}

/// A backoff with no cap (`Duration::MAX`) and jitter never panics however
/// many restarts came before, and stays within its bounds.
#[test]
fn an_uncapped_backoff_with_jitter_stays_in_bounds() {
    let b = Backoff::new(Duration::from_secs(1), Duration::MAX).jitter(0.2);
    for recent in [0, 1, 10, 40, 64, 70, 1_000, u32::MAX].repeat(50) {
        let d = b.delay(recent);
        assert!(d >= Duration::from_millis(800), "{recent}: {d:?}");
    }
    assert_eq!(
        Backoff::new(Duration::from_secs(1), Duration::MAX)
            .jitter(0.0)
            .delay(u32::MAX),
        Duration::MAX
    );
}

//! Registry and pools.

use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use weft_actor::supervisor::{Backoff, ChildSpec, SupervisorBuilder};
use weft_actor::{Actor, AskFor, BuildError, Context, Pool, Registry, Reply, Routing};

struct Worker {
    id: usize,
    seen: u64,
}

enum Msg {
    Work,
    Sleep(Duration),
    Panic,
    Who(Reply<(usize, u64)>),
}

impl Actor for Worker {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
        match msg {
            Msg::Work => self.seen += 1,
            Msg::Sleep(d) => tokio::time::sleep(d).await,
            Msg::Panic => panic!("worker {} crashed", self.id),
            Msg::Who(r) => {
                let _ = r.send((self.id, self.seen));
            }
        }
    }
}

struct Who;
impl AskFor<Who> for Worker {
    type Reply = (usize, u64);
    fn wrap(_: Who, r: Reply<(usize, u64)>) -> Msg {
        Msg::Who(r)
    }
}

struct Other;
impl Actor for Other {
    type Msg = ();
    async fn handle(&mut self, _: (), _: &mut Context<Self>) {}
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test(start_paused = true)]
async fn registry_names_live_actors() {
    let reg = Registry::new();
    let a = weft_actor::spawn(Worker { id: 1, seen: 0 });
    reg.register("w", &a).unwrap();
    assert!(reg.register("w", &a).is_err());
    assert!(reg.lookup::<Worker>("w").unwrap().same_actor(&a));
    assert!(reg.lookup::<Other>("w").is_none(), "wrong type misses");
    assert!(reg.lookup::<Worker>("nobody").is_none());
    assert_eq!(reg.names(), vec!["w"]);

    a.stop(far()).await;
    assert!(
        reg.lookup::<Worker>("w").is_none(),
        "terminated actors miss"
    );
    let b = weft_actor::spawn(Worker { id: 2, seen: 0 });
    reg.register("w", &b).unwrap();
    assert_eq!(
        reg.lookup::<Worker>("w").unwrap().ask(Who).await.unwrap().0,
        2
    );
    assert!(reg.unregister("w"));
    assert!(reg.names().is_empty());
    assert!(Registry::global().lookup::<Worker>("w").is_none());
}

#[tokio::test(start_paused = true)]
async fn registered_supervised_actor_survives_restarts() {
    let reg = Registry::new();
    let mut b = SupervisorBuilder::new("sup").backoff(Backoff::none());
    let w = b
        .add(ChildSpec::new("w", || Worker { id: 9, seen: 0 }))
        .unwrap();
    let sup = b.start().unwrap();
    reg.register("w", &w).unwrap();
    w.tell(Msg::Panic).await.unwrap();
    let found = reg.lookup::<Worker>("w").unwrap();
    assert_eq!(found.ask(Who).await.unwrap(), (9, 0));
    assert_eq!(found.stats().restarts, 1);
    sup.shutdown(far()).await;
}

#[tokio::test(start_paused = true)]
async fn round_robin_spreads_evenly() {
    let pool = Pool::builder("rr", 4, |id| Worker { id, seen: 0 })
        .start()
        .unwrap();
    for _ in 0..40 {
        pool.tell(Msg::Work).await.unwrap();
    }
    for m in pool.members() {
        let (_, seen) = m.ask(Who).await.unwrap();
        assert_eq!(seen, 10);
    }
    let r = pool.shutdown(far()).await;
    assert_eq!(r.completed, 44);
    assert!(r.is_clean(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn least_loaded_avoids_a_busy_member() {
    let pool = Pool::builder("ll", 3, |id| Worker { id, seen: 0 })
        .routing(Routing::LeastLoaded)
        .start()
        .unwrap();
    let busy = &pool.members()[1];
    busy.tell(Msg::Sleep(Duration::from_secs(2))).await.unwrap();
    for _ in 0..5 {
        busy.tell(Msg::Work).await.unwrap();
    }
    for _ in 0..30 {
        pool.tell(Msg::Work).await.unwrap();
        tokio::task::yield_now().await; // idle members drain their queue
    }
    assert_eq!(busy.queued(), 5, "nothing routed to the busy member");
    let r = pool.shutdown(far()).await;
    assert_eq!(r.completed, 36);
}

#[tokio::test(start_paused = true)]
async fn key_sticky_routing_and_restarts() {
    let pool = Pool::builder("ks", 5, |id| Worker { id, seen: 0 })
        .backoff(Backoff::none())
        .start()
        .unwrap();
    let mut owners = std::collections::HashSet::new();
    for _ in 0..10 {
        pool.tell_keyed("alice", Msg::Work).await.unwrap();
        owners.insert(pool.member_for("alice").name().to_owned());
    }
    assert_eq!(owners.len(), 1);
    let (id, seen) = pool.ask_keyed("alice", Msg::Who).await.unwrap();
    assert_eq!(seen, 10);
    // The member crashes and is restarted; the key still routes to it.
    pool.tell_keyed("alice", Msg::Panic).await.unwrap();
    assert_eq!(pool.ask_keyed("alice", Msg::Who).await.unwrap(), (id, 0));
    assert_eq!(pool.supervisor().stats().restarts, 1);
    // Keys spread over members.
    let used: std::collections::HashSet<usize> = (0..100)
        .map(|k| {
            pool.members()
                .iter()
                .position(|m| m.same_actor(pool.member_for(&k)))
                .unwrap()
        })
        .collect();
    assert!(used.len() >= 4, "{used:?}");
    let r = pool.shutdown(far()).await;
    assert!(r.is_balanced(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn pool_is_a_tower_service() {
    let pool = Pool::builder("svc", 2, |id| Worker { id, seen: 0 })
        .start()
        .unwrap();
    let a = pool.clone().oneshot(Who).await.unwrap().0;
    let b = pool.clone().oneshot(Who).await.unwrap().0;
    assert_ne!(a, b, "round robin across calls");
    pool.shutdown(far()).await;
}

#[tokio::test]
async fn empty_pool_is_refused() {
    let err = Pool::builder("none", 0, |id| Worker { id, seen: 0 })
        .start()
        .unwrap_err();
    assert_eq!(err, BuildError::EmptyPool);
}

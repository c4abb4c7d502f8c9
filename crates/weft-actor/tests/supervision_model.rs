//! Property test: a supervisor against a simple model of OTP supervision.
//!
//! Random children (restart types), strategy and intensity; random failures,
//! normal stops and work, at random (paused) times. After every event the
//! real supervisor must agree with the model on: which children are alive,
//! how many restarts happened (in total and per child), and whether it
//! escalated. At the end, every work message was handled exactly once or
//! handed to the undelivered hook, never both, never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use weft_actor::supervisor::{
    Backoff, ChildSpec, Restart, Strategy as SupStrategy, SupervisorBuilder,
};
use weft_actor::{Actor, ActorRef, Context};

struct Child {
    handled: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy)]
enum Msg {
    Work,
    Panic,
    StopSelf,
}

impl Actor for Child {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) {
        match msg {
            Msg::Work => {
                self.handled.fetch_add(1, Ordering::SeqCst);
            }
            Msg::Panic => panic!("injected failure"),
            Msg::StopSelf => ctx.stop(),
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    child: usize,
    msg: Msg,
    gap_ms: u64,
}

fn restart() -> impl Strategy<Value = Restart> {
    prop_oneof![
        Just(Restart::Permanent),
        Just(Restart::Transient),
        Just(Restart::Temporary)
    ]
}

fn strategy() -> impl Strategy<Value = SupStrategy> {
    prop_oneof![
        Just(SupStrategy::OneForOne),
        Just(SupStrategy::OneForAll),
        Just(SupStrategy::RestForOne)
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![3 => Just(Msg::Work), 2 => Just(Msg::Panic), 1 => Just(Msg::StopSelf)]
}

/// The model: OTP semantics, written as plainly as possible.
struct Model {
    types: Vec<Restart>,
    alive: Vec<bool>,
    restarts_of: Vec<u64>,
    restarts: u64,
    escalated: bool,
    history: Vec<Duration>,
    max: usize,
    period: Duration,
    strategy: SupStrategy,
}

impl Model {
    fn fail(&mut self, c: usize, abnormal: bool, now: Duration) {
        let restarted = match self.types[c] {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            _ => false,
        };
        if !restarted {
            self.alive[c] = false;
            return;
        }
        let recent = self
            .history
            .iter()
            .filter(|&&t| now - t < self.period)
            .count();
        if recent + 1 > self.max {
            self.escalated = true;
            self.alive.iter_mut().for_each(|a| *a = false);
            return;
        }
        self.history.push(now);
        self.restarts += 1;
        self.restarts_of[c] += 1;
        let group: Vec<usize> = match self.strategy {
            SupStrategy::OneForOne => vec![],
            SupStrategy::OneForAll => (0..self.types.len()).filter(|&j| j != c).collect(),
            _ => (c + 1..self.types.len()).collect(),
        };
        for j in group {
            if !self.alive[j] {
                continue;
            }
            if self.types[j] == Restart::Temporary {
                self.alive[j] = false;
            } else {
                self.restarts_of[j] += 1;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn supervisor_matches_model(
        types in proptest::collection::vec(restart(), 1..5),
        strat in strategy(),
        max in 0usize..4,
        events in proptest::collection::vec((0usize..4, msg(), 0u64..3_000), 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let period = Duration::from_secs(5);
            let handled = Arc::new(AtomicU64::new(0));
            let returned = Arc::new(AtomicU64::new(0));
            let mut b = SupervisorBuilder::new("model")
                .strategy(strat)
                .intensity(max as u32, period)
                .backoff(Backoff::none());
            let mut refs: Vec<ActorRef<Child>> = Vec::new();
            for (i, t) in types.iter().enumerate() {
                let h = handled.clone();
                let r = returned.clone();
                let spec = ChildSpec::new(format!("c{i}"), move || Child { handled: h.clone() })
                    .restart(*t)
                    .mailbox(weft_actor::Builder::new().capacity(64).on_undelivered(move |m| {
                        if matches!(m, Msg::Work) {
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                    }));
                refs.push(b.add(spec).unwrap());
            }
            let sup = b.start().unwrap();
            let start = tokio::time::Instant::now();
            let mut model = Model {
                alive: vec![true; types.len()],
                restarts_of: vec![0; types.len()],
                types: types.clone(),
                restarts: 0,
                escalated: false,
                history: Vec::new(),
                max,
                period,
                strategy: strat,
            };
            let mut works = 0u64;
            let events: Vec<Event> = events
                .into_iter()
                .map(|(c, msg, gap_ms)| Event { child: c % types.len(), msg, gap_ms })
                .collect();
            for ev in events {
                tokio::time::sleep(Duration::from_millis(ev.gap_ms)).await;
                let r = &refs[ev.child];
                let sent = r.tell(ev.msg).await;
                assert_eq!(sent.is_ok(), model.alive[ev.child], "tell to c{} ({:?})", ev.child, ev.msg);
                if sent.is_ok() {
                    match ev.msg {
                        Msg::Work => works += 1,
                        Msg::Panic => model.fail(ev.child, true, start.elapsed()),
                        Msg::StopSelf => model.fail(ev.child, false, start.elapsed()),
                    }
                }
                // Let the supervisor react (no time passes while tasks run).
                tokio::time::sleep(Duration::from_millis(1)).await;
                let stats = sup.stats();
                assert_eq!(stats.restarts, model.restarts, "restarts");
                assert_eq!(stats.escalations > 0, model.escalated, "escalated");
                for (i, r) in refs.iter().enumerate() {
                    assert_eq!(r.is_alive(), model.alive[i], "c{i} alive");
                    assert_eq!(r.stats().restarts, model.restarts_of[i], "c{i} restarts");
                }
            }
            let report = sup.shutdown(tokio::time::Instant::now() + Duration::from_secs(30)).await;
            assert!(report.is_balanced(), "{report}");
            assert_eq!(
                handled.load(Ordering::SeqCst) + returned.load(Ordering::SeqCst),
                works,
                "every work message handled exactly once or handed back"
            );
            for r in &refs {
                assert!(!r.is_alive());
            }
        });
    }
}

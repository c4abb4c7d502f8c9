//! The coordinator: triggers, ordered phases, deadlines, forced shutdown, tracked tasks.
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use weft_core::{Drain, ShutdownReport};
use weft_shutdown::{
    BuildError, ComponentOutcome, Coordinator, RegisterError, SpawnError, Trigger,
};

fn coordinator() -> Coordinator {
    Coordinator::builder()
        .phase("one", Duration::from_secs(5))
        .phase("two", Duration::from_secs(5))
        .phase("three", Duration::from_secs(5))
        .task_grace(Duration::from_secs(1))
        .signals(false)
        .build()
        .unwrap()
}

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_components_within_a_phase_concurrently() {
    support::trace();
    let c = coordinator();
    let log = Arc::new(Mutex::new(Vec::new()));
    for (phase, name, ms) in [
        ("three", "c", 10),
        ("one", "a1", 300),
        ("one", "a2", 200),
        ("two", "b", 100),
    ] {
        let log = log.clone();
        c.register_fn(phase, name, move |_| async move {
            log.lock().unwrap().push(format!("{name} start"));
            sleep(Duration::from_millis(ms)).await;
            log.lock().unwrap().push(format!("{name} end"));
        })
        .unwrap();
    }
    c.trigger();
    let start = Instant::now();
    let report = c.run().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a1 start", "a2 start", "a2 end", "a1 end", "b start", "b end", "c start", "c end"
        ]
    );
    // a1 and a2 overlap: phase one takes 300 ms, not 500.
    assert_eq!(start.elapsed(), Duration::from_millis(410));
    assert_eq!(report.phases[0].elapsed, Duration::from_millis(300));
    assert_eq!(report.trigger, Trigger::Programmatic);
}

#[tokio::test(start_paused = true)]
async fn a_slow_component_is_cut_off_at_its_deadline_and_named() {
    let c = coordinator();
    c.register_fn("one", "slow", |_| sleep(Duration::from_secs(3600)))
        .unwrap();
    c.register_fn("one", "quick", |_| sleep(Duration::from_millis(5)))
        .unwrap();
    c.register_fn("two", "next", |_| async {}).unwrap();
    c.trigger();
    let start = Instant::now();
    let report = c.run().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5) + weft_shutdown::CUTOFF_MARGIN
    );
    assert_eq!(
        report.component("slow").unwrap().outcome,
        ComponentOutcome::TimedOut
    );
    assert!(report.component("quick").unwrap().outcome.is_completed());
    assert!(
        report.component("next").unwrap().outcome.is_completed(),
        "later phases still run"
    );
    assert_eq!(report.unfinished(), vec!["slow".to_owned()]);
    assert!(!report.is_clean());
    assert!(report.to_string().contains("slow: TIMED OUT"), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_component_does_not_stop_the_others() {
    let c = coordinator();
    let ran = Arc::new(Mutex::new(0));
    c.register_fn("one", "bad", |_| async { panic!("drain exploded") })
        .unwrap();
    for name in ["good1", "good2"] {
        let ran = ran.clone();
        c.register_fn("one", name, move |_| async move {
            sleep(Duration::from_millis(10)).await;
            *ran.lock().unwrap() += 1;
        })
        .unwrap();
    }
    let ran2 = ran.clone();
    c.register_fn("two", "after", move |_| async move {
        *ran2.lock().unwrap() += 1;
    })
    .unwrap();
    c.trigger();
    let report = c.run().await;
    assert_eq!(*ran.lock().unwrap(), 3);
    assert_eq!(
        report.component("bad").unwrap().outcome,
        ComponentOutcome::Panicked("drain exploded".into())
    );
    assert_eq!(report.unfinished(), vec!["bad".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_second_trigger_forces_the_shutdown() {
    let c = coordinator();
    c.register_fn("one", "stuck", |_| sleep(Duration::from_secs(3600)))
        .unwrap();
    c.register_fn("two", "never", |_| async {}).unwrap();
    c.spawn("stubborn", |_cancel| async {
        sleep(Duration::from_secs(3600)).await;
    })
    .unwrap();
    let c2 = c.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(1)).await;
        c2.trigger(); // second trigger: force
    });
    c.trigger();
    let start = Instant::now();
    let report = c.run().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "force does not wait for deadlines"
    );
    assert!(report.forced);
    assert_eq!(
        report.component("stuck").unwrap().outcome,
        ComponentOutcome::Aborted
    );
    assert_eq!(
        report.component("never").unwrap().outcome,
        ComponentOutcome::Skipped
    );
    assert_eq!(report.tasks.aborted, vec!["stubborn".to_owned()]);
    assert!(report.to_string().contains("FORCED"));
}

#[tokio::test(start_paused = true)]
async fn tracked_tasks_are_cancelled_then_aborted_and_none_stays_alive() {
    let baseline = alive();
    let c = coordinator();
    c.spawn("done-early", |_| async {}).unwrap();
    c.spawn("cooperative", |cancel| async move {
        cancel.cancelled().await;
        sleep(Duration::from_millis(100)).await; // finish the current unit
    })
    .unwrap();
    c.spawn("stubborn", |_| sleep(Duration::from_secs(3600)))
        .unwrap();
    c.spawn("panicky", |cancel| async move {
        cancel.cancelled().await;
        panic!("task blew up");
    })
    .unwrap();
    tokio::task::yield_now().await;
    c.trigger();
    let report = c.run().await;
    assert_eq!(report.tasks.spawned, 4);
    assert_eq!(report.tasks.completed, 1);
    assert_eq!(report.tasks.cancelled, 1);
    assert_eq!(report.tasks.panicked, 1);
    assert_eq!(report.tasks.aborted, vec!["stubborn".to_owned()]);
    tokio::task::yield_now().await;
    assert_eq!(alive(), baseline, "every tracked task is gone");
    assert_eq!(c.spawn("late", |_| async {}), Err(SpawnError));
}

#[tokio::test(start_paused = true)]
async fn an_external_token_triggers() {
    let parent = CancellationToken::new();
    let c = Coordinator::builder()
        .signals(false)
        .trigger_on(parent.clone())
        .build()
        .unwrap();
    assert_eq!(c.phases(), weft_shutdown::DEFAULT_PHASES.to_vec());
    let run = tokio::spawn({
        let c = c.clone();
        async move { c.run().await }
    });
    sleep(Duration::from_secs(1)).await;
    assert!(!run.is_finished(), "run waits for a trigger");
    assert!(!c.is_requested());
    parent.cancel();
    let report = run.await.unwrap();
    assert_eq!(report.trigger, Trigger::External);
    assert!(c.requested().is_cancelled());
}

struct Pool {
    accepted: u64,
}

impl Drain for Pool {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(async move {
            sleep_until_half(deadline).await;
            let mut r = ShutdownReport::new("pool");
            r.accepted = self.accepted;
            r.completed = self.accepted - 1;
            r.returned = 1;
            r
        })
    }
}

async fn sleep_until_half(deadline: Instant) {
    let now = Instant::now();
    sleep((deadline - now) / 2).await;
}

#[tokio::test(start_paused = true)]
async fn drain_components_report_and_every_runner_gets_the_report() {
    let c = coordinator();
    c.register("two", "pool", Pool { accepted: 10 }).unwrap();
    let other = tokio::spawn({
        let c = c.clone();
        async move { c.run().await }
    });
    tokio::task::yield_now().await;
    c.trigger();
    let report = c.run().await;
    assert_eq!(other.await.unwrap(), report);
    let pool = report.component("pool").unwrap();
    assert_eq!(pool.elapsed, Duration::from_millis(2500));
    let detail = pool.detail.as_ref().unwrap();
    assert!(detail.is_balanced());
    assert_eq!(detail.returned, 1);
    assert!(report.to_string().contains("pool: accepted 10"), "{report}");
}

#[tokio::test]
async fn misconfiguration_is_refused_with_what_to_do() {
    let err = Coordinator::builder()
        .phase("a", Duration::from_secs(1))
        .phase("a", Duration::from_secs(1))
        .signals(false)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::DuplicatePhase("a".into()));
    let err = Coordinator::builder()
        .phase("a", Duration::ZERO)
        .signals(false)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("zero timeout"));

    let c = coordinator();
    let err = c.register_fn("nope", "x", |_| async {}).unwrap_err();
    assert!(matches!(err, RegisterError::UnknownPhase { .. }));
    assert!(
        err.to_string().contains("[\"one\", \"two\", \"three\"]"),
        "{err}"
    );

    c.trigger();
    c.run().await;
    assert_eq!(
        c.register_fn("one", "late", |_| async {}).unwrap_err(),
        RegisterError::PhaseStarted("one".into())
    );
}

#[test]
fn signals_need_a_runtime() {
    assert_eq!(
        Coordinator::builder().build().unwrap_err(),
        BuildError::NoRuntime
    );
}

#[tokio::test]
async fn signal_handlers_install_inside_a_runtime() {
    let baseline = alive();
    let c = Coordinator::builder().build().unwrap();
    assert_eq!(alive(), baseline + 1, "one listener task");
    c.trigger();
    let report = c.run().await;
    assert!(report.is_clean());
    tokio::task::yield_now().await;
    assert_eq!(alive(), baseline, "listener stopped after run");
}

#[tokio::test(start_paused = true)]
async fn a_second_trigger_during_the_task_grace_aborts_the_tasks_at_once() {
    let c = Coordinator::builder()
        .phase("one", Duration::from_secs(5))
        .task_grace(Duration::from_secs(10))
        .signals(false)
        .build()
        .unwrap();
    c.spawn("stubborn", |_cancel| sleep(Duration::from_secs(3600)))
        .unwrap();
    let c2 = c.clone();
    tokio::spawn(async move {
        // No components: the phases are over at once, so this lands in the
        // tracked tasks' grace period.
        sleep(Duration::from_secs(1)).await;
        c2.trigger();
    });
    c.trigger();
    let start = Instant::now();
    let report = c.run().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "a forced shutdown does not wait out the task grace"
    );
    assert!(report.forced);
    assert_eq!(report.tasks.aborted, vec!["stubborn".to_owned()]);
}

/// Every tracked task ends in exactly one of completed, cancelled, panicked or
/// aborted, even when tasks finish on other threads while they are aborted.
#[test]
fn tracked_tasks_are_counted_once_under_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    for round in 0..20 {
        rt.block_on(async {
            let c = Coordinator::builder()
                .phase("one", Duration::from_secs(5))
                .task_grace(Duration::ZERO)
                .signals(false)
                .build()
                .unwrap();
            for i in 0..200 {
                c.spawn(format!("t{i}"), |cancel| async move {
                    // Notices the token at its next poll, possibly while
                    // `finish` is aborting it from another thread.
                    while !cancel.is_cancelled() {
                        tokio::task::yield_now().await;
                    }
                })
                .unwrap();
            }
            c.trigger();
            let t = c.run().await.tasks;
            assert_eq!(
                t.spawned,
                t.completed + t.cancelled + t.panicked + t.aborted.len() as u64,
                "round {round}: {t:?}"
            );
        });
    }
}

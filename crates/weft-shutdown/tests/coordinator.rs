//! The coordinator: triggers, ordered phases, deadlines, forced shutdown, tracked tasks.
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
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
    assert_eq!(c.spawn("late", |_| async {}), Err(SpawnError::Finished));
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

/// Guards against a component closure that panics while it builds its future
/// (before any `.await`): the panic is contained to that component, reported
/// as `Panicked`, and the rest of the shutdown (later phases, tracked tasks,
/// every `run` caller's report) goes on.
#[tokio::test(start_paused = true)]
async fn a_component_closure_that_panics_before_returning_its_future_is_contained() {
    let c = coordinator();
    c.register_fn("one", "bad", |_deadline| -> std::future::Ready<()> {
        panic!("bad config")
    })
    .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    c.register_fn("two", "good", move |_deadline| async move {
        r.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let task_cancelled = Arc::new(AtomicBool::new(false));
    let t = task_cancelled.clone();
    c.spawn("ticker", move |cancel| async move {
        cancel.cancelled().await;
        t.store(true, Ordering::SeqCst);
    })
    .unwrap();
    c.trigger();
    let driver = c.clone();
    let outcome = tokio::spawn(async move { driver.run().await }).await;
    // Another `run` (e.g. from a second clone) gets the same report.
    let other = tokio::time::timeout(Duration::from_secs(60), c.run()).await;
    let report = outcome.expect("run() panicked: the component's panic escaped its phase");
    assert_eq!(
        report.component("bad").unwrap().outcome,
        ComponentOutcome::Panicked("bad config".into())
    );
    assert!(ran.load(Ordering::SeqCst), "phase `two` never ran");
    assert!(
        task_cancelled.load(Ordering::SeqCst),
        "tracked task never cancelled"
    );
    assert_eq!(other.expect("a second run() waits forever"), report);
}

/// Guards that the shutdown does not belong to the future of the first `run`
/// call: dropping it (a `select!` or a timeout around `run`) lets the
/// shutdown go on, and any later `run` gets the report of the whole shutdown.
#[tokio::test(start_paused = true)]
async fn dropping_the_first_run_future_does_not_stop_the_shutdown() {
    let c = coordinator();
    c.register_fn("one", "slow", |_| sleep(Duration::from_secs(2)))
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    c.register_fn("two", "after", move |_| async move {
        r.store(true, Ordering::SeqCst);
    })
    .unwrap();
    c.spawn("ticker", |cancel| async move { cancel.cancelled().await })
        .unwrap();
    // Dropped before the trigger: the shutdown still waits for it.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), c.run())
            .await
            .is_err()
    );
    c.trigger();
    let start = Instant::now();
    // Dropped in the middle of phase `one`.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c.run())
            .await
            .is_err()
    );
    let report = c.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(report.is_clean(), "{report}");
    assert!(report.component("slow").unwrap().outcome.is_completed());
    assert!(ran.load(Ordering::SeqCst), "phase `two` ran");
    assert_eq!(report.tasks.cancelled, 1, "{report}");
    assert_eq!(
        c.run().await,
        report,
        "every later run gets the same report"
    );
}

/// Guards against `Duration::MAX` (the natural way to say "no limit") as a
/// phase timeout or task grace: the deadline is clamped to about 30 years
/// from now, as tokio's `sleep` does, instead of overflowing the clock and
/// panicking in `run`.
#[tokio::test(start_paused = true)]
async fn a_phase_timeout_of_duration_max_is_refused_or_works() {
    let c = Coordinator::builder()
        .phase("drain", Duration::MAX)
        .task_grace(Duration::MAX)
        .signals(false)
        .build()
        .expect("Duration::MAX is accepted as no practical limit");
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    c.register_fn("drain", "x", move |deadline| async move {
        *s.lock().unwrap() = Some(deadline);
    })
    .unwrap();
    c.spawn("ticker", |cancel| async move { cancel.cancelled().await })
        .unwrap();
    c.trigger();
    let start = Instant::now();
    let report = tokio::spawn(async move { c.run().await })
        .await
        .expect("run() panicked on a Duration::MAX timeout");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.phases[0].timeout, Duration::MAX);
    assert_eq!(report.tasks.cancelled, 1);
    assert_eq!(
        seen.lock().unwrap().unwrap(),
        start + Duration::from_secs(86_400 * 365 * 30),
        "the deadline is 30 years away"
    );
}

/// Guards `spawn` outside a tokio runtime: it is refused with an error that
/// says what to do, before the task is counted, so the report has no phantom
/// aborted task.
#[test]
fn spawn_outside_a_runtime_is_an_error_and_leaves_the_report_alone() {
    // signals(false): building outside a runtime is allowed.
    let c = Coordinator::builder().signals(false).build().unwrap();
    let called = Arc::new(AtomicBool::new(false));
    let k = called.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.spawn("ticker", move |cancel| {
            k.store(true, Ordering::SeqCst);
            async move { cancel.cancelled().await }
        })
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let report = rt.block_on(async {
        c.trigger();
        c.run().await
    });
    assert!(
        r.is_ok() && report.tasks.spawned == 0 && report.tasks.aborted.is_empty(),
        "spawn panicked: {}; report: {report}",
        r.is_err()
    );
    let err = r.unwrap().unwrap_err();
    assert_eq!(err, SpawnError::NoRuntime);
    assert!(
        err.to_string()
            .contains("call spawn inside a tokio runtime"),
        "{err}"
    );
    assert!(!called.load(Ordering::SeqCst), "the closure is not called");
    assert!(report.is_clean(), "{report}");
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Panics in its `Drop`: dropped by the coordinator itself (a component of a
/// skipped phase), outside any component's task.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("bomb went off");
    }
}

/// A skipped component's `Drop` panicking, run by the coordinator itself
/// (it used to be the coordinator's own panic, reported as `interrupted`),
/// is contained: the forced shutdown completes with every phase reported,
/// and the tracked tasks are still finished.
#[tokio::test(start_paused = true)]
async fn a_skipped_components_drop_panic_does_not_interrupt_the_shutdown() {
    let c = coordinator();
    c.register_fn("one", "stuck", |_| sleep(Duration::from_secs(3600)))
        .unwrap();
    let bomb = Bomb;
    c.register_fn("two", "bomb", move |_| {
        let _bomb = bomb;
        async {}
    })
    .unwrap();
    c.register_fn("three", "later", |_| async {}).unwrap();
    c.spawn("ticker", |cancel| async move { cancel.cancelled().await })
        .unwrap();
    let c2 = c.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(1)).await;
        c2.trigger(); // forced: phase `two` is skipped, its components dropped
    });
    c.trigger();
    let report = c.run().await;
    assert_eq!(report.interrupted, None, "{report}");
    assert!(report.forced);
    assert!(!report.is_clean());
    let outcome = |name| report.component(name).unwrap().outcome.clone();
    assert_eq!(outcome("stuck"), ComponentOutcome::Aborted);
    assert_eq!(outcome("bomb"), ComponentOutcome::Skipped);
    assert_eq!(outcome("later"), ComponentOutcome::Skipped);
    assert_eq!(
        report
            .phases
            .iter()
            .map(|p| &p.name[..])
            .collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert_eq!(report.tasks.spawned, 1);
    assert_eq!(
        report.tasks.aborted,
        ["ticker"],
        "tracked tasks are still finished (forced: aborted at once)"
    );
    assert!(!report.to_string().contains("INTERRUPTED"), "{report}");
    assert_eq!(c.run().await, report);
}

/// Guards a shutdown whose runtime shuts down while it runs: a `run` on
/// another runtime gets a report that says so and names what did not
/// finish, instead of waiting forever.
#[test]
fn a_runtime_that_goes_away_mid_shutdown_still_reports_to_other_runs() {
    let c = coordinator();
    c.register_fn("one", "slow", |_| sleep(Duration::from_secs(3600)))
        .unwrap();
    c.register_fn("two", "later", |_| async {}).unwrap();
    let rt = paused_runtime();
    rt.block_on(async {
        c.spawn("ticker", |cancel| async move { cancel.cancelled().await })
            .unwrap();
        c.trigger();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), c.run())
                .await
                .is_err()
        );
    });
    drop(rt); // drops the shutdown's task in the middle of phase `one`
    let report = paused_runtime().block_on(c.run());
    assert_eq!(
        report.interrupted.as_deref(),
        Some("the tokio runtime running the shutdown shut down before it finished")
    );
    assert!(!report.is_clean());
    let outcome = |name| report.component(name).unwrap().outcome.clone();
    assert_eq!(outcome("slow"), ComponentOutcome::Aborted);
    assert_eq!(outcome("later"), ComponentOutcome::Skipped);
    assert_eq!(report.tasks.spawned, 1);
    assert_eq!(report.tasks.aborted, ["ticker"]);
    assert_eq!(
        report.unfinished(),
        ["slow", "later", "task ticker"],
        "{report}"
    );
}

/// Guards a `run` whose runtime shuts down before the trigger: the shutdown
/// has not started, so a `run` already waiting on another runtime is woken
/// and takes it over, and the shutdown runs in full.
#[test]
fn a_runtime_that_goes_away_before_the_trigger_hands_the_shutdown_over() {
    let c = coordinator();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    c.register_fn("one", "x", move |_| async move {
        r.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let first = paused_runtime();
    first.block_on(async {
        assert!(
            tokio::time::timeout(Duration::from_secs(1), c.run())
                .await
                .is_err()
        );
    });
    let second = paused_runtime();
    let mut waiting = tokio_test::task::spawn(c.run());
    {
        let _rt = second.enter();
        assert!(
            waiting.poll().is_pending(),
            "a shutdown is waiting on `first`"
        );
    }
    assert!(!waiting.is_woken());
    drop(first);
    assert!(waiting.is_woken(), "the waiting run is told to take over");
    {
        let _rt = second.enter();
        assert!(
            waiting.poll().is_pending(),
            "now waiting on its own shutdown task"
        );
    }
    c.trigger();
    let report = second.block_on(waiting);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.interrupted, None);
    assert!(ran.load(Ordering::SeqCst));
}

/// Guards against leaking the shutdown's task: until the trigger it holds
/// the coordinator only weakly, so once every clone is dropped (and with it
/// any way to trigger) the task ends instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn dropping_every_clone_before_the_trigger_ends_the_shutdown_task() {
    let baseline = alive();
    let c = coordinator();
    c.register_fn("one", "x", |_| async {}).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), c.run())
            .await
            .is_err()
    );
    assert_eq!(
        alive(),
        baseline + 1,
        "the shutdown's task waits for a trigger"
    );
    drop(c);
    tokio::task::yield_now().await;
    assert_eq!(alive(), baseline, "and ends with the coordinator");
}

/// Captured by a registered closure: panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("user closure dropped");
    }
}

/// A forced shutdown skips every phase; the closures it never calls are
/// dropped inside a boundary each, so two of them panicking in their drops
/// (in each of two phases) neither abort the process nor show as the
/// coordinator's own panic.
#[tokio::test(start_paused = true)]
async fn skipped_components_that_panic_when_dropped_are_contained() {
    let c = Coordinator::builder()
        .phase("one", Duration::from_secs(5))
        .phase("two", Duration::from_secs(5))
        .task_grace(Duration::from_secs(1))
        .signals(false)
        .build()
        .unwrap();
    for phase in ["one", "two"] {
        for name in ["a", "b"] {
            let guard = PanicOnDrop;
            c.register_fn(phase, name, move |_deadline| {
                let _guard = &guard;
                async {}
            })
            .unwrap();
        }
    }
    c.trigger();
    c.trigger(); // forced: every phase is skipped
    let report = c.run().await;
    assert_eq!(report.interrupted, None, "{report}");
    assert!(report.forced);
    for phase in &report.phases {
        for comp in &phase.components {
            assert_eq!(comp.outcome, ComponentOutcome::Skipped, "{report}");
        }
    }
}

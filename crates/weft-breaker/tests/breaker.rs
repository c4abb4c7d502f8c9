//! Breaker behaviour with paused time: trips, windows, probes, events.

mod support;

use std::future::pending;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{advance, sleep};
use weft_breaker::{CallError, CircuitBreaker, Reason, SlidingWindow, State};
use weft_core::Outcome;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

async fn fail(b: &CircuitBreaker) -> Result<(), CallError<&'static str>> {
    b.call(async { Err("boom") }).await
}
async fn ok(b: &CircuitBreaker) -> Result<(), CallError<&'static str>> {
    b.call(async { Ok(()) }).await
}

/// The transitions published so far (without waiting).
fn drained(
    events: &mut tokio::sync::broadcast::Receiver<weft_breaker::Transition>,
) -> impl Iterator<Item = weft_breaker::Transition> + '_ {
    std::iter::from_fn(|| events.try_recv().ok())
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_success_resets() {
    support::init();
    let b = CircuitBreaker::builder()
        .consecutive_failures(3)
        .sliding_window(SlidingWindow::Disabled)
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    ok(&b).await.unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().consecutive_failures, 2);
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
    let s = b.stats();
    assert_eq!((s.successes, s.failures, s.opened), (1, 5, 1));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_count_window_needs_minimum_calls() {
    let b = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::Count(10))
        .minimum_calls(5)
        .failure_rate(0.6)
        .build()
        .unwrap();
    // 3 failures out of 4 calls: above the rate but under the minimum.
    for r in [false, false, true, false] {
        let _ = if r { ok(&b).await } else { fail(&b).await };
    }
    assert_eq!(b.state(), State::Closed);
    // 4 of 5 failed = 80% >= 60%.
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let b = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::Time(Duration::from_secs(10)))
        .minimum_calls(4)
        .failure_rate(0.5)
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    ok(&b).await.unwrap();
    advance(Duration::from_secs(11)).await;
    // The two old failures left the window: 1 failure in 4 calls.
    ok(&b).await.unwrap();
    ok(&b).await.unwrap();
    ok(&b).await.unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().window_calls, 4);
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip() {
    let b = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::Count(4))
        .minimum_calls(4)
        .slow_calls(100 * MS, 0.5)
        .build()
        .unwrap();
    for d in [10, 200, 10, 150] {
        let _ = b
            .call(async move {
                sleep(d * MS).await;
                Ok::<_, ()>(())
            })
            .await;
    }
    assert_eq!(b.state(), State::Open);
    let s = b.stats();
    assert_eq!((s.slow, s.successes), (2, 4));
}

#[tokio::test(start_paused = true)]
async fn open_rejects_with_retry_after_then_probes_close() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(5 * SEC)
        .half_open_probes(2)
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    advance(2 * SEC).await;
    let mut polled = false;
    let r = b
        .call(async {
            polled = true;
            Ok::<_, ()>(())
        })
        .await;
    let open = match r {
        Err(CallError::Open(o)) => o,
        other => panic!("expected Open, got {other:?}"),
    };
    assert!(!polled, "a rejected call's future is never polled");
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_after(), Some(3 * SEC));
    assert_eq!(
        open.to_string(),
        "circuit breaker is open; next probe in 3s"
    );
    advance(3 * SEC).await;
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().probes, 2);
}

#[tokio::test(start_paused = true)]
async fn repeated_trips_grow_the_open_duration_up_to_the_cap() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(SEC)
        .open_backoff(2.0, 3 * SEC)
        .half_open_probes(1)
        .on_transition(move |t| {
            if t.to == State::Open {
                s2.lock().unwrap().push(t.open_for.unwrap());
            }
        })
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    for wait in [1, 2, 3] {
        advance(wait * SEC).await;
        fail(&b).await.unwrap_err(); // the probe fails
    }
    assert_eq!(*seen.lock().unwrap(), vec![SEC, 2 * SEC, 3 * SEC, 3 * SEC]);
    // Closing resets the growth.
    advance(3 * SEC).await;
    ok(&b).await.unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(seen.lock().unwrap().last(), Some(&SEC));
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_within_bounds() {
    for _ in 0..20 {
        let mut rx;
        let b = CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_duration(10 * SEC)
            .open_jitter(0.5)
            .build()
            .unwrap();
        rx = b.subscribe();
        fail(&b).await.unwrap_err();
        let d = rx.recv().await.unwrap().open_for.unwrap();
        assert!(d >= 5 * SEC && d <= 10 * SEC, "{d:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(SEC)
        .half_open_probes(3)
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    advance(SEC).await;
    ok(&b).await.unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn cancelled_call_is_neither_success_nor_failure() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(SEC)
        .half_open_probes(1)
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    advance(SEC).await;
    // The probe is dropped before it completes: slot freed, nothing counted.
    let probe = b.call(pending::<Result<(), ()>>());
    tokio::select! {
        _ = probe => unreachable!(),
        _ = sleep(MS) => {}
    }
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.stats().probes_in_flight, 0);
    assert_eq!(b.stats().cancelled, 1);
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn hung_probe_does_not_hold_its_slot_forever() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(SEC)
        .half_open_probes(1)
        .half_open_max_wait(10 * SEC)
        .build()
        .unwrap();
    let mut events = b.subscribe();
    fail(&b).await.unwrap_err();
    advance(SEC).await;
    let b2 = b.clone();
    let hung = tokio::spawn(async move { b2.call(pending::<Result<(), ()>>()).await });
    tokio::task::yield_now().await;
    assert_eq!(b.stats().probes_in_flight, 1);
    let e = ok(&b).await.unwrap_err();
    assert!(e.is_open());
    advance(10 * SEC).await;
    // Past the max wait a caller finding no slot reopens the breaker...
    let e = ok(&b).await.unwrap_err();
    assert!(e.is_open());
    assert_eq!(
        drained(&mut events).map(|t| t.reason).collect::<Vec<_>>(),
        [
            Reason::ConsecutiveFailures,
            Reason::OpenElapsed,
            Reason::HalfOpenTimeout
        ]
    );
    // ...and after the open duration a new probe gets through.
    advance(SEC).await;
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    hung.abort();
}

/// Guards that `half_open_max_wait` is measured from the moment every probe
/// slot was taken, not from entering half-open: a breaker that has been
/// half-open for longer than the max wait, with healthy probes completing,
/// must not reopen (`HalfOpenTimeout`) on a caller that finds the only slot
/// taken by a probe that started a moment ago, and that probe's success
/// must count.
#[tokio::test(start_paused = true)]
async fn half_open_timeout_does_not_reopen_while_probes_make_progress() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .sliding_window(SlidingWindow::Disabled)
        .open_duration(SEC)
        .half_open_probes(1)
        .probe_successes(3)
        .half_open_max_wait(10 * SEC)
        .build()
        .unwrap();
    let mut events = b.subscribe();
    b.call(async { Err::<(), _>("down") }).await.unwrap_err();
    sleep(SEC).await;
    b.call(async { Ok::<_, &str>(()) }).await.unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    sleep(11 * SEC).await;
    let probe = b.try_acquire().expect("the slot is free");
    assert!(probe.is_probe());
    let other = b.try_acquire();
    assert!(other.is_err());
    while let Ok(t) = events.try_recv() {
        assert_ne!(
            t.reason,
            Reason::HalfOpenTimeout,
            "reopened although no probe was stuck: {t:?}"
        );
    }
    assert_eq!(b.state(), State::HalfOpen);
    probe.record(Outcome::Success);
    assert_eq!(
        b.stats().probe_successes,
        2,
        "the healthy probe's success was thrown away"
    );
}

/// Guards the other side of `half_open_max_wait`: a probe taken late in a
/// long half-open period that then never completes still reopens the
/// breaker, exactly the max wait after it took the last slot (not before),
/// and its late outcome is ignored.
#[tokio::test(start_paused = true)]
async fn a_probe_stuck_past_the_max_wait_still_reopens_the_breaker() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .sliding_window(SlidingWindow::Disabled)
        .open_duration(SEC)
        .half_open_probes(2)
        .probe_successes(10)
        .half_open_max_wait(10 * SEC)
        .build()
        .unwrap();
    let mut events = b.subscribe();
    fail(&b).await.unwrap_err();
    advance(SEC).await;
    ok(&b).await.unwrap();
    advance(30 * SEC).await;
    // Both slots taken 30 s into half-open; neither probe ever completes.
    let stuck = b.try_acquire_owned().unwrap();
    advance(SEC).await;
    let _stuck_too = b.try_acquire_owned().unwrap();
    advance(10 * SEC - MS).await;
    let e = b.try_acquire().unwrap_err();
    assert_eq!(e.state(), State::HalfOpen, "not yet the max wait: {e}");
    advance(MS).await;
    let e = b.try_acquire().unwrap_err();
    assert_eq!(e.state(), State::Open);
    assert_eq!(e.retry_after(), Some(SEC));
    assert_eq!(
        drained(&mut events).map(|t| t.reason).collect::<Vec<_>>(),
        [
            Reason::ConsecutiveFailures,
            Reason::OpenElapsed,
            Reason::HalfOpenTimeout
        ]
    );
    stuck.record(Outcome::Success);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().probe_successes, 0);
}

#[tokio::test(start_paused = true)]
async fn classifier_decides_what_counts() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(2)
        .sliding_window(SlidingWindow::Disabled)
        .build()
        .unwrap();
    let classify = |r: &Result<(), u16>| match r {
        Ok(()) => Outcome::Success,
        Err(404) => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    };
    for _ in 0..5 {
        let _ = b.call_with(&classify, async { Err(404) }).await;
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().ignored, 5);
    let _ = b.call_with(&classify, async { Err(503) }).await;
    let _ = b.call_with(&classify, async { Err(404) }).await; // does not reset
    let _ = b.call_with(&classify, async { Err(503) }).await;
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn forced_states_and_events() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .on_transition(move |t| l2.lock().unwrap().push((t.from, t.to)))
        .build()
        .unwrap();
    let mut watch = b.watch();
    let mut events = b.subscribe();
    b.force_open();
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), State::ForcedOpen);
    let e = ok(&b).await.unwrap_err();
    match e {
        CallError::Open(o) => {
            assert_eq!((o.state(), o.retry_after()), (State::ForcedOpen, None));
        }
        other => panic!("{other:?}"),
    }
    advance(Duration::from_secs(3600)).await;
    assert!(ok(&b).await.is_err(), "forced open stays open");
    b.disable();
    for _ in 0..10 {
        fail(&b).await.unwrap_err();
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.stats().passthrough, 10);
    b.reset();
    assert_eq!(*watch.borrow_and_update(), State::Closed);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Disabled),
            (State::Disabled, State::Closed)
        ]
    );
    let t = events.recv().await.unwrap();
    assert_eq!(
        (t.to, t.reason, t.generation),
        (State::ForcedOpen, Reason::Forced, 1)
    );
    let s = b.stats();
    assert_eq!(
        (s.forced_open, s.disabled, s.closed, s.rejected),
        (1, 1, 1, 2)
    );
}

/// Guards that a panicking `on_transition` callback is contained: the
/// panic does not reach the caller whose call moved the breaker (here the
/// first half-open probe), the probe slot that call holds is not leaked, the
/// probe still counts, and the panic is counted in the stats.
#[tokio::test(start_paused = true)]
async fn panicking_callback_does_not_leak_the_probe_slot() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .sliding_window(SlidingWindow::Disabled)
        .open_duration(SEC)
        .half_open_probes(1)
        .probe_successes(2)
        .on_transition(|t| {
            if t.to == State::HalfOpen {
                panic!("metrics exporter bug");
            }
        })
        .build()
        .unwrap();
    let mut events = b.subscribe();
    b.call(async { Err::<(), _>("down") }).await.unwrap_err();
    sleep(SEC).await;
    let r = catch_unwind(AssertUnwindSafe(|| {
        b.try_acquire().map(|p| p.record(Outcome::Success))
    }));
    assert!(
        matches!(r, Ok(Ok(()))),
        "the callback's panic reached the caller"
    );
    let s = b.stats();
    assert_eq!(
        (s.state, s.probes_in_flight, s.probe_successes),
        (State::HalfOpen, 0, 1),
        "no permit exists, yet a probe slot is held"
    );
    assert_eq!(s.callback_panics, 1);
    // The slot is usable: the next probe gets it and closes the breaker.
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    // Subscribers still saw every transition.
    let tos: Vec<State> = drained(&mut events).map(|t| t.to).collect();
    assert_eq!(tos, vec![State::Open, State::HalfOpen, State::Closed]);
}

/// A tracing subscriber that panics on every info event (a buggy log layer).
struct PanicOnInfo;

impl tracing::Subscriber for PanicOnInfo {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        if *e.metadata().level() == tracing::Level::INFO {
            panic!("log layer bug");
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Guards that the probe slot taken by the call that turns the breaker
/// half-open is held by a permit before the transition is published, so
/// that anything unwinding out of publishing (here a panicking tracing
/// subscriber, whose panic is not the breaker's to catch) frees the slot.
#[tokio::test(start_paused = true)]
async fn unwinding_while_publishing_a_transition_frees_the_probe_slot() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .sliding_window(SlidingWindow::Disabled)
        .open_duration(SEC)
        .half_open_probes(1)
        .build()
        .unwrap();
    fail(&b).await.unwrap_err();
    sleep(SEC).await;
    let r = tracing::subscriber::with_default(PanicOnInfo, || {
        catch_unwind(AssertUnwindSafe(|| {
            b.try_acquire().map(|p| p.record(Outcome::Success))
        }))
    });
    assert!(r.is_err(), "the subscriber's panic is the caller's");
    let s = b.stats();
    assert_eq!(
        (s.state, s.probes_in_flight, s.cancelled),
        (State::HalfOpen, 0, 1),
        "the unwind leaked the probe slot"
    );
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn manual_permits() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let p = b.try_acquire_owned().unwrap();
    assert!(!p.is_probe());
    let h = tokio::spawn(async move { p.record(Outcome::Failure) });
    h.await.unwrap();
    assert_eq!(b.state(), State::Open);
    assert!(b.try_acquire().is_err());
}

#[test]
fn invalid_configurations_say_what_to_pass() {
    let e = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::Count(0))
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "count window of 0 calls: pass between 1 and 1000000"
    );
    let e = CircuitBreaker::builder()
        .failure_rate(1.5)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("pass a fraction in (0, 1]"));
    let e = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::Disabled)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("no trip condition"));
    let e = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::Count(10))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("pass at most 10"));
    assert!(
        CircuitBreaker::builder()
            .half_open_probes(0)
            .build()
            .is_err()
    );
    assert!(
        CircuitBreaker::builder()
            .open_duration(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        CircuitBreaker::builder()
            .sliding_window(SlidingWindow::Time(Duration::from_millis(1500)))
            .build()
            .is_err()
    );
}

/// Guards that an event capacity above the documented maximum (1 << 20) is
/// refused by `build` with an error saying what to pass, instead of
/// panicking inside tokio's broadcast channel; the maximum itself is
/// accepted, and a keyed breaker's template is checked the same way.
#[test]
fn event_capacity_above_the_max_is_refused_not_a_panic() {
    let r = std::panic::catch_unwind(|| {
        CircuitBreaker::builder()
            .event_capacity(usize::MAX)
            .build()
            .map(drop)
    });
    let e = r.expect("build panicked").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "event capacity of {}: pass between 1 and 1048576",
            usize::MAX
        )
    );
    let e = CircuitBreaker::builder()
        .event_capacity((1 << 20) + 1)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("pass between 1 and 1048576"), "{e}");
    assert!(CircuitBreaker::builder().event_capacity(0).build().is_err());
    assert!(
        CircuitBreaker::builder()
            .event_capacity(1 << 20)
            .build()
            .is_ok()
    );
    let keyed = weft_breaker::KeyedBreaker::<String>::new(
        CircuitBreaker::builder().event_capacity(usize::MAX),
        10,
        SEC,
    );
    assert!(keyed.is_err());
}

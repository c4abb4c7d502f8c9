//! loom models of the state machine's races. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p weft-breaker --release loom`.

use loom::sync::Arc;
use loom::thread;
use weft_core::Outcome;

use super::core::{Core, Kind, Params, WindowSpec};
use super::state::{Reason, State};

fn params(probes: u32, successes: u32) -> Params {
    Params {
        consecutive_failures: 1,
        failure_rate: 0.5,
        minimum_calls: 1,
        slow_threshold: None,
        slow_rate: None,
        probes,
        probe_successes: successes,
        open_base: 10,
        open_multiplier: 2.0,
        open_max: 1_000,
        open_jitter: 0.0,
        half_open_max_wait: 1_000_000,
    }
}

/// A core that is half-open with no probe in flight.
fn half_open(probes: u32, successes: u32) -> Core {
    half_open_with(params(probes, successes))
}

/// A core that is half-open (since time 10) with no probe in flight.
fn half_open_with(p: Params) -> Core {
    let c = Core::new(p, WindowSpec::None);
    let mut ev = None;
    let t = c.acquire(&mut || 0, &mut ev).unwrap();
    c.complete(t, Outcome::Failure, &mut || 0);
    let p = c.acquire(&mut || 10, &mut ev).unwrap();
    assert_eq!(p.kind, Kind::Probe);
    c.cancel(p);
    assert_eq!(c.state(), State::HalfOpen);
    c
}

#[test]
fn loom_probe_limit_holds() {
    loom::model(|| {
        let c = Arc::new(half_open(1, 5));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                thread::spawn(move || {
                    let mut ev = None;
                    c.acquire(&mut || 20, &mut ev).is_ok()
                })
            })
            .collect();
        let admitted = hs
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 1);
        assert_eq!(c.half_open_counts(), (1, 0));
    });
}

#[test]
fn loom_release_races_with_acquire() {
    loom::model(|| {
        let c = Arc::new(half_open(1, 5));
        let mut ev = None;
        let first = c.acquire(&mut || 20, &mut ev).unwrap();
        let c2 = c.clone();
        let h = thread::spawn(move || {
            let mut ev = None;
            c2.acquire(&mut || 20, &mut ev).ok()
        });
        c.complete(first, Outcome::Ignored, &mut || 20);
        let second = h.join().unwrap();
        let (in_flight, _) = c.half_open_counts();
        // Either the second caller came after the release (and holds the
        // slot) or before it (and was refused): never two, never a leak.
        assert_eq!(in_flight, u32::from(second.is_some()));
    });
}

#[test]
fn loom_one_transition_per_trip() {
    loom::model(|| {
        let c = Arc::new(Core::new(params(1, 1), WindowSpec::Count(4)));
        let mut ev = None;
        let tickets = [
            c.acquire(&mut || 0, &mut ev).unwrap(),
            c.acquire(&mut || 0, &mut ev).unwrap(),
        ];
        let hs: Vec<_> = tickets
            .into_iter()
            .map(|t| {
                let c = c.clone();
                thread::spawn(move || {
                    c.complete(t, Outcome::Failure, &mut || 0)
                        .transition
                        .is_some()
                })
            })
            .collect();
        let trips = hs
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|t| *t)
            .count();
        assert_eq!(trips, 1);
        assert_eq!(c.state(), State::Open);
    });
}

#[test]
fn loom_success_and_failure_probes_race() {
    loom::model(|| {
        let c = Arc::new(half_open(2, 2));
        let mut ev = None;
        let a = c.acquire(&mut || 20, &mut ev).unwrap();
        let b = c.acquire(&mut || 20, &mut ev).unwrap();
        let c2 = c.clone();
        let h = thread::spawn(move || c2.complete(a, Outcome::Success, &mut || 21).transition);
        let tb = c.complete(b, Outcome::Failure, &mut || 21).transition;
        let ta = h.join().unwrap();
        // The failure always reopens; a success first only counts.
        assert!(tb.is_some());
        assert!(ta.is_none());
        assert_eq!(c.state(), State::Open);
    });
}

#[test]
fn loom_half_open_max_wait_runs_from_the_last_slot_taken() {
    loom::model(|| {
        let mut p = params(1, 5);
        p.half_open_max_wait = 100;
        let c = Arc::new(half_open_with(p));
        // Two callers race for the only slot, with different readings of
        // the clock; the loser's older reading may be written last.
        let hs: Vec<_> = [20u64, 30]
            .into_iter()
            .map(|t| {
                let c = c.clone();
                thread::spawn(move || {
                    let mut ev = None;
                    c.acquire(&mut || t, &mut ev).is_ok()
                })
            })
            .collect();
        let won: Vec<bool> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1);
        let mut ev1 = None;
        let r = c.acquire(&mut || 129, &mut ev1);
        if won[1] {
            // Taken at 30: at 129 it has not been held for the max wait.
            assert_eq!(r.unwrap_err().state, State::HalfOpen);
            assert!(ev1.is_none());
        }
        // Either way, by 100 after the later reading it has timed out, once.
        let mut ev2 = None;
        let r = c.acquire(&mut || 130, &mut ev2);
        assert_eq!(r.unwrap_err().state, State::Open);
        let timeouts = [ev1, ev2]
            .into_iter()
            .flatten()
            .filter(|e| e.reason == Reason::HalfOpenTimeout)
            .count();
        assert_eq!(timeouts, 1);
    });
}

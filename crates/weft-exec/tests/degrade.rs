//! Degradation levels: thresholds, hysteresis, recovery, notifications.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::sleep;
use weft_exec::{Degradation, DegradeError, Level, LevelChange, Thresholds};

fn cpu_mem(delay: Duration, log: Arc<Mutex<Vec<LevelChange>>>) -> Degradation {
    Degradation::builder()
        .name("api")
        .signal("cpu", Thresholds::new(0.70, 0.85, 0.95).hysteresis(0.05))
        .signal("mem", Thresholds::new(0.80, 0.90, 0.97))
        .recovery_delay(delay)
        .on_change(move |c| log.lock().unwrap().push(c.clone()))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn escalates_at_once_to_the_worst_signal() {
    support::init();
    let log = Arc::new(Mutex::new(Vec::new()));
    let d = cpu_mem(Duration::from_secs(5), log.clone());
    assert_eq!(d.level(), Level::Full);
    assert_eq!(d.record("cpu", 0.5), Level::Full);
    assert_eq!(d.record("cpu", 0.72), Level::Reduced);
    assert_eq!(d.record("mem", 0.98), Level::Emergency, "worst signal wins");
    assert_eq!(
        d.record("cpu", 0.1),
        Level::Emergency,
        "mem still says emergency"
    );
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[1].from, log[1].to, log[1].signal.as_str()),
        (Level::Reduced, Level::Emergency, "mem")
    );
}

#[tokio::test(start_paused = true)]
async fn hysteresis_prevents_flapping() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let d = cpu_mem(Duration::ZERO, log.clone());
    d.record("cpu", 0.86);
    assert_eq!(d.level(), Level::Minimal);
    // A noisy signal around the 0.85 threshold, inside the 0.05 band.
    for v in [0.84, 0.86, 0.83, 0.851, 0.81, 0.849, 0.85, 0.80] {
        d.record("cpu", v);
        assert_eq!(d.level(), Level::Minimal, "flapped at {v}");
    }
    assert_eq!(log.lock().unwrap().len(), 1);
    // Clearly below the band: leaves (recovery delay 0) to what cpu supports.
    assert_eq!(d.record("cpu", 0.79), Level::Reduced);
}

#[tokio::test(start_paused = true)]
async fn recovers_all_the_way_to_full_after_the_delay() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let d = cpu_mem(Duration::from_secs(10), log.clone());
    let mut rx = d.subscribe();
    d.record("cpu", 0.99);
    assert_eq!(*rx.borrow_and_update(), Level::Emergency);
    d.record("cpu", 0.2);
    sleep(Duration::from_secs(9)).await;
    assert_eq!(
        d.record("cpu", 0.2),
        Level::Emergency,
        "not before the delay"
    );
    // A spike resets the clock.
    d.record("cpu", 0.96);
    d.record("cpu", 0.2);
    sleep(Duration::from_secs(10)).await;
    assert_eq!(
        d.record("cpu", 0.2),
        Level::Full,
        "recovers straight to Full"
    );
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), Level::Full);
    let s = d.stats();
    assert_eq!((s.level, s.changes), (Level::Full, 2));
    assert_eq!(log.lock().unwrap().last().unwrap().to, Level::Full);
}

#[tokio::test(start_paused = true)]
async fn watch_sees_every_change() {
    let d = cpu_mem(Duration::ZERO, Arc::default());
    let mut rx = d.subscribe();
    let seen = tokio::spawn(async move {
        let mut v = Vec::new();
        while rx.changed().await.is_ok() {
            v.push(*rx.borrow_and_update());
            if v.len() == 3 {
                break;
            }
        }
        v
    });
    for x in [0.75, 0.90, 0.1] {
        d.record("cpu", x);
        tokio::task::yield_now().await;
    }
    assert_eq!(
        seen.await.unwrap(),
        vec![Level::Reduced, Level::Minimal, Level::Full]
    );
}

#[test]
fn build_errors() {
    assert_eq!(
        Degradation::builder().build().unwrap_err(),
        DegradeError::NoSignals
    );
    let e = Degradation::builder()
        .signal("x", Thresholds::new(0.9, 0.5, 1.0))
        .build()
        .unwrap_err();
    assert_eq!(e, DegradeError::BadThresholds("x".into()));
    let e = Degradation::builder()
        .signal("x", Thresholds::new(1.0, 2.0, 3.0))
        .signal("x", Thresholds::new(1.0, 2.0, 3.0))
        .build()
        .unwrap_err();
    assert_eq!(e, DegradeError::Duplicate("x".into()));
    let e = Degradation::builder()
        .signal(
            "cpu",
            Thresholds::new(0.7, 0.8, 0.9).hysteresis(f64::INFINITY),
        )
        .build()
        .unwrap_err();
    assert_eq!(e, DegradeError::BadHysteresis("cpu".into()));
    assert!(e.to_string().contains("finite"), "{e}");
    // NaN and negative bands are no band: the level is left below the
    // threshold itself.
    for band in [f64::NAN, -1.0] {
        let d = Degradation::builder()
            .signal("cpu", Thresholds::new(0.7, 0.8, 0.9).hysteresis(band))
            .recovery_delay(std::time::Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(d.record("cpu", 0.75), Level::Reduced);
        assert_eq!(d.record("cpu", 0.69), Level::Full, "band {band}");
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the sequence of signal values and delays: the level is
        /// never below what the current values demand, every change reaches
        /// the callback and the watch channel, and once every signal is calm
        /// for the recovery delay the level is back to Full.
        #[test]
        fn never_below_demand_and_always_recovers(
            steps in proptest::collection::vec((0usize..2, 0.0f64..1.0, 0u64..4_000), 1..60),
        ) {
            let rt = support::paused();
            rt.block_on(async move {
                let log = Arc::new(Mutex::new(Vec::new()));
                let d = cpu_mem(Duration::from_secs(3), log.clone());
                let mut rx = d.subscribe();
                // The thresholds of `cpu_mem`: cpu, mem.
                let enters = [[0.70, 0.85, 0.95], [0.80, 0.90, 0.97]];
                let mut values = [0.0f64; 2];
                let mut seen = 0u64;
                for (sig, v, wait_ms) in steps {
                    values[sig] = v;
                    let level = d.record(["cpu", "mem"][sig], v);
                    // Demand: the highest level whose threshold the value reaches.
                    let need = values
                        .iter()
                        .zip(&enters)
                        .map(|(v, enter)| enter.iter().filter(|t| v >= *t).count())
                        .max()
                        .unwrap();
                    prop_assert!(level as usize >= need, "level {level:?} below demand {need}");
                    if rx.has_changed().unwrap() {
                        rx.borrow_and_update();
                        seen += 1;
                    }
                    sleep(Duration::from_millis(wait_ms)).await;
                }
                d.record("cpu", 0.0);
                d.record("mem", 0.0);
                sleep(Duration::from_secs(3)).await;
                prop_assert_eq!(d.record("cpu", 0.0), Level::Full);
                let changes = d.stats().changes;
                prop_assert_eq!(log.lock().unwrap().len() as u64, changes);
                prop_assert!(seen <= changes);
                Ok(())
            })?;
        }
    }
}

//! Half-open probe limits under real threads and across clones.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use weft_breaker::{CircuitBreaker, State};
use weft_core::Outcome;

#[test]
fn probe_limit_holds_across_threads_and_clones() {
    support::init();
    const PROBES: u32 = 3;
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_nanos(1))
        .half_open_probes(PROBES)
        .probe_successes(10_000)
        .half_open_max_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    // Open for 1 ns (tokio's clock outside a runtime reads the system clock):
    // the first thread to come back turns it half-open.
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let b = b.clone();
            let (in_flight, max_seen, admitted) =
                (in_flight.clone(), max_seen.clone(), admitted.clone());
            s.spawn(move || {
                for i in 0..20_000u32 {
                    if let Ok(p) = b.try_acquire() {
                        assert!(p.is_probe());
                        admitted.fetch_add(1, Ordering::Relaxed);
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        assert!(now <= PROBES, "{now} probes in flight");
                        std::hint::spin_loop();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if i % 2 == 0 {
                            p.record(Outcome::Ignored);
                        } else {
                            drop(p); // cancelled
                        }
                    }
                }
            });
        }
    });
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.stats().probes_in_flight, 0, "every slot was given back");
    assert!(admitted.load(Ordering::Relaxed) > 0);
    assert!(max_seen.load(Ordering::SeqCst) <= PROBES);
}

#[tokio::test(start_paused = true)]
async fn concurrent_probe_tasks_admit_exactly_n() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(1))
        .half_open_probes(2)
        .probe_successes(2)
        .build()
        .unwrap();
    let _ = b.call(async { Err::<(), _>(()) }).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let running = Arc::new(AtomicU32::new(0));
    let calls = (0..20).map(|_| {
        let b = b.clone();
        let running = running.clone();
        async move {
            b.call(async {
                running.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, ()>(())
            })
            .await
        }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "exactly the probe limit ran");
    assert_eq!(running.load(Ordering::SeqCst), 2);
    assert_eq!(b.state(), State::Closed);
}

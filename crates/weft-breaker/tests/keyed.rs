//! Keyed breakers: one per key, capped, idle keys evicted.

mod support;

use std::time::Duration;

use tokio::time::advance;
use weft_breaker::{CircuitBreaker, KeyedBreaker, State};

fn keyed(cap: usize, idle_secs: u64) -> KeyedBreaker<String> {
    KeyedBreaker::new(
        CircuitBreaker::builder().consecutive_failures(1),
        cap,
        Duration::from_secs(idle_secs),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_breaker_per_key() {
    support::init();
    let k = keyed(10, 60);
    let _ = k.call(&"a".to_owned(), async { Err::<(), _>(()) }).await;
    assert_eq!(k.get(&"a".to_owned()).state(), State::Open);
    assert_eq!(k.get(&"b".to_owned()).state(), State::Closed);
    assert!(k.get(&"a".to_owned()).name().ends_with("[\"a\"]"));
    // The same key shares one breaker.
    let a1 = k.get(&"a".to_owned());
    a1.reset();
    assert_eq!(k.get(&"a".to_owned()).state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn cap_is_never_exceeded_and_lru_goes_first() {
    let k = keyed(3, 3600);
    for key in ["a", "b", "c"] {
        k.get(&key.to_owned());
        advance(Duration::from_millis(1)).await;
    }
    k.get(&"a".to_owned()); // a is now the most recent
    advance(Duration::from_millis(1)).await;
    k.get(&"d".to_owned()); // evicts b
    assert_eq!(k.len(), 3);
    assert_eq!(k.stats().evicted_lru, 1);
    k.get(&"a".to_owned()).force_open();
    k.get(&"c".to_owned());
    k.get(&"d".to_owned());
    assert_eq!(
        k.get(&"a".to_owned()).state(),
        State::ForcedOpen,
        "a was kept"
    );
    for i in 0..100 {
        k.get(&format!("k{i}"));
        assert!(k.len() <= 3);
    }
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted() {
    let k = keyed(100, 10);
    for i in 0..50 {
        k.get(&format!("k{i}"));
    }
    advance(Duration::from_secs(5)).await;
    k.get(&"k0".to_owned());
    advance(Duration::from_secs(6)).await;
    // Adding a key sweeps (at most once per idle timeout).
    k.get(&"new".to_owned());
    assert_eq!(k.len(), 2);
    assert_eq!(k.stats().evicted_idle, 49);
    advance(Duration::from_secs(20)).await;
    assert_eq!(k.evict_idle(), 2);
    assert!(k.is_empty());
}

#[test]
fn bad_keyed_config_is_refused() {
    assert!(
        KeyedBreaker::<u32>::new(CircuitBreaker::builder(), 0, Duration::from_secs(1)).is_err()
    );
    assert!(KeyedBreaker::<u32>::new(CircuitBreaker::builder(), 1, Duration::ZERO).is_err());
    assert!(
        KeyedBreaker::<u32>::new(
            CircuitBreaker::builder().failure_rate(0.0),
            1,
            Duration::from_secs(1)
        )
        .is_err()
    );
}

#[test]
fn keyed_breaker_under_threads_stays_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let k =
        KeyedBreaker::<u64>::new(CircuitBreaker::builder(), 16, Duration::from_secs(3600)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let k = k.clone();
            s.spawn(move || {
                for i in 0..2_000u64 {
                    let b = k.get(&((i * 7 + t) % 64));
                    drop(b.try_acquire());
                    assert!(k.len() <= 16);
                }
            });
        }
    });
    assert!(k.len() <= 16);
}

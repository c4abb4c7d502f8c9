//! Keyed breakers: one per key, capped, idle keys evicted.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
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

/// A keyed breaker whose breakers trip on one failure, stay open 30 s, twice
/// as long on each reopening, and admit one probe.
fn keyed_backoff(cap: usize, idle: Duration) -> KeyedBreaker<String> {
    KeyedBreaker::new(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_duration(Duration::from_secs(30))
            .open_backoff(2.0, Duration::from_secs(600))
            .half_open_probes(1),
        cap,
        idle,
    )
    .unwrap()
}

async fn fail(k: &KeyedBreaker<String>, key: &str) {
    let _ = k
        .call(&key.to_owned(), async { Err::<(), _>("refused") })
        .await;
}

fn retry_after(k: &KeyedBreaker<String>, key: &str) -> Option<Duration> {
    match k.get(&key.to_owned()).try_acquire() {
        Ok(_) => None,
        Err(open) => open.retry_after(),
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_closed_keys_go_before_an_open_one() {
    support::init();
    let k = keyed_backoff(4, Duration::from_secs(3600));
    // "sick" trips, probes, fails again: open for 60 s, second trip.
    fail(&k, "sick").await;
    advance(Duration::from_secs(30)).await;
    fail(&k, "sick").await;
    assert_eq!(retry_after(&k, "sick"), Some(Duration::from_secs(60)));
    // Then three healthy keys, all used after it: "sick" is the least
    // recently used.
    for key in ["a", "b", "c"] {
        advance(Duration::from_millis(1)).await;
        k.get(&key.to_owned());
    }
    // Key pressure: each new key takes a closed key's place.
    for i in 0..20 {
        advance(Duration::from_millis(1)).await;
        k.get(&format!("new{i}"));
        assert_eq!(k.len(), 4);
    }
    assert_eq!(k.stats().evicted_lru, 20);
    assert_eq!(k.stats().evicted_open, 0);
    let sick = k.get(&"sick".to_owned());
    assert_eq!(sick.state(), State::Open, "the open breaker was kept");
    assert_eq!(sick.stats().opened, 2, "with its trips");
    // Its backoff too: the next failed probe opens it for 120 s, not 30.
    advance(Duration::from_secs(60)).await;
    fail(&k, "sick").await;
    assert_eq!(retry_after(&k, "sick"), Some(Duration::from_secs(120)));
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_with_every_key_open_the_lru_goes() {
    support::init();
    let k = keyed_backoff(3, Duration::from_secs(3600));
    for key in ["a", "b", "c"] {
        fail(&k, key).await;
        advance(Duration::from_millis(1)).await;
    }
    // Every key is open: the least recently used one ("a") makes room.
    k.get(&"d".to_owned());
    assert_eq!(k.len(), 3);
    assert_eq!(k.stats().evicted_lru, 1);
    assert_eq!(k.stats().evicted_open, 1);
    // Now "d" is the only closed key: it goes next, although "b" and "c"
    // were used before it.
    advance(Duration::from_millis(1)).await;
    k.get(&"e".to_owned());
    assert_eq!(k.stats().evicted_lru, 2);
    assert_eq!(k.stats().evicted_open, 1);
    for key in ["b", "c"] {
        let b = k.get(&key.to_owned());
        assert_eq!((b.state(), b.stats().opened), (State::Open, 1), "{key}");
    }
    // "a" was dropped: it starts afresh.
    assert_eq!(k.get(&"a".to_owned()).stats().opened, 0);
}

/// Counts the keyed map's own `warn!` events (not the breakers' trips) and keeps their `more_since_last_line` fields.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<Option<u64>>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct More(Option<u64>);
        impl tracing::field::Visit for More {
            fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                if f.name() == "more_since_last_line" {
                    self.0 = Some(v);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let m = event.metadata();
        if *m.level() == tracing::Level::WARN && m.module_path() == Some("weft_breaker::keyed") {
            let mut more = More(None);
            event.record(&mut more);
            self.0.lock().unwrap().push(more.0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn evicting_open_keys_under_pressure_warns_once_a_second_and_counts_every_one() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Warnings::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let k = keyed_backoff(2, Duration::from_secs(3600));
    fail(&k, "a").await;
    fail(&k, "b").await;
    // Every new key evicts an open one, then trips itself: 50 evictions of
    // open keys within one (paused) second.
    for i in 0..50 {
        fail(&k, &format!("k{i}")).await;
    }
    assert_eq!(k.stats().evicted_open, 50, "every eviction is counted");
    assert_eq!(*warnings.0.lock().unwrap(), vec![Some(0)], "one line");
    advance(Duration::from_secs(1)).await;
    fail(&k, "late").await;
    assert_eq!(k.stats().evicted_open, 51);
    assert_eq!(
        *warnings.0.lock().unwrap(),
        vec![Some(0), Some(49)],
        "the next line stands for the 49 not logged"
    );
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_an_elapsed_open_breaker_goes_before_one_still_open() {
    let k = keyed_backoff(2, Duration::from_secs(3600));
    fail(&k, "elapsed").await;
    advance(Duration::from_secs(20)).await;
    fail(&k, "open").await;
    // "elapsed" is past its 30 s, "open" has 20 s to go; "open" is the
    // least recently used.
    advance(Duration::from_secs(10)).await;
    k.get(&"elapsed".to_owned());
    advance(Duration::from_secs(1)).await;
    k.get(&"x".to_owned());
    assert_eq!(k.get(&"open".to_owned()).stats().opened, 1, "kept");
    assert_eq!(k.stats().evicted_open, 1);
    assert_eq!(k.get(&"elapsed".to_owned()).stats().opened, 0, "evicted");
}

#[tokio::test(start_paused = true)]
async fn idle_eviction_keeps_an_open_breaker_until_its_open_period_elapsed() {
    support::init();
    let k = keyed_backoff(100, Duration::from_secs(10));
    k.get(&"fine".to_owned());
    fail(&k, "sick").await; // open for 30 s
    advance(Duration::from_secs(11)).await;
    // Both idle; only the healthy one goes.
    assert_eq!(k.evict_idle(), 1);
    assert_eq!(k.len(), 1);
    advance(Duration::from_secs(18)).await; // 29 s: still open
    assert_eq!(k.evict_idle(), 0);
    // The sweep run when a key is added keeps it too.
    k.get(&"other".to_owned());
    assert_eq!(k.len(), 2);
    assert_eq!(k.stats().evicted_idle, 1);
    advance(Duration::from_secs(2)).await; // 31 s: open period over
    assert_eq!(
        k.evict_idle(),
        1,
        "an idle breaker past its open period may go"
    );
    assert_eq!(k.len(), 1);
    assert_eq!(k.get(&"sick".to_owned()).stats().opened, 0, "afresh");
}

#[tokio::test(start_paused = true)]
async fn idle_eviction_keeps_a_half_open_breaker_with_a_probe_in_flight() {
    let k = keyed_backoff(100, Duration::from_secs(10));
    fail(&k, "sick").await;
    advance(Duration::from_secs(30)).await;
    let probe = k.get(&"sick".to_owned()).try_acquire_owned().unwrap();
    assert!(probe.is_probe());
    advance(Duration::from_secs(20)).await;
    assert_eq!(k.evict_idle(), 0, "its probe is in flight");
    drop(probe);
    assert_eq!(k.evict_idle(), 1, "half-open, idle, no probe in flight");
}

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    Fail(u8),
    Advance(u64),
    EvictIdle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6).prop_map(Op::Get),
        3 => (0u8..6).prop_map(Op::Fail),
        2 => (1u64..40_000).prop_map(Op::Advance),
        1 => Just(Op::EvictIdle),
    ]
}

/// The eviction policy, written plainly: keys with when they were last used
/// and until when they are open (breakers trip on one failure, stay open
/// `OPEN` ms, admit one probe).
#[derive(Default)]
struct Model {
    keys: HashMap<u8, ModelKey>,
    last_sweep: u64,
    evicted_idle: u64,
    evicted_lru: u64,
    evicted_open: u64,
}

#[derive(Clone, Copy)]
struct ModelKey {
    last_used: u64,
    open_until: Option<u64>,
    opened: u64,
}

const CAP: usize = 3;
const IDLE: u64 = 20_000;
const OPEN: u64 = 30_000;

impl ModelKey {
    /// 0 closed, 1 open past its open duration, 2 open within it.
    fn worth(&self, now: u64) -> u8 {
        match self.open_until {
            None => 0,
            Some(u) if now >= u => 1,
            Some(_) => 2,
        }
    }
}

impl Model {
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.keys.len();
        self.keys
            .retain(|_, e| now - e.last_used < IDLE || e.worth(now) == 2);
        let n = before - self.keys.len();
        self.evicted_idle += n as u64;
        n
    }

    fn get(&mut self, key: u8, now: u64) -> &mut ModelKey {
        if !self.keys.contains_key(&key) {
            if now - self.last_sweep >= IDLE {
                self.last_sweep = now;
                self.sweep(now);
            }
            if self.keys.len() == CAP && self.sweep(now) == 0 {
                let (&victim, e) = self
                    .keys
                    .iter()
                    .min_by_key(|(_, e)| (e.worth(now), e.last_used))
                    .unwrap();
                self.evicted_lru += 1;
                if e.worth(now) > 0 {
                    self.evicted_open += 1;
                }
                self.keys.remove(&victim);
            }
            self.keys.insert(
                key,
                ModelKey {
                    last_used: now,
                    open_until: None,
                    opened: 0,
                },
            );
        }
        let e = self.keys.get_mut(&key).unwrap();
        e.last_used = now;
        e
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against the model: the keys held (seen through each lookup's state
    /// and trip count, and the key count) and the eviction counts.
    #[test]
    fn eviction_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let k = KeyedBreaker::new(
                CircuitBreaker::builder()
                    .consecutive_failures(1)
                    .open_duration(Duration::from_millis(OPEN))
                    .half_open_probes(1),
                CAP,
                Duration::from_millis(IDLE),
            )
            .unwrap();
            let mut m = Model::default();
            let mut now = 0;
            for op in ops {
                match op {
                    Op::Get(key) => {
                        let b = k.get(&key.to_string());
                        let e = *m.get(key, now);
                        let state = if e.open_until.is_some() { State::Open } else { State::Closed };
                        prop_assert_eq!((b.state(), b.stats().opened), (state, e.opened), "key {}", key);
                    }
                    Op::Fail(key) => {
                        let _ = k.call(&key.to_string(), async { Err::<(), _>(()) }).await;
                        let e = m.get(key, now);
                        // Closed trips; open past its duration probes, fails
                        // and reopens; open within it rejects.
                        if e.worth(now) < 2 {
                            e.open_until = Some(now + OPEN);
                            e.opened += 1;
                        }
                    }
                    Op::Advance(ms) => {
                        advance(Duration::from_millis(ms)).await;
                        now += ms;
                    }
                    Op::EvictIdle => {
                        prop_assert_eq!(k.evict_idle(), m.sweep(now));
                    }
                }
                // Distinct times, so that least recently used is one key.
                advance(Duration::from_millis(1)).await;
                now += 1;
                let st = k.stats();
                prop_assert_eq!(k.len(), m.keys.len());
                prop_assert_eq!(
                    (st.evicted_idle, st.evicted_lru, st.evicted_open),
                    (m.evicted_idle, m.evicted_lru, m.evicted_open)
                );
            }
            Ok(())
        })?;
    }
}

//! merge and priority mux: every input item emitted exactly once (property
//! tests over random inputs with random pending points), per-input order,
//! fairness, weights, no starvation, no drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt, stream};
use proptest::prelude::*;
use weft_fanout::merge::{MergeError, merge_biased, merge_fair, merge_weighted};
use weft_fanout::mux::{MuxError, PriorityMux};

/// A stream of `(input, seq)` that returns `Pending` (and wakes itself) at
/// the polls listed in `stalls`, so inputs are ready at different moments.
struct Stuttering {
    input: usize,
    next: usize,
    len: usize,
    polls: usize,
    stalls: Vec<bool>,
}

impl Stream for Stuttering {
    type Item = (usize, usize);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let p = self.polls;
        self.polls += 1;
        if !self.stalls.is_empty() && self.stalls[p % self.stalls.len()] {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.next == self.len {
            return Poll::Ready(None);
        }
        self.next += 1;
        Poll::Ready(Some((self.input, self.next - 1)))
    }
}

fn inputs(spec: &[(usize, Vec<bool>)]) -> Vec<Stuttering> {
    spec.iter()
        .enumerate()
        .map(|(input, (len, stalls))| Stuttering {
            input,
            next: 0,
            len: *len,
            polls: 0,
            // Always at least one ready poll per cycle, so every input ends.
            stalls: stalls.iter().copied().chain([false]).collect(),
        })
        .collect()
}

/// Every `(input, seq)` exactly once, and each input's items in order.
fn check_exactly_once(
    spec: &[(usize, Vec<bool>)],
    out: &[(usize, usize)],
) -> Result<(), TestCaseError> {
    let total: usize = spec.iter().map(|s| s.0).sum();
    prop_assert_eq!(out.len(), total, "item count");
    let mut next = vec![0usize; spec.len()];
    for &(input, seq) in out {
        prop_assert_eq!(
            seq,
            next[input],
            "input {} out of order or duplicated",
            input
        );
        next[input] += 1;
    }
    for (i, s) in spec.iter().enumerate() {
        prop_assert_eq!(next[i], s.0, "input {} incomplete", i);
    }
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn spec_strategy() -> impl Strategy<Value = Vec<(usize, Vec<bool>)>> {
    proptest::collection::vec(
        (
            0usize..40,
            proptest::collection::vec(proptest::bool::weighted(0.3), 0..5),
        ),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fair_emits_every_item_exactly_once(spec in spec_strategy()) {
        let out: Vec<_> = block_on(merge_fair(inputs(&spec)).collect());
        check_exactly_once(&spec, &out)?;
    }

    #[test]
    fn weighted_emits_every_item_exactly_once(spec in spec_strategy(), weights in proptest::collection::vec(1u32..5, 6)) {
        let m = merge_weighted(inputs(&spec).into_iter().zip(&weights).map(|(s, w)| (*w, s))).unwrap();
        let out: Vec<_> = block_on(m.collect());
        check_exactly_once(&spec, &out)?;
    }

    #[test]
    fn biased_emits_every_item_exactly_once(spec in spec_strategy(), prios in proptest::collection::vec(0u32..4, 6), every in 1u32..6) {
        let m = merge_biased(inputs(&spec).into_iter().zip(&prios).map(|(s, p)| (*p, s)), every).unwrap();
        let out: Vec<_> = block_on(m.collect());
        check_exactly_once(&spec, &out)?;
    }

    #[test]
    fn priority_mux_emits_every_item_exactly_once(
        spec in spec_strategy(),
        prios in proptest::collection::vec(0u32..4, 6),
        buffer in 1usize..5,
        fairness in proptest::option::of(1u64..5),
    ) {
        let mut mux = PriorityMux::new(inputs(&spec).into_iter().zip(&prios).map(|(s, p)| (*p, s)), buffer).unwrap();
        if let Some(f) = fairness {
            mux = mux.fairness(f).unwrap();
        }
        let out: Vec<_> = block_on(mux.collect());
        check_exactly_once(&spec, &out)?;
    }
}

#[tokio::test]
async fn fair_takes_turns() {
    let a = stream::iter(vec!["a1", "a2", "a3"]);
    let b = stream::iter(vec!["b1"]);
    let c = stream::iter(vec!["c1", "c2"]);
    let out: Vec<_> = merge_fair([a, b, c]).collect().await;
    assert_eq!(out, ["a1", "b1", "c1", "a2", "c2", "a3"]);
}

#[tokio::test]
async fn weighted_shares_follow_the_weights() {
    let a = stream::repeat('a');
    let b = stream::repeat('b');
    let out: String = merge_weighted([(3, a), (1, b)])
        .unwrap()
        .take(400)
        .collect()
        .await;
    assert_eq!(out.matches('a').count(), 300);
    assert!(out.starts_with("aaabaaab"));
}

#[tokio::test]
async fn biased_prefers_priority_without_starving() {
    // The urgent input is always ready; the low one still gets through.
    let urgent = stream::repeat(("urgent", 0)).boxed();
    let low = stream::iter((0..5).map(|i| ("low", i))).boxed();
    let m = merge_biased([(1, low), (10, urgent)], 8).unwrap();
    let out: Vec<_> = m.take(200).collect().await;
    let lows: Vec<_> = out
        .iter()
        .enumerate()
        .filter(|(_, x)| x.0 == "low")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(lows.len(), 5, "every low item got through");
    assert!(
        lows[4] < 8 * 2 * 5,
        "served within every x inputs items each: {lows:?}"
    );
    // Most items are urgent.
    assert!(out[..7].iter().all(|x| x.0 == "urgent"));
}

#[tokio::test]
async fn merge_completes_when_all_inputs_end() {
    let m = merge_fair(Vec::<stream::Iter<std::vec::IntoIter<u8>>>::new());
    assert_eq!(m.collect::<Vec<_>>().await, Vec::<u8>::new());
    let mut m = merge_fair([stream::iter(vec![1]), stream::iter(vec![])]);
    assert_eq!(m.live_inputs(), 2);
    assert_eq!(m.next().await, Some(1));
    assert_eq!(m.next().await, None);
    assert_eq!(m.live_inputs(), 0);
    assert_eq!(m.emitted(), 1);
}

#[test]
fn bad_merges_are_refused() {
    let s = || stream::iter(vec![1]);
    assert_eq!(
        merge_weighted([(1, s()), (0, s())]).unwrap_err(),
        MergeError::ZeroWeight { input: 1 }
    );
    assert_eq!(
        merge_biased([(1, s())], 0).unwrap_err(),
        MergeError::ZeroFairness
    );
    assert_eq!(
        PriorityMux::new([(1, s())], 0).unwrap_err(),
        MuxError::ZeroBuffer
    );
    assert_eq!(
        PriorityMux::new([(1, s())], 1)
            .unwrap()
            .fairness(0)
            .unwrap_err(),
        MuxError::ZeroFairness
    );
    // Every message says what to pass instead.
    for (err, pass) in [
        (
            MergeError::ZeroWeight { input: 1 }.to_string(),
            "at least 1",
        ),
        (MergeError::ZeroFairness.to_string(), "at least 1"),
        (MuxError::ZeroBuffer.to_string(), "pass 1 or more"),
        (MuxError::ZeroFairness.to_string(), "at least 1"),
    ] {
        assert!(err.contains(pass), "{err}");
        assert!(err.starts_with(char::is_lowercase), "{err}");
    }
}

#[tokio::test]
async fn mux_fairness_of_one_is_round_robin() {
    let hi = stream::iter(vec!["h1", "h2", "h3"]);
    let lo = stream::iter(vec!["l1", "l2"]);
    let mux = PriorityMux::new([(9, hi), (1, lo)], 8)
        .unwrap()
        .fairness(1)
        .unwrap();
    let out: Vec<_> = mux.collect().await;
    assert_eq!(out.len(), 5);
    // Both inputs are served before either is exhausted.
    let first_lo = out.iter().position(|x| x.starts_with('l')).unwrap();
    assert!(first_lo <= 1, "{out:?}");
}

/// The reference Go multiplexer receives one event from every channel per
/// round and forwards only the highest-priority one. Here a round where
/// every input has an event forwards all of them, highest first.
#[tokio::test]
async fn mux_never_drops_what_it_received() {
    let (tx_lo, rx_lo) = tokio::sync::mpsc::channel::<&str>(8);
    let (tx_hi, rx_hi) = tokio::sync::mpsc::channel::<&str>(8);
    let lo = tokio_stream_from(rx_lo);
    let hi = tokio_stream_from(rx_hi);
    let mut mux = PriorityMux::new([(1, lo), (5, hi)], 4).unwrap();
    tx_lo.send("lo-1").await.unwrap();
    tx_lo.send("lo-2").await.unwrap();
    tx_hi.send("hi-1").await.unwrap();
    assert_eq!(mux.next().await, Some("hi-1"));
    assert_eq!(mux.queued(), 2, "the low events were received and kept");
    tx_hi.send("hi-2").await.unwrap();
    assert_eq!(mux.next().await, Some("hi-2"));
    assert_eq!(mux.next().await, Some("lo-1"));
    drop((tx_lo, tx_hi));
    assert_eq!(mux.next().await, Some("lo-2"));
    assert_eq!(mux.next().await, None);
}

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
{
    Box::pin(stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[tokio::test]
async fn mux_back_pressure_instead_of_dropping() {
    // Buffer of 1: the mux reads at most one item ahead per input.
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = polled.clone();
    let lo = stream::iter(0..100)
        .inspect(move |_| {
            p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .boxed();
    let mut mux = PriorityMux::new([(0, lo)], 1).unwrap();
    assert_eq!(mux.next().await, Some(0));
    assert!(polled.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    assert_eq!(mux.count().await, 99);
}

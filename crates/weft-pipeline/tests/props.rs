//! Property tests: for any stage configuration and random failures, every
//! item is accounted for, ordered stages keep order, keyed stages keep
//! per-key order, and fail fast stops the whole pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use weft_pipeline::{Pipeline, PipelineError, Stage, StageKind};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Map,
    Filter,
    Then,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ordered,
    Unordered,
    Keyed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Skip,
    DeadLetter,
    FailFast,
}

#[derive(Debug, Clone)]
struct Spec {
    kind: Kind,
    workers: usize,
    mode: Mode,
    chunk: usize,
    capacity: usize,
    policy: Policy,
    /// Items with `id % fail_every == salt` fail here (or are filtered out).
    fail_every: u32,
    salt: u32,
    panics: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(Kind::Map), Just(Kind::Filter), Just(Kind::Then)],
        1usize..4,
        prop_oneof![
            Just(Mode::Ordered),
            Just(Mode::Unordered),
            Just(Mode::Keyed)
        ],
        1usize..20,
        1usize..40,
        prop_oneof![
            3 => Just(Policy::Skip),
            3 => Just(Policy::DeadLetter),
            1 => Just(Policy::FailFast)
        ],
        2u32..40,
        0u32..2,
        any::<bool>(),
    )
        .prop_map(
            |(kind, workers, mode, chunk, capacity, policy, fail_every, salt, panics)| Spec {
                kind,
                workers,
                mode,
                chunk,
                capacity,
                policy,
                fail_every,
                salt,
                panics,
            },
        )
}

/// An item: its key and its position in the input.
type Item = (u32, u32);

fn key(item: &Item) -> u32 {
    item.0
}

fn hits(s: &Spec, item: &Item) -> bool {
    item.1 % s.fail_every == s.salt
}

fn fail(s: &Spec, item: Item) -> Result<Item, String> {
    if hits(s, &item) {
        if s.panics {
            panic!("item {} panicked", item.1);
        }
        Err(format!("item {} failed", item.1))
    } else {
        Ok(item)
    }
}

fn build(n: u32, specs: &[Spec], dead: Arc<AtomicU64>) -> Pipeline<Item> {
    let mut p = Pipeline::from_iter((0..n).map(|i| (i % 5, i)));
    for (i, s) in specs.iter().cloned().enumerate() {
        let mut stage: Stage<Item> = Stage::new(format!("s{i}"))
            .workers(s.workers)
            .chunk(s.chunk)
            .capacity(s.capacity);
        stage = match s.mode {
            Mode::Ordered => stage.ordered(),
            Mode::Unordered => stage.unordered(),
            Mode::Keyed => stage.partition_by(key),
        };
        let d = dead.clone();
        stage = match s.policy {
            Policy::Skip => stage.skip_errors(),
            Policy::DeadLetter => stage.dead_letter(move |_| {
                d.fetch_add(1, Ordering::Relaxed);
            }),
            Policy::FailFast => stage,
        };
        p = match s.kind {
            Kind::Map => p.try_map(stage, move |x| fail(&s, x)),
            Kind::Filter => p.filter(stage, move |x| !hits(&s, x)),
            Kind::Then => p.try_then(stage, move |x| {
                let r = fail(&s, x);
                async move {
                    tokio::task::yield_now().await;
                    r
                }
            }),
        };
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_item_is_accounted_for_and_order_is_kept(
        n in 0u32..400,
        specs in proptest::collection::vec(spec(), 1..4),
        threads in 1usize..3,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap();
        let dead = Arc::new(AtomicU64::new(0));
        let result = rt.block_on(build(n, &specs, dead.clone()).collect().run());

        // What a model says: each item passes the stages in turn.
        let mut expect_out = Vec::new();
        let mut fail_fast_hit = false;
        for i in 0..n {
            let item = (i % 5, i);
            let mut alive = true;
            for s in &specs {
                if hits(s, &item) {
                    if s.kind != Kind::Filter && s.policy == Policy::FailFast {
                        fail_fast_hit = true;
                    }
                    alive = false;
                    break;
                }
            }
            if alive {
                expect_out.push(item);
            }
        }

        match result {
            Ok((out, report)) => {
                prop_assert!(!fail_fast_hit, "a fail-fast stage failed but the run succeeded");
                prop_assert!(report.is_balanced(), "{}", report);
                prop_assert_eq!(report.items_in, n as u64);
                prop_assert_eq!(report.items_out, out.len() as u64);
                prop_assert_eq!(report.dead_lettered, dead.load(Ordering::Relaxed));
                prop_assert_eq!(report.cancelled, 0);
                for s in report.stages.iter().filter(|s| s.kind == StageKind::Stage) {
                    prop_assert_eq!(s.received, s.completed + s.failed + s.dead_lettered, "{}", report);
                }
                let mut sorted = out.clone();
                sorted.sort_unstable_by_key(|x| x.1);
                prop_assert_eq!(&sorted, &expect_out);
                if specs.iter().all(|s| s.mode == Mode::Ordered || s.workers == 1) {
                    prop_assert_eq!(&out, &expect_out, "an ordered pipeline reordered");
                }
                if specs.iter().all(|s| s.mode != Mode::Unordered || s.workers == 1) {
                    let mut last: HashMap<u32, u32> = HashMap::new();
                    for (k, seq) in &out {
                        if let Some(prev) = last.insert(*k, *seq) {
                            prop_assert!(prev < *seq, "key {} out of order", k);
                        }
                    }
                }
            }
            Err(PipelineError::Failed { report, .. }) => {
                prop_assert!(fail_fast_hit, "failed without a fail-fast failure");
                prop_assert!(report.is_balanced(), "{}", report);
                prop_assert!(report.failed >= 1);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}

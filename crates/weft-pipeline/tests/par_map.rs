//! `par_map`: results in order, parallel when it pays, panics contained.

use std::collections::HashSet;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use proptest::prelude::*;
use weft_pipeline::{ParMap, par_map, par_map_iter, try_par_map};

#[test]
fn small_and_cheap_runs_inline_on_the_caller() {
    let threads = Mutex::new(HashSet::<ThreadId>::new());
    // A generous threshold keeps the test stable on a loaded machine.
    let pm = ParMap::new()
        .workers(4)
        .inline_below(Duration::from_millis(50));
    let out = pm.map(&(0..10_000u64).collect::<Vec<_>>(), |x| {
        threads.lock().unwrap().insert(std::thread::current().id());
        x * 2
    });
    assert_eq!(out, (0..10_000).map(|x| x * 2).collect::<Vec<_>>());
    let threads = threads.into_inner().unwrap();
    assert_eq!(threads.len(), 1);
    assert!(threads.contains(&std::thread::current().id()));
}

#[test]
fn expensive_work_spreads_over_workers() {
    let threads = Mutex::new(HashSet::<ThreadId>::new());
    let items: Vec<u64> = (0..400).collect();
    let out = ParMap::new().workers(3).map(&items, |x| {
        threads.lock().unwrap().insert(std::thread::current().id());
        std::thread::sleep(Duration::from_micros(50));
        x + 1
    });
    assert_eq!(out, (1..401).collect::<Vec<_>>());
    assert_eq!(threads.into_inner().unwrap().len(), 3);
}

#[test]
fn panics_become_errors_or_are_raised_again() {
    let items: Vec<u32> = (0..1_000).collect();
    let err = ParMap::new()
        .workers(2)
        .always_parallel()
        .try_map(&items, |x| {
            assert!(*x != 700, "bad item {x}");
            *x
        })
        .unwrap_err();
    assert_eq!(err.message(), "bad item 700");
    assert!(try_par_map(&items, |x| *x).is_ok());
    let caught = std::panic::catch_unwind(|| {
        par_map(&[1, 2, 3], |x| if *x == 2 { panic!("two") } else { *x })
    });
    assert!(caught.is_err());
}

#[test]
fn iterators_keep_order() {
    let out = ParMap::new()
        .workers(3)
        .always_parallel()
        .map_iter((0..5_000u32).map(|x| x * 3), |x| x + 1);
    assert_eq!(out, (0..5_000u32).map(|x| x * 3 + 1).collect::<Vec<_>>());
    assert_eq!(
        par_map_iter(std::iter::empty::<u8>(), |x| x),
        Vec::<u8>::new()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the size and the number of workers, the parallel path gives
    /// exactly what a loop gives.
    #[test]
    fn same_as_a_loop(n in 0usize..3_000, workers in 1usize..5, iter in any::<bool>()) {
        let items: Vec<u64> = (0..n as u64).map(|x| x.wrapping_mul(0x9E37_79B9)).collect();
        let pm = ParMap::new().workers(workers).always_parallel();
        let out = if iter {
            pm.map_iter(items.iter().copied(), |x| x ^ 0xff)
        } else {
            pm.map(&items, |x| x ^ 0xff)
        };
        let expect: Vec<u64> = items.iter().map(|x| x ^ 0xff).collect();
        prop_assert_eq!(out, expect);
    }
}

#[test]
fn expensive_iterator_of_unknown_length_goes_parallel() {
    let threads = Mutex::new(HashSet::<ThreadId>::new());
    let out = ParMap::new()
        .workers(2)
        .map_iter((0..2_000u64).filter(|x| x % 2 == 0), |x| {
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_micros(20));
            x / 2
        });
    assert_eq!(out, (0..1_000).collect::<Vec<_>>());
    assert_eq!(threads.into_inner().unwrap().len(), 2);
}

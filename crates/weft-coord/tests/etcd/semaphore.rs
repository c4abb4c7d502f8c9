use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use weft_coord::CoordError;
use weft_coord::etcd_client::GetOptions;

use crate::support::{Etcd, Proxy};
use crate::{TTL, session, short_session};

/// Many clients hammer a 2-permit semaphore: never more than 2 inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_holders() {
    let etcd = Etcd::start().await;
    const N: usize = 2;
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..5 {
        let coord = etcd.coord().await;
        let s = session(&coord, &format!("c{c}")).await;
        let (inside, max) = (inside.clone(), max.clone());
        tasks.push(tokio::spawn(async move {
            let sem = s.semaphore("pool", N).unwrap();
            for _ in 0..4 {
                let p = sem.acquire().await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                assert!(now <= N, "{now} holders of {N} permits");
                coord.client().get("weft-test/ready", None).await.unwrap();
                inside.fetch_sub(1, Ordering::SeqCst);
                p.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        N,
        "the permits were never all used"
    );
}

async fn keys_under(coord: &weft_coord::Coord, prefix: &str) -> usize {
    coord
        .client()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap()
        .kvs()
        .len()
}

/// Waiters are served in the order they arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let holders = session(&coord, "holders").await;
    let sem = holders.semaphore("fair", 2).unwrap();
    let p1 = sem.acquire().await.unwrap();
    let p2 = sem.acquire().await.unwrap();
    assert!(matches!(
        sem.try_acquire().await,
        Err(CoordError::WouldBlock { holder: None })
    ));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..4 {
        let s = session(&coord, &format!("w{i}")).await;
        let (order, tx) = (order.clone(), tx.clone());
        tokio::spawn(async move {
            let permit = s.semaphore("fair", 2).unwrap().acquire().await.unwrap();
            order.lock().unwrap().push(i);
            tx.send(permit).unwrap();
            s
        });
        // Wait until waiter i is in line before starting the next.
        while keys_under(&coord, "weft/semaphore/fair/").await < 3 + i {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let holders_now = sem.holders().await.unwrap();
    assert_eq!(holders_now.len(), 2);
    assert!(holders_now.iter().all(|h| h.owner == "holders"));
    // Release one at a time; each release admits exactly the next in line.
    p1.release().await.unwrap();
    let a = rx.recv().await.unwrap();
    p2.release().await.unwrap();
    let b = rx.recv().await.unwrap();
    a.release().await.unwrap();
    let c = rx.recv().await.unwrap();
    b.release().await.unwrap();
    let _d = rx.recv().await.unwrap();
    drop(c);
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
}

/// A permit whose holder's session dies is released, and the waiter gets it
/// within the ttl + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_released_when_holder_session_dies() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.port).await;
    let far = short_session(&proxy.coord().await, "far").await;
    let near = session(&etcd.coord().await, "near").await;
    let held = far.semaphore("one", 1).unwrap().acquire().await.unwrap();
    let sem = near.semaphore("one", 1).unwrap();
    let waiter = tokio::spawn(async move { sem.acquire().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    proxy.cut();
    let got = tokio::time::timeout(TTL + Duration::from_secs(1), waiter)
        .await
        .expect("the permit was not handed on within ttl + 1 s")
        .unwrap()
        .unwrap();
    assert!(got.fence() > held.fence());
    assert!(!held.is_held());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_permits_is_refused() {
    let etcd = Etcd::start().await;
    let s = session(&etcd.coord().await, "z").await;
    let err = s.semaphore("zero", 0).unwrap_err();
    assert!(err.to_string().contains("pass at least 1"), "{err}");
}

/// Property: for random permit counts, numbers of waiters and release
/// orders, the semaphore admits waiters exactly in arrival order and never
/// has more than N holders (checked against etcd after every step).
#[test]
fn fifo_and_bound_hold_for_random_schedules() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let etcd = rt.block_on(Etcd::start());
    let coord = rt.block_on(etcd.coord());
    let mut runner = TestRunner::new(Config::with_cases(12));
    let case = std::sync::atomic::AtomicU32::new(0);
    let strategy = (
        1usize..=3,
        2usize..=6,
        proptest::collection::vec(any::<u8>(), 8),
    );
    runner
        .run(&strategy, |(n, waiters, picks)| {
            let c = case.fetch_add(1, Ordering::Relaxed);
            let name = format!("prop-{c}");
            rt.block_on(schedule(&coord, &name, n, waiters, &picks));
            Ok(())
        })
        .unwrap();
}

async fn schedule(coord: &weft_coord::Coord, name: &str, n: usize, waiters: usize, picks: &[u8]) {
    let prefix = format!("weft/semaphore/{name}/");
    let (admitted_tx, mut admitted_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut release = Vec::new();
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    for i in 0..waiters {
        let s = session(coord, &format!("w{i}")).await;
        let sem = s.semaphore(name, n).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        release.push(Some(tx));
        let admitted_tx = admitted_tx.clone();
        let (inside, max) = (inside.clone(), max.clone());
        tokio::spawn(async move {
            let permit = sem.acquire().await.unwrap();
            max.fetch_max(inside.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            admitted_tx.send(i).unwrap();
            let _ = rx.await;
            inside.fetch_sub(1, Ordering::SeqCst);
            permit.release().await.unwrap();
            s.close().await;
        });
        // Arrival order is the order the keys were created.
        while keys_under(coord, &prefix).await < i + 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut held = Vec::new();
    let mut next = 0;
    // The first min(n, waiters) are admitted at once, in order.
    while next < n.min(waiters) {
        assert_eq!(admitted_rx.recv().await.unwrap(), next);
        held.push(next);
        next += 1;
    }
    let mut picks = picks.iter().cycle();
    while !held.is_empty() {
        // Nobody beyond those expected has been admitted.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            admitted_rx.try_recv().is_err(),
            "admitted beyond the permits"
        );
        assert!(
            max.load(Ordering::SeqCst) <= n,
            "more than {n} holders at once"
        );
        let probe = session(coord, "probe").await;
        let holders = probe.semaphore(name, n).unwrap().holders().await.unwrap();
        assert!(holders.len() <= n, "{} holders of {n}", holders.len());
        assert_eq!(holders.len(), held.len());
        probe.close().await;
        let k = *picks.next().unwrap() as usize % held.len();
        let who = held.remove(k);
        release[who].take().unwrap().send(()).unwrap();
        if next < waiters {
            // Exactly the next in line is admitted.
            let got = tokio::time::timeout(Duration::from_secs(2), admitted_rx.recv())
                .await
                .expect("nobody admitted after a release")
                .unwrap();
            assert_eq!(got, next, "admitted out of order");
            held.push(next);
            next += 1;
        }
    }
    assert_eq!(next, waiters);
    assert!(
        max.load(Ordering::SeqCst) <= n,
        "more than {n} holders at once"
    );
}

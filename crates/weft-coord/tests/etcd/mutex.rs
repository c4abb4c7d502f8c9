use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weft_coord::{CoordError, Fence, FenceGate};

use crate::session;
use crate::support::Etcd;

/// Several clients (each its own connection and session) hammer one lock:
/// never two inside at once, and fencing tokens strictly increase in the
/// order the lock was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_with_increasing_fences() {
    let etcd = Etcd::start().await;
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 6;
    let inside = Arc::new(AtomicUsize::new(0));
    let fences = Arc::new(std::sync::Mutex::new(Vec::<Fence>::new()));
    let gate = Arc::new(FenceGate::new());
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let coord = etcd.coord().await;
        let s = session(&coord, &format!("client-{c}")).await;
        let (inside, fences, gate) = (inside.clone(), fences.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let mutex = s.mutex("hammer");
            for _ in 0..ROUNDS {
                let guard = mutex.lock().await.unwrap();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                fences.lock().unwrap().push(guard.fence());
                gate.check(guard.fence())
                    .expect("a fence older than one already used");
                // Hold across an etcd round trip so that overlaps would show.
                let mut raw = coord.client();
                raw.get("weft-test/ready", None).await.unwrap();
                tokio::task::yield_now().await;
                assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1);
                guard.unlock().await.unwrap();
            }
            s.close().await
        }));
    }
    for t in tasks {
        let report = t.await.unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.accepted, ROUNDS as u64);
        assert_eq!(report.completed, ROUNDS as u64);
    }
    let fences = fences.lock().unwrap();
    assert_eq!(fences.len(), CLIENTS * ROUNDS);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

/// Two tasks of one process sharing one session still exclude each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_two_tasks_exclude_each_other() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let s = session(&coord, "shared").await;
    let first = s.mutex("m").lock().await.unwrap();
    let s2 = s.clone();
    let waiter = tokio::spawn(async move { s2.mutex("m").lock().await.map(|g| g.fence()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the second task got the lock while the first held it"
    );
    let f1 = first.fence();
    first.unlock().await.unwrap();
    let f2 = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(f2 > f1);
}

/// try_lock names the holder; the holder is identified by its owner name
/// and fence; unlock on drop happens in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_identifies_the_owner_and_drop_unlocks() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "node-a").await;
    let b = session(&coord, "node-b").await;
    let ma = a.mutex("jobs");
    let mb = b.mutex("jobs");
    assert_eq!(mb.holder().await.unwrap(), None);
    let guard = ma.try_lock().await.unwrap();
    let holder = mb.holder().await.unwrap().expect("a holder");
    assert_eq!(holder.owner, "node-a");
    assert_eq!(holder.fence, guard.fence().get());
    assert_eq!(holder.lease, a.lease_id());
    assert_eq!(holder.key, guard.key());
    match mb.try_lock().await {
        Err(CoordError::WouldBlock { holder: Some(h) }) => assert_eq!(h.owner, "node-a"),
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    // A failed try_lock leaves no key behind: only the holder's.
    let mut raw = coord.client();
    let keys = raw
        .get(
            "weft/mutex/jobs/",
            Some(weft_coord::etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(keys.kvs().len(), 1);
    let old = guard.fence();
    drop(guard); // released in the background
    let g = mb.lock_with_timeout(Duration::from_secs(2)).await.unwrap();
    assert!(g.fence() > old);
    for _ in 0..100 {
        if a.stats().released == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.stats().released, 1);
    assert_eq!(mb.holder().await.unwrap().unwrap().owner, "node-b");
}

/// lock_with_timeout and lock_with_cancel give up with typed errors, and a
/// waiter that gave up does not block the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_cancel_leave_the_line() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let held = a.mutex("m").lock().await.unwrap();
    match b
        .mutex("m")
        .lock_with_timeout(Duration::from_millis(300))
        .await
    {
        Err(CoordError::Timeout { op: "lock", after }) => {
            assert_eq!(after, Duration::from_millis(300))
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let mb = b.mutex("m");
    let waiting = tokio::spawn(async move { mb.lock_with_cancel(&c2).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    assert!(matches!(waiting.await.unwrap(), Err(CoordError::Cancelled)));
    // A third waiter queues behind the two that gave up; it gets the lock
    // as soon as the holder releases.
    let c = session(&coord, "c").await;
    let mc = c.mutex("m");
    let third = tokio::spawn(async move { mc.lock().await.map(|g| g.fence()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.unlock().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), third)
        .await
        .expect("the waiters that gave up still block the line")
        .unwrap()
        .unwrap();
}

/// A session writes its deleted keys again (so etcd's index does not grow
/// with every lock), concurrent attempts still get distinct keys, and every
/// acquisition still gets a larger fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_reused_and_fences_still_increase() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let s = session(&coord, "reuse").await;
    let m = s.mutex("r");
    let g1 = m.lock().await.unwrap();
    let (k1, f1) = (g1.key().to_owned(), g1.fence());
    g1.unlock().await.unwrap();
    let g2 = m.lock().await.unwrap();
    assert_eq!(g2.key(), k1);
    assert!(g2.fence() > f1);
    // While g2 holds k1, a concurrent attempt must use another key.
    let m2 = m.clone();
    let other = tokio::spawn(async move {
        let g = m2.lock().await.unwrap();
        (g.key().to_owned(), g.fence())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let f2 = g2.fence();
    g2.unlock().await.unwrap();
    let (k3, f3) = tokio::time::timeout(Duration::from_secs(2), other)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(k3, k1);
    assert!(f3 > f2);
}

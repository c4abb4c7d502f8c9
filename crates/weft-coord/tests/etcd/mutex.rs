use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weft_coord::{Coord, CoordError, Fence, FenceGate};

use crate::session;
use crate::support::{Etcd, eventually, keys_under};

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

/// An `unlock` whose delete fails (etcd down for a moment) still releases
/// the lock: the key is handed to a background release that retries until
/// etcd is back, so the lock is not held by nobody while the session lives
/// on (audit: `failed_unlock_leaves_the_lock_held_forever`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_unlock_is_finished_in_the_background() {
    let mut etcd = Etcd::start().await;
    let coord = Coord::builder([etcd.endpoint()])
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let a = session(&coord, "a").await;
    let guard = a.mutex("m").lock().await.unwrap();
    etcd.kill();
    let err = guard.unlock().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    etcd.restart().await;
    let coord_b = etcd.coord().await;
    let b = session(&coord_b, "b").await;
    let got = b
        .mutex("m")
        .lock_with_timeout(Duration::from_secs(15))
        .await;
    assert!(
        got.is_ok(),
        "after a's failed unlock ({err}), nobody can take the lock: {got:?}; keys left: {:?}; \
         a.stats(): {:?}",
        keys_under(&coord_b, "weft/mutex/m/").await,
        a.stats()
    );
    assert!(a.is_alive(), "a's session should survive an etcd restart");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let st = a.stats();
            st.released == 1 && st.held == 0
        })
        .await,
        "{:?}",
        a.stats()
    );
}

/// How long one `op` takes here (the fastest of three), so that the
/// timeouts of the tests below sweep around it on any machine.
async fn duration_of<F, Fut>(mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        op().await;
        best = best.min(t.elapsed());
    }
    best
}

/// A lock attempt dropped while its enqueue transaction is in flight (here
/// by `lock_with_timeout`) leaves no key behind: a key written after its
/// attempt was abandoned would hold the lock (or a place in line) for
/// nobody as long as the session lives (audit:
/// `lock_timeout_during_enqueue_leaks_the_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_dropped_during_enqueue_leaves_no_key() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let s = session(&coord, "a").await;
    let probe = s.mutex("probe");
    let one = duration_of(|| async { probe.lock().await.unwrap().unlock().await.unwrap() }).await;
    // Timeouts from 0 to about one lock + unlock: some fire after etcd
    // applied the put but before its answer was processed.
    const ATTEMPTS: u32 = 80;
    for i in 0..ATTEMPTS {
        let m = s.mutex(&format!("m{i}"));
        let _ = m.lock_with_timeout(one * i / ATTEMPTS).await;
    }
    let no_keys = eventually(Duration::from_secs(10), || async {
        keys_under(&coord, "weft/mutex/").await.is_empty()
    })
    .await;
    let left = keys_under(&coord, "weft/mutex/").await;
    assert!(
        no_keys,
        "{} keys left by abandoned lock attempts (lock + unlock took {one:?}): {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
    assert_eq!(s.stats().held, 0);
}

/// A `try_lock` that finds the lock taken and is dropped while it removes
/// its key (or whose delete fails) still removes it: a waiting key left in
/// line would take the lock for nobody once the holder unlocks (audit:
/// `try_lock_dropped_while_removing_its_key_leaks_a_ghost_waiter`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_dropped_while_removing_its_key_leaves_no_ghost() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let held = a.mutex("m").lock().await.unwrap();
    let mb = b.mutex("m");
    let busy = duration_of(|| async {
        assert!(matches!(
            mb.try_lock().await,
            Err(CoordError::WouldBlock { .. })
        ));
    })
    .await;
    // A busy try_lock is three round trips (enqueue, remove, holder); the
    // timeouts sweep all of it, so some cut the removal short.
    const ATTEMPTS: u32 = 80;
    for i in 0..ATTEMPTS {
        let _ = tokio::time::timeout(busy * i / ATTEMPTS, mb.try_lock()).await;
    }
    let only_holder = eventually(Duration::from_secs(10), || async {
        keys_under(&coord, "weft/mutex/m/").await == [held.key().to_owned()]
    })
    .await;
    let left = keys_under(&coord, "weft/mutex/m/").await;
    held.unlock().await.unwrap();
    let c = session(&coord, "c").await;
    let got = c.mutex("m").lock_with_timeout(Duration::from_secs(5)).await;
    assert!(
        only_holder && got.is_ok(),
        "the lock was released, yet c gets {got:?}; keys in line before the unlock: {left:?} \
         (a busy try_lock took {busy:?})"
    );
}

/// Names are delimited: `jobs/eu` is its own lock, not a waiter inside
/// `jobs` (the same for elections and semaphores), and a `%` in a name
/// cannot forge another name's escape (audit:
/// `a_nested_name_blocks_its_parent`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_name_does_not_block_its_parent() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let eu = a.mutex("jobs/eu").lock().await.unwrap();
    let r = b.mutex("jobs").try_lock().await;
    assert!(
        r.is_ok(),
        "mutex `jobs` is free, but try_lock says {:?}",
        r.map(|g| g.key().to_owned())
    );
    assert_eq!(
        b.mutex("jobs/eu").holder().await.unwrap().unwrap().key,
        eu.key()
    );
    // `a%2Fb` and `a/b` are two names, two locks.
    let _slash = a.mutex("x/y").lock().await.unwrap();
    b.mutex("x%2Fy").try_lock().await.unwrap();
    let _lead = a.election("sched/eu").campaign("a").await.unwrap();
    assert_eq!(
        b.election("sched").leader().await.unwrap(),
        None,
        "election `sched` has no candidate"
    );
    let _permit = a.semaphore("pool/eu", 1).unwrap().acquire().await.unwrap();
    assert!(
        b.semaphore("pool", 1)
            .unwrap()
            .holders()
            .await
            .unwrap()
            .is_empty()
    );
    b.semaphore("pool", 1).unwrap().try_acquire().await.unwrap();
}

/// A waiter whose key is deleted by someone else while its lease lives on
/// joins the line again (and gets the lock), rather than failing with
/// `SessionLost` for a session that is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_whose_key_is_deleted_joins_the_line_again() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let held = a.mutex("m").lock().await.unwrap();
    let mb = b.mutex("m");
    let waiter = tokio::spawn(async move { mb.lock().await });
    assert!(
        eventually(Duration::from_secs(5), || async {
            keys_under(&coord, "weft/mutex/m/").await.len() == 2
        })
        .await
    );
    let mine = keys_under(&coord, "weft/mutex/m/").await;
    let waiting = mine.iter().find(|k| **k != held.key()).unwrap().clone();
    coord.client().delete(waiting, None).await.unwrap();
    held.unlock().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter hung")
        .unwrap();
    assert!(got.is_ok(), "{got:?}");
    assert!(b.is_alive());
}

/// A waiter may wait longer than a few seconds on an otherwise idle
/// connection: the client's HTTP/2 pings respect etcd's default keep-alive
/// policy (`--grpc-keepalive-min-time=5s`), so etcd does not close the
/// connection with `too_many_pings` under the waiter's watch (pings every
/// second made every wait longer than about 4 s fail with an `Etcd` error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_is_not_cut_off_by_etcd_ping_policy() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    // Its own connection, with no traffic but the wait and a keep-alive
    // every 5 s.
    let coord_b = etcd.coord().await;
    let b = session(&coord_b, "b").await;
    let _held = a.mutex("m").lock().await.unwrap();
    // Longer than the ~4 s after which etcd cut off a client pinging every
    // second.
    let r = b.mutex("m").lock_with_timeout(Duration::from_secs(5)).await;
    assert!(
        matches!(r, Err(CoordError::Timeout { op: "lock", .. })),
        "{r:?}"
    );
}

use std::time::{Duration, Instant};

use weft_coord::{Coord, CoordError, LostReason, SessionState};
use weft_core::Drain;

use crate::support::{Etcd, Proxy, eventually, keys_under};
use crate::{TTL, session, short_session};

/// A holder cut off from etcd (its lease expires) loses the lock, is told
/// through the session's watch channel and the guard's token, and the lock
/// goes to the next waiter with a larger fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_whose_lease_expires_loses_the_lock_and_is_told() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.port).await;
    let far = proxy.coord().await;
    let near = etcd.coord().await;
    let holder = short_session(&far, "far").await;
    let other = session(&near, "near").await;
    let guard = holder.mutex("m").lock().await.unwrap();
    let lost = guard.lost_token();
    let mut state = holder.watch();
    let m = other.mutex("m");
    let waiter = tokio::spawn(async move { m.lock().await.map(|g| (g.fence(), Instant::now())) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());

    let cut = Instant::now();
    proxy.cut();
    tokio::time::timeout(TTL + Duration::from_secs(1), lost.cancelled())
        .await
        .expect("the holder was not told within the ttl");
    let told = cut.elapsed();
    eprintln!("holder told it lost the lock {told:?} after the cut");
    assert!(!guard.is_held());
    state.changed().await.unwrap();
    assert_eq!(
        *state.borrow(),
        SessionState::Lost(LostReason::KeepAliveFailed)
    );
    let (fence, got) = tokio::time::timeout(TTL + Duration::from_secs(1), waiter)
        .await
        .expect("the waiter did not get the lock within ttl + 1 s")
        .unwrap()
        .unwrap();
    assert!(fence > guard.fence());
    // The holder is told no later than the lock passes on (its local deadline
    // is conservative).
    assert!(
        told <= got - cut + Duration::from_millis(200),
        "told {told:?}, taken over {:?}",
        got - cut
    );
    // Unlocking afterwards says the lock had been lost.
    assert!(matches!(
        guard.unlock().await,
        Err(CoordError::SessionLost(LostReason::KeepAliveFailed))
    ));
    assert!(matches!(
        holder.mutex("m").lock().await,
        Err(CoordError::SessionLost(_))
    ));
    assert_eq!(holder.stats().lost, 1);
}

/// A lease revoked behind the session's back is reported as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_is_reported_as_expired() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let s = coord
        .session_builder()
        .ttl(TTL)
        .keep_alive_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let permit = s.semaphore("sem", 1).unwrap().acquire().await.unwrap();
    coord.client().lease_revoke(s.lease_id()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(1), s.lost())
        .await
        .unwrap();
    assert_eq!(reason, LostReason::LeaseExpired);
    assert!(!permit.is_held());
    let report = s.close().await;
    assert_eq!(report.failed, 1, "{report}");
    assert!(report.is_balanced(), "{report}");
}

/// A killed etcd gives typed errors within the request timeout, not hangs;
/// the session is declared lost within its ttl; drain reports what could
/// not be released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcd_gives_typed_errors_not_hangs() {
    let mut etcd = Etcd::start().await;
    let coord = Coord::builder([etcd.endpoint()])
        .request_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let s = short_session(&coord, "doomed").await;
    let guard = s.mutex("m").lock().await.unwrap();
    let waiting = {
        let m = s.mutex("m");
        tokio::spawn(async move { m.lock().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    etcd.kill();
    let killed = Instant::now();

    // A new request fails fast with a retryable, typed error.
    let err = s.mutex("other").lock().await.unwrap_err();
    eprintln!("after the kill, in {:?}: {err}", killed.elapsed());
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(
            err,
            CoordError::Unavailable { .. } | CoordError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );

    // The waiter ends with a typed error too, at the latest when the session is lost.
    let waited = tokio::time::timeout(TTL + Duration::from_secs(1), waiting)
        .await
        .expect("a waiter hung on a dead etcd")
        .unwrap();
    assert!(waited.is_err());
    assert!(
        tokio::time::timeout(TTL + Duration::from_secs(1), s.lost())
            .await
            .is_ok(),
        "session not declared lost"
    );
    assert_eq!(s.state(), SessionState::Lost(LostReason::KeepAliveFailed));
    assert!(!guard.is_held());

    // Connecting to a dead endpoint is a Connect error (or a timeout).
    let err = Coord::builder([etcd.endpoint()])
        .request_timeout(Duration::from_millis(800))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordError::Connect { .. } | CoordError::Timeout { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("etcd"), "{err}");
}

/// Drain (shutdown): waiting acquisitions are cancelled, held ones are
/// released by revoking the lease (resign + release), later ones refused;
/// the report balances, and others can acquire at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_resigns_releases_and_revokes() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let s = session(&coord, "draining").await;
    let other = session(&coord, "other").await;
    let lock = s.mutex("m").lock().await.unwrap();
    let permit = s.semaphore("sem", 1).unwrap().acquire().await.unwrap();
    let leader = s.election("e").campaign("draining").await.unwrap();
    let released = s.mutex("gone").lock().await.unwrap();
    released.unlock().await.unwrap();
    // Someone else holds "busy"; our session waits for it.
    let busy = other.mutex("busy").lock().await.unwrap();
    let waiter = {
        let m = s.mutex("busy");
        tokio::spawn(async move { m.lock().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let report = s
        .drain(tokio::time::Instant::now() + Duration::from_secs(2))
        .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.accepted, 4, "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert_eq!(report.cancelled, 3, "{report}");
    assert!(matches!(waiter.await.unwrap(), Err(CoordError::Closed)));
    assert!(!lock.is_held() && !permit.is_held() && !leader.is_leader());
    assert!(matches!(s.mutex("m").lock().await, Err(CoordError::Closed)));
    // A second drain reports the same totals.
    let again = s.drain(tokio::time::Instant::now()).await;
    assert_eq!(again.accepted, report.accepted);
    assert_eq!(again.cancelled, report.cancelled);
    // Everything was released in one step: others get it at once.
    other.mutex("m").try_lock().await.unwrap();
    other
        .semaphore("sem", 1)
        .unwrap()
        .try_acquire()
        .await
        .unwrap();
    let e = other.election("e");
    let lead = tokio::time::timeout(Duration::from_secs(1), e.campaign("other"))
        .await
        .unwrap()
        .unwrap();
    assert!(lead.fence() > leader.fence());
    drop(busy);
}

/// An operation that finds the lease gone ("lease not found") marks the
/// session lost at once, so every guard under it reads as lost before
/// another session can be given what it held (audit:
/// `lease_not_found_is_not_propagated_to_the_session`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_not_found_marks_the_session_lost() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await; // ttl 15 s: keep-alive every 5 s
    let b = session(&coord, "b").await;
    let guard = a.mutex("m").lock().await.unwrap();
    coord.client().lease_revoke(a.lease_id()).await.unwrap();
    let err = a.mutex("other").try_lock().await.unwrap_err();
    assert!(matches!(err, CoordError::SessionLost(_)), "{err:?}");
    assert!(
        !guard.is_held(),
        "a's own call was told the lease is gone ({err}), yet a's guard still reads held; \
         a.state() = {:?}",
        a.state()
    );
    assert_eq!(a.state(), SessionState::Lost(LostReason::LeaseExpired));
    let gb = b.mutex("m").try_lock().await.unwrap();
    assert!(gb.fence() > guard.fence());
    assert_eq!(a.stats().lost, 1);
}

/// A waiter that finds its own key gone because its lease is gone (revoked
/// behind its back) marks the session lost as it fails, rather than
/// leaving the session and its guards alive until the next keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_whose_lease_is_gone_marks_the_session_lost() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await; // ttl 15 s: keep-alive every 5 s
    let held = a.mutex("m").lock().await.unwrap();
    let permit = b.semaphore("s", 1).unwrap().acquire().await.unwrap();
    let mb = b.mutex("m");
    let waiter = tokio::spawn(async move { mb.lock().await });
    assert!(
        eventually(Duration::from_secs(5), || async {
            keys_under(&coord, "weft/mutex/m/").await.len() == 2
        })
        .await
    );
    coord.client().lease_revoke(b.lease_id()).await.unwrap();
    held.unlock().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter hung")
        .unwrap();
    assert!(
        matches!(got, Err(CoordError::SessionLost(LostReason::LeaseExpired))),
        "{got:?}"
    );
    assert_eq!(b.state(), SessionState::Lost(LostReason::LeaseExpired));
    assert!(!permit.is_held());
}

/// A ttl of `Duration::MAX` (a common "forever") is refused with a message
/// saying what to pass, not an arithmetic-overflow panic (audit:
/// `huge_ttl_is_refused_not_a_panic`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_ttl_is_refused_not_a_panic() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    for ttl in [Duration::MAX, Duration::from_secs(9_000_000_001)] {
        let c = coord.clone();
        let r = tokio::spawn(async move { c.session_builder().ttl(ttl).build().await.map(|_| ()) })
            .await;
        match r {
            Ok(Err(CoordError::InvalidArgument(msg))) => {
                assert!(msg.contains("pass"), "{msg}")
            }
            other => panic!("ttl {ttl:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

/// A request timeout of `Duration::MAX` is refused when connecting (it
/// would overflow the deadlines computed from it: `Session::close`, the
/// HTTP/2 keep-alive), with a message saying what to pass (audit:
/// `huge_request_timeout_is_refused_or_close_works`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_timeout_is_refused() {
    let etcd = Etcd::start().await;
    let endpoint = etcd.endpoint();
    let r = tokio::spawn(async move {
        let coord = Coord::builder([endpoint])
            .request_timeout(Duration::MAX)
            .connect()
            .await?;
        let s = coord.session().await?;
        s.close().await;
        Ok::<_, CoordError>(())
    })
    .await;
    match r {
        Ok(Err(CoordError::InvalidArgument(msg))) => assert!(msg.contains("pass"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// A `close` (or `drain`) future dropped after its first poll (a caller's
/// own timeout, a second ctrl-c) still closes the session: the lease is
/// revoked and every guard reads as released, rather than keep-alive being
/// stopped with guards still believing they hold while the lease expires
/// under them (audit: `close_dropped_midway_leaves_guards_believing_they_hold`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_dropped_midway_still_closes() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = short_session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let guard = a.mutex("m").lock().await.unwrap();
    {
        let mut close = Box::pin(a.close());
        let _ = futures::poll!(close.as_mut());
    } // dropped, as a caller's timeout would
    let gb = b
        .mutex("m")
        .lock_with_timeout(TTL * 3)
        .await
        .expect("b gets the lock once a's lease is gone");
    tokio::time::timeout(Duration::from_secs(5), guard.lost_token().cancelled())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "b holds the lock (fence {}) and a's guard (fence {}) still reads held; \
                 a.state() = {:?}",
                gb.fence(),
                guard.fence(),
                a.state()
            )
        });
    assert_eq!(a.state(), SessionState::Lost(LostReason::Closed));
    // The close finished on its own; closing again returns its report.
    let report = tokio::time::timeout(Duration::from_secs(5), a.close())
        .await
        .expect("close hung");
    assert_eq!(report.accepted, 1, "{report}");
    assert_eq!(report.cancelled, 1, "{report}");
    assert!(report.is_clean(), "{report}");
}

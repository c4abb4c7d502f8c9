use std::time::{Duration, Instant};

use futures::StreamExt;
use weft_coord::{CoordError, Role};

use crate::support::{Etcd, Proxy, eventually, keys_under};
use crate::{TTL, session, short_session};

/// The leader's process is cut off (its session dies): the follower takes
/// over within ttl + 1 s, the old leader is told (role stream, guard token,
/// `run` stops), and observers see each leader once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_within_ttl_plus_one_second() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.port).await;
    let far = proxy.coord().await;
    let near = etcd.coord().await;
    let a = short_session(&far, "node-a").await;
    let b = session(&near, "node-b").await;
    let observer = b.election("leader").observe().await.unwrap();
    assert_eq!(observer.current(), None);
    let seen = tokio::spawn(observer.into_stream().take(2).collect::<Vec<_>>());

    let ea = a.election("leader");
    let mut role_a = ea.role();
    assert_eq!(*role_a.borrow(), Role::Follower);
    let lead_a = ea.campaign("a:8080").await.unwrap();
    assert_eq!(*role_a.borrow_and_update(), Role::Leader(lead_a.fence()));
    assert_eq!(
        b.election("leader").leader().await.unwrap().unwrap().owner,
        "a:8080"
    );

    let eb = b.election("leader");
    let campaign = tokio::spawn(async move {
        let g = eb.campaign("b:8080").await;
        (g, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!campaign.is_finished(), "two leaders at once");

    let cut = Instant::now();
    proxy.cut();
    // The old leader's work is stopped when its leadership is lost.
    let work = lead_a.run(futures::future::pending::<()>());
    let stopped = tokio::time::timeout(TTL + Duration::from_secs(1), work)
        .await
        .expect("work not stopped");
    assert!(matches!(stopped, Err(CoordError::NotLeader)));
    role_a.changed().await.unwrap();
    assert_eq!(*role_a.borrow(), Role::Follower);

    let (lead_b, at) = tokio::time::timeout(TTL + Duration::from_secs(1), campaign)
        .await
        .expect("no failover within ttl + 1 s")
        .unwrap();
    let lead_b = lead_b.unwrap();
    let failover = at - cut;
    eprintln!("failover after the cut: {failover:?} (ttl {TTL:?})");
    assert!(failover <= TTL + Duration::from_secs(1), "{failover:?}");
    assert!(lead_b.fence() > lead_a.fence());
    assert!(lead_b.is_leader());

    let seen = tokio::time::timeout(Duration::from_secs(2), seen)
        .await
        .unwrap()
        .unwrap();
    let owners: Vec<_> = seen
        .iter()
        .map(|l| l.as_ref().map(|h| h.owner.clone()))
        .collect();
    assert_eq!(
        owners,
        [Some("a:8080".to_owned()), Some("b:8080".to_owned())]
    );
}

/// Resigning hands over at once; this node's role stream has no duplicates;
/// dropping the guard resigns in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_hands_over_and_roles_do_not_repeat() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let ea = a.election("e");
    let eb = b.election("e");
    let mut roles = ea.role();
    let mut changes = Vec::new();
    let mut observer = eb.observe().await.unwrap();

    let g1 = ea.campaign("a").await.unwrap();
    roles.changed().await.unwrap();
    changes.push(*roles.borrow_and_update());
    assert_eq!(observer.changed().await.unwrap().unwrap().owner, "a");

    let eb2 = eb.clone();
    let b_campaign = tokio::spawn(async move { eb2.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    g1.resign().await.unwrap();
    roles.changed().await.unwrap();
    changes.push(*roles.borrow_and_update());
    let gb = tokio::time::timeout(Duration::from_secs(1), b_campaign)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(eb.is_leader());
    assert_eq!(observer.changed().await.unwrap().unwrap().owner, "b");

    // a campaigns again, behind b; b drops its guard (background resign).
    let ea2 = ea.clone();
    let a_again = tokio::spawn(async move { ea2.campaign("a").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gb);
    assert!(!eb.is_leader());
    let g3 = tokio::time::timeout(Duration::from_secs(1), a_again)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    roles.changed().await.unwrap();
    changes.push(*roles.borrow_and_update());
    assert_eq!(
        changes,
        [
            Role::Leader(g1_fence(&changes)),
            Role::Follower,
            Role::Leader(g3.fence())
        ]
    );
    assert_eq!(observer.changed().await.unwrap().unwrap().owner, "a");
    // No further change is pending: nothing was reported twice.
    assert!(!roles.has_changed().unwrap());
    assert!(!observer_has_pending(&mut observer).await);
}

fn g1_fence(changes: &[Role]) -> weft_coord::Fence {
    match changes[0] {
        Role::Leader(f) => f,
        Role::Follower => panic!("first change should be leadership"),
    }
}

async fn observer_has_pending(o: &mut weft_coord::LeaderWatch) -> bool {
    tokio::time::timeout(Duration::from_millis(200), o.changed())
        .await
        .is_ok()
}

/// How many gRPC Watch streams etcd has seen opened, from its /metrics.
async fn watch_streams_started(endpoint: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with("grpc_server_started_total") && l.contains("grpc_method=\"Watch\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A candidate that waited in line across a compaction becomes leader: its
/// leadership watch from its key's (compacted) revision is cancelled by
/// etcd; the watcher re-reads its key and watches from there, so it opens
/// no stream after stream against etcd and does see its key deleted
/// (audit: `leader_after_compaction_spins_and_misses_its_key_deletion`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_after_compaction_sees_its_key_deleted_without_spinning() {
    let etcd = Etcd::start().await;
    let coord = etcd.coord().await;
    let a = session(&coord, "a").await;
    let b = session(&coord, "b").await;
    let lead_a = a.election("e").campaign("a").await.unwrap();
    let eb = b.election("e");
    let role_b = eb.role();
    let campaign = tokio::spawn(async move { eb.campaign("b").await });
    assert!(
        eventually(Duration::from_secs(5), || async {
            keys_under(&coord, "weft/election/e/").await.len() == 2
        })
        .await
    );
    let mut raw = coord.client();
    let mut rev = 0;
    for i in 0..5 {
        let put = raw
            .put("weft-test/other", format!("{i}"), None)
            .await
            .unwrap();
        rev = put.header().unwrap().revision();
    }
    raw.compact(rev, None).await.unwrap();
    lead_a.resign().await.unwrap();
    let lead_b = tokio::time::timeout(Duration::from_secs(10), campaign)
        .await
        .expect("b did not take over")
        .unwrap()
        .unwrap();
    // Let the watcher settle: the count stops moving once it watches.
    let endpoint = etcd.endpoint();
    let mut before = watch_streams_started(&endpoint).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = watch_streams_started(&endpoint).await;
        if now == before {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened = watch_streams_started(&endpoint).await - before;
    assert!(
        opened <= 1,
        "one idle leader opened {opened} watch streams in 1 s"
    );
    // An operator deletes the leader key to force a failover.
    raw.delete(lead_b.key(), None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), lead_b.lost_token().cancelled())
        .await
        .expect("the leader did not notice its key was deleted");
    assert_eq!(*role_b.borrow(), Role::Follower);
}

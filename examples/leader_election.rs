//! Leader election across processes on etcd, with weft-coord.
//!
//! What it shows: nodes campaign in one election; exactly one leads and
//! runs the leader-only work (guarded by `LeaderGuard::run`, with its
//! fencing token); when the leader stops, the next node takes over, with a
//! larger fencing token; an observer sees each leader once.
//!
//! Start etcd first (any of):
//!
//! ```text
//! etcd                                   # apt-get install etcd-server; listens on 127.0.0.1:2379
//! docker run --rm -p 2379:2379 quay.io/coreos/etcd:v3.5.17 etcd \
//!     --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379
//! ```
//!
//! The endpoints come from `ETCD_ENDPOINTS` (comma-separated, default
//! `http://127.0.0.1:2379`). If nothing answers there and an `etcd` binary
//! is installed, the demo starts a throwaway etcd itself.
//!
//! Two ways to run it:
//!
//! - `cargo run --example leader_election`: a self-contained demo, two
//!   nodes in one process for about three seconds. node-a leads, then stops
//!   (closes its session, as Ctrl-C does); node-b takes over at once. Look
//!   for the ticks of node-a, the hand-over, the ticks of node-b with a larger
//!   fence, and the observer's line "leaders seen: node-a -> node-b".
//! - `cargo run --example leader_election -- node-a` in one terminal and
//!   `cargo run --example leader_election -- node-b` in another: each runs
//!   one node until Ctrl-C. One leads and ticks; press Ctrl-C in its terminal
//!   and the other takes over at once (kill it with `kill -9` instead and the
//!   other takes over when the 3 s lease runs out).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_coord::{Coord, CoordError, Role, Session};

const TTL: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> Result<(), CoordError> {
    weft_examples::init_tracing();
    let node = std::env::args().nth(1);
    // Two terminals must share one etcd: only the demo may start its own.
    let (endpoints, _etcd) = endpoints(node.is_none()).await?;
    match node {
        Some(node) => run_node(&endpoints, &node).await,
        None => demo(&endpoints).await,
    }
}

/// One node, until Ctrl-C: campaign, lead (tick every 500 ms), and on
/// Ctrl-C close the session (resign at once).
async fn run_node(endpoints: &[String], node: &str) -> Result<(), CoordError> {
    let coord = Coord::connect(endpoints).await?;
    let session = coord.session_builder().ttl(TTL).owner(node).build().await?;
    let election = session.election("leader-election-example");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        println!("{node}: campaigning");
        let leader = tokio::select! {
            _ = &mut ctrl_c => break,
            leader = election.campaign(node) => leader?,
        };
        println!("{node}: leading with fence {}", leader.fence());
        let work = leader.run(tick(node, leader.fence().get()));
        tokio::select! {
            _ = &mut ctrl_c => break,
            r = work => if r.is_err() {
                println!("{node}: lost leadership; campaigning again");
            },
        }
    }
    let report = session.close().await;
    println!("{node}: stopped ({report})");
    Ok(())
}

async fn tick(node: &str, fence: i64) {
    for n in 1.. {
        println!("{node}: leader tick {n} (fence {fence})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two nodes in one process: a leads, stops; b takes over.
async fn demo(endpoints: &[String]) -> Result<(), CoordError> {
    let a = node_session(endpoints, "node-a").await?;
    let b = node_session(endpoints, "node-b").await?;
    let name = format!("leader-election-demo-{}", std::process::id());

    // An observer: every change of leader, once.
    let mut observer = b.election(&name).observe().await?;
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(leader) = observer.changed().await {
            match leader {
                Some(l) => {
                    println!("observer: leader is now {} (fence {})", l.owner, l.fence);
                    seen.push((l.owner, l.fence));
                }
                None => println!("observer: no leader"),
            }
            if seen.len() == 2 {
                break;
            }
        }
        seen
    });

    let ea = a.election(&name);
    let lead_a = ea.campaign("node-a").await?;
    println!("node-a: leading with fence {}", lead_a.fence());

    // node-b campaigns and waits its turn; its role stream says when it leads.
    let eb = b.election(&name);
    let mut role_b = eb.role();
    let campaign_b = tokio::spawn(async move { eb.campaign("node-b").await });

    // node-a does leader work for a while, then stops.
    let _ = tokio::time::timeout(
        Duration::from_millis(1200),
        lead_a.run(tick("node-a", lead_a.fence().get())),
    )
    .await;
    println!("node-a: stopping (closing its session resigns at once)");
    let stopped = tokio::time::Instant::now();
    let report_a = a.close().await;

    let lead_b = campaign_b.await.expect("campaign task")?;
    role_b.changed().await.ok();
    println!(
        "node-b: leading with fence {} ({:?} after node-a stopped; role {:?})",
        lead_b.fence(),
        stopped.elapsed(),
        *role_b.borrow()
    );
    assert!(matches!(*role_b.borrow(), Role::Leader(_)));
    assert!(lead_b.fence() > lead_a.fence(), "fences must increase");
    let _ = tokio::time::timeout(
        Duration::from_millis(1200),
        lead_b.run(tick("node-b", lead_b.fence().get())),
    )
    .await;
    lead_b.resign().await?;
    let report_b = b.close().await;

    let seen = seen.await.expect("observer task");
    let chain: Vec<_> = seen
        .iter()
        .map(|(o, f)| format!("{o} (fence {f})"))
        .collect();
    println!("leaders seen: {}", chain.join(" -> "));
    assert_eq!(seen.len(), 2);
    assert!(seen[0].1 < seen[1].1);
    println!("{report_a}\n{report_b}");
    Ok(())
}

async fn node_session(endpoints: &[String], node: &str) -> Result<Session, CoordError> {
    let coord = Coord::connect(endpoints).await?;
    coord.session_builder().ttl(TTL).owner(node).build().await
}

/// A throwaway etcd, killed when dropped.
struct TempEtcd(Child, std::path::PathBuf);

impl Drop for TempEtcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// The endpoints from `ETCD_ENDPOINTS`, or (for the demo) a throwaway etcd
/// if nothing answers there and the binary is installed.
async fn endpoints(may_start: bool) -> Result<(Vec<String>, Option<TempEtcd>), CoordError> {
    let endpoints: Vec<String> = std::env::var("ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "http://127.0.0.1:2379".to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let probe = Coord::builder(&endpoints)
        .request_timeout(Duration::from_secs(1))
        .connect()
        .await;
    let err = match probe {
        Ok(_) => return Ok((endpoints, None)),
        Err(e) if may_start => e,
        Err(e) => {
            eprintln!("no etcd at {endpoints:?} ({e}); start one first, see the doc comment");
            return Err(e);
        }
    };
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    };
    let (Ok(client), Ok(peer)) = (free(), free()) else {
        return Err(err);
    };
    let dir = std::env::temp_dir().join(format!("weft-example-etcd-{}", std::process::id()));
    let child = Command::new("etcd")
        .arg(format!("--data-dir={}", dir.display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        .arg("--logger=zap")
        .arg("--log-level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!(
            "no etcd at {endpoints:?} ({err}) and no `etcd` binary to start one; see the doc comment"
        );
        return Err(err);
    };
    let etcd = TempEtcd(child, dir);
    let local = vec![format!("http://127.0.0.1:{client}")];
    println!(
        "nothing answered at {endpoints:?}; started a throwaway etcd at {}",
        local[0]
    );
    for _ in 0..100 {
        if let Ok(c) = Coord::builder(&local)
            .request_timeout(Duration::from_millis(500))
            .connect()
            .await
        {
            if c.client()
                .put("weft-example/ready", "1", None)
                .await
                .is_ok()
            {
                return Ok((local, Some(etcd)));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(err)
}

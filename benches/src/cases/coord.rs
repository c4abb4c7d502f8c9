//! weft-coord against raw `etcd-client` on a private etcd on loopback:
//! a lock + unlock cycle (weft's `Mutex` vs etcd's v3lock service through
//! `Client::lock`/`unlock`), and election failover after the leader's lease
//! ends (weft's `Election` vs etcd's v3election service through
//! `Client::campaign`). Skipped, with a line on stderr, when no `etcd`
//! binary is on PATH.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_coord::Coord;
use weft_coord::etcd_client::{Client, GetOptions, LockOptions};

use crate::{Ctx, Group, Row, Target, Unit, median, ns_per_call};

/// The lock + unlock cycle case.
pub const LOCK_CASE: &str = "coord/lock-unlock";
/// The failover case.
pub const FAILOVER_CASE: &str = "coord/failover-after-lease-end";

/// The coord group.
pub const GROUP: Group = Group {
    name: "coord",
    run,
    overheads: &[],
    targets: &[Target {
        case: LOCK_CASE,
        weft: "weft-coord-mutex",
        peer: "etcd-client-lock",
        // weft's latency at most 1.2x the raw client's: peer / weft >= 1 / 1.2.
        at_least: 0.83,
    }],
};

/// A throwaway single-node etcd on free loopback ports in a temporary
/// directory, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Child,
    dir: PathBuf,
    /// The client URL.
    pub endpoint: String,
}

fn free_port() -> Option<u16> {
    Some(
        TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}

impl LocalEtcd {
    /// Starts one, or returns `None` (saying why on stderr) when there is no
    /// `etcd` binary or it does not come up.
    pub async fn start() -> Option<LocalEtcd> {
        if Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("coord: skipped, no `etcd` binary on PATH (apt-get install etcd-server)");
            return None;
        }
        let (client, peer) = (free_port()?, free_port()?);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("weft-bench-etcd-{}-{nanos}", std::process::id()));
        let child = Command::new("etcd")
            .arg("--name=weft-bench")
            .arg(format!("--data-dir={}", dir.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!(
                "--initial-cluster=weft-bench=http://127.0.0.1:{peer}"
            ))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=250")
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let etcd = LocalEtcd {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{client}"),
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(mut c) = Client::connect([&etcd.endpoint], None).await {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), c.put("ready", "1", None))
                        .await
                {
                    return Some(etcd);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("coord: skipped, etcd did not start within 10 s");
        None
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    if !ctx.wants(LOCK_CASE) && !ctx.wants(FAILOVER_CASE) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(etcd) = rt.block_on(LocalEtcd::start()) else {
        return;
    };
    if ctx.wants(LOCK_CASE) {
        let cycles: u64 = if ctx.quick { 300 } else { 2000 };
        let (weft, raw) = rt.block_on(lock_setup(&etcd.endpoint));
        // Warm both connections up.
        rt.block_on(weft_cycles(&weft, 20));
        rt.block_on(raw_cycles(&raw, 20));
        // Interleave the two cycle by cycle (alternating which goes first),
        // so that load from elsewhere on a shared machine and etcd's own
        // rhythm (WAL syncs, lease checks) hit both sides alike.
        let mut weft_times = Vec::new();
        let mut raw_times = Vec::new();
        for _ in 0..ctx.samples() {
            let (w, r) = rt.block_on(interleaved_cycles(&weft, &raw, cycles));
            weft_times.push(w);
            raw_times.push(r);
        }
        let mut weft_times = weft_times.into_iter();
        rows.push(ns_per_call(
            ctx,
            LOCK_CASE,
            "weft-coord-mutex",
            cycles,
            || weft_times.next().expect("one time per sample"),
        ));
        let mut raw_times = raw_times.into_iter();
        rows.push(ns_per_call(
            ctx,
            LOCK_CASE,
            "etcd-client-lock",
            cycles,
            || raw_times.next().expect("one time per sample"),
        ));
    }
    if ctx.wants(FAILOVER_CASE) {
        let coord = rt
            .block_on(Coord::connect([&etcd.endpoint]))
            .expect("connect");
        let client = coord.client();
        let mut n = 0;
        let weft = median(ctx.samples(), || {
            n += 1;
            rt.block_on(weft_failover(&coord, &format!("weft-{n}")))
        });
        rows.push(millis(FAILOVER_CASE, "weft-coord-election", weft));
        let raw = median(ctx.samples(), || {
            n += 1;
            rt.block_on(raw_failover(&client, &format!("raw-{n}")))
        });
        rows.push(millis(FAILOVER_CASE, "etcd-client-election", raw));
    }
}

fn millis(case: &str, imp: &str, d: Duration) -> Row {
    Row::new(case, imp, d.as_secs_f64() * 1e3, Unit::Millis)
}

/// The two sides of the lock case: a weft mutex on its session, and a raw
/// client with its own lease (as a raw user would hold one).
pub struct LockBench {
    mutex: weft_coord::Mutex,
    _session: weft_coord::Session,
}

impl std::fmt::Debug for LockBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockBench")
    }
}

/// The raw side of the lock case.
#[derive(Clone)]
pub struct RawLock {
    client: Client,
    lease: i64,
}

impl std::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLock")
            .field("lease", &self.lease)
            .finish()
    }
}

/// Connects both sides.
pub async fn lock_setup(endpoint: &str) -> (LockBench, RawLock) {
    let coord = Coord::connect([endpoint]).await.expect("connect");
    let session = coord
        .session_builder()
        .ttl(Duration::from_secs(60))
        .owner("bench")
        .build()
        .await
        .expect("session");
    let mut client = Client::connect([endpoint], None).await.expect("connect");
    let lease = client.lease_grant(60, None).await.expect("lease").id();
    (
        LockBench {
            mutex: session.mutex("bench"),
            _session: session,
        },
        RawLock { client, lease },
    )
}

/// `cycles` uncontended lock + unlock cycles through weft.
pub async fn weft_cycles(b: &LockBench, cycles: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..cycles {
        let guard = b.mutex.lock().await.expect("lock");
        guard.unlock().await.expect("unlock");
    }
    start.elapsed()
}

/// `cycles` cycles of each, alternating one weft cycle and one raw cycle
/// (and which of the two goes first); returns the time spent in each.
pub async fn interleaved_cycles(b: &LockBench, r: &RawLock, cycles: u64) -> (Duration, Duration) {
    let (mut weft, mut raw) = (Duration::ZERO, Duration::ZERO);
    for i in 0..cycles {
        if i % 2 == 0 {
            weft += weft_cycles(b, 1).await;
            raw += raw_cycles(r, 1).await;
        } else {
            raw += raw_cycles(r, 1).await;
            weft += weft_cycles(b, 1).await;
        }
    }
    (weft, raw)
}

/// `cycles` uncontended lock + unlock cycles through etcd's lock service.
pub async fn raw_cycles(r: &RawLock, cycles: u64) -> Duration {
    let mut client = r.client.clone();
    let start = Instant::now();
    for _ in 0..cycles {
        let resp = client
            .lock("bench-raw", Some(LockOptions::new().with_lease(r.lease)))
            .await
            .expect("lock");
        client.unlock(resp.key()).await.expect("unlock");
    }
    start.elapsed()
}

async fn wait_keys(client: &Client, prefix: &str, n: usize) {
    let mut client = client.clone();
    loop {
        let resp = client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .expect("get");
        if resp.kvs().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One failover through weft: A leads, B campaigns, A's lease ends (revoked,
/// as etcd does when it expires); returns the time until B leads.
async fn weft_failover(coord: &Coord, name: &str) -> Duration {
    let a = coord.session().await.expect("session");
    let b = coord.session().await.expect("session");
    let lead = a.election(name).campaign("a").await.expect("campaign");
    let eb = b.election(name);
    let follower = tokio::spawn(async move { eb.campaign("b").await.map(|g| (g, Instant::now())) });
    wait_keys(&coord.client(), &format!("weft/election/{name}/"), 2).await;
    assert!(!follower.is_finished(), "two leaders at once");
    let start = Instant::now();
    coord
        .client()
        .lease_revoke(a.lease_id())
        .await
        .expect("revoke");
    let (guard, at) = follower.await.expect("join").expect("campaign");
    assert!(at > start);
    let took = at - start;
    drop(lead);
    guard.resign().await.expect("resign");
    b.close().await;
    took
}

/// The same through etcd's election service.
async fn raw_failover(client: &Client, name: &str) -> Duration {
    let mut c = client.clone();
    let la = c.lease_grant(10, None).await.expect("lease").id();
    let lb = c.lease_grant(10, None).await.expect("lease").id();
    c.campaign(name, "a", la).await.expect("campaign");
    let mut cb = client.clone();
    let n = name.to_owned();
    let follower =
        tokio::spawn(async move { cb.campaign(n, "b", lb).await.map(|_| Instant::now()) });
    wait_keys(client, &format!("{name}/"), 2).await;
    assert!(!follower.is_finished(), "two leaders at once");
    let start = Instant::now();
    c.lease_revoke(la).await.expect("revoke");
    let at = follower.await.expect("join").expect("campaign");
    c.lease_revoke(lb).await.expect("revoke");
    at - start
}

//! A private etcd per test (free loopback ports, temporary data directory,
//! killed on drop) and a TCP proxy that can cut one client off.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weft_coord::Coord;
use weft_coord::etcd_client::GetOptions;

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd server, started for one test.
pub(crate) struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub(crate) port: u16,
    peer: u16,
}

impl Etcd {
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn start() -> Etcd {
        if Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "the weft-coord integration tests need an `etcd` binary on PATH; \
                 install it with `apt-get install etcd-server` (scripts/test does this)"
            );
        }
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut etcd = Etcd {
                child: None,
                dir: tempfile::tempdir().expect("temporary directory"),
                port: free_port(),
                peer: free_port(),
            };
            match etcd.spawn().await {
                Ok(()) => return etcd,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// Starts the killed server again on the same ports and data directory,
    /// as an operator restarting it would: keys and leases survive.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn().await {
            panic!("etcd did not restart: {e}");
        }
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let (client, peer) = (self.port, self.peer);
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .arg("--name=weft-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!(
                "--initial-cluster=weft-test=http://127.0.0.1:{peer}"
            ))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=250")
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let mut last = String::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                last = format!("etcd exited with {status}");
                break;
            }
            if let Ok(c) = Coord::builder([self.endpoint()])
                .request_timeout(Duration::from_millis(500))
                .connect()
                .await
            {
                // A write proves a leader was elected.
                let mut raw = c.client();
                if raw.put("weft-test/ready", "1", None).await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
        self.kill();
        Err(format!("{last}; etcd log:\n{log}"))
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) async fn coord(&self) -> Coord {
        Coord::builder([self.endpoint()])
            .request_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect to the test etcd")
    }
}

/// The keys under `prefix`, read directly from etcd.
pub(crate) async fn keys_under(coord: &Coord, prefix: &str) -> Vec<String> {
    coord
        .client()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("read keys")
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Waits (up to `limit`, checking every 20 ms) until `cond` holds; returns
/// whether it did.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of etcd: a client connected through it can be cut
/// off (listener closed, every connection dropped), which to etcd looks like
/// the client's process died.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub(crate) async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { addr, tasks }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn coord(&self) -> Coord {
        Coord::builder([self.endpoint()])
            .request_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .expect("connect through the proxy")
    }

    /// Cuts every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

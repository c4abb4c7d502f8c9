//! The connection to etcd that every session, lock and election shares.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::error::CoordError;
use crate::session::{Session, SessionBuilder};

/// The largest request timeout [`CoordBuilder::connect`] accepts.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often an HTTP/2 ping checks the connection: twice etcd's default
/// `--grpc-keepalive-min-time` (5 s), so that pings never count as abuse.
const KEEP_ALIVE_PING: Duration = Duration::from_secs(10);

/// A connection to an etcd cluster, with the request timeout weft applies to
/// every call. Cheap to clone (clones share one gRPC channel).
///
/// ```no_run
/// # async fn demo() -> Result<(), weft_coord::CoordError> {
/// use std::time::Duration;
/// use weft_coord::Coord;
///
/// let coord = Coord::builder(["http://127.0.0.1:2379"])
///     .request_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// let session = coord.session().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coord {
    pub(crate) inner: Arc<CoordInner>,
}

pub(crate) struct CoordInner {
    pub(crate) client: Client,
    pub(crate) endpoints: Vec<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) namespace: String,
}

impl fmt::Debug for Coord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coord")
            .field("endpoints", &self.inner.endpoints)
            .field("request_timeout", &self.inner.request_timeout)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

/// Settings for [`Coord::connect`]; made by [`Coord::builder`].
#[derive(Debug, Clone)]
pub struct CoordBuilder {
    endpoints: Vec<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    namespace: String,
}

impl CoordBuilder {
    /// How long any single etcd request may take before it fails with
    /// [`CoordError::Timeout`]. Default 5 s: long enough for a loaded
    /// cluster's leader election (about 1 s with etcd's defaults), short
    /// enough that a dead cluster is reported, not waited on forever. At
    /// most 1 h ([`connect`](CoordBuilder::connect) refuses more): it bounds
    /// one request, and deadlines are computed from it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long establishing a TCP connection to an endpoint may take.
    /// Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The key prefix under which weft keeps its locks, semaphores and
    /// elections. Default `"weft/"` (a `/` is appended if missing).
    /// Processes that coordinate must use the same namespace.
    ///
    /// The keys are `<namespace><kind>/<name>/<lease>-<n>`, with `kind`
    /// one of `mutex`, `semaphore`, `election`, the name escaped (`%` as
    /// `%25`, `/` as `%2F`, so that `jobs/eu` is its own lock, not a key
    /// inside `jobs`), and `<lease>-<n>` one acquisition attempt (the lease
    /// id in 16 hex digits, a counter in hex).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Connects and checks that etcd answers (one `status` call), so that a
    /// wrong endpoint fails here with [`CoordError::Connect`] rather than on
    /// the first lock.
    pub async fn connect(self) -> Result<Coord, CoordError> {
        if self.endpoints.is_empty() {
            return Err(CoordError::InvalidArgument(
                "no etcd endpoints given; pass at least one, e.g. http://127.0.0.1:2379".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(CoordError::InvalidArgument(
                "request timeout of zero; pass a positive duration such as 5s".into(),
            ));
        }
        if self.request_timeout > MAX_REQUEST_TIMEOUT {
            return Err(CoordError::InvalidArgument(format!(
                "request timeout of {:?} is too long (it bounds a single etcd request); \
                 pass at most 1h, e.g. 5s",
                self.request_timeout
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            // HTTP/2 pings find a dead connection under a long-lived watch or
            // keep-alive stream. Not more often than etcd allows: it closes
            // the connection (GOAWAY `too_many_pings`) of a client that
            // pings more often than `--grpc-keepalive-min-time` (default
            // 5 s) while the server sends nothing, which cut off every wait
            // longer than a few seconds on an idle connection.
            .with_keep_alive(KEEP_ALIVE_PING, self.request_timeout)
            .with_keep_alive_while_idle(true);
        let joined = self.endpoints.join(",");
        let connect = Client::connect(&self.endpoints, Some(options));
        let mut client = match tokio::time::timeout(self.request_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => {
                return Err(CoordError::Connect {
                    endpoints: joined,
                    source,
                });
            }
            Err(_) => {
                return Err(CoordError::Timeout {
                    op: "connect",
                    after: self.request_timeout,
                });
            }
        };
        match tokio::time::timeout(self.request_timeout, client.status()).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(CoordError::Connect {
                    endpoints: joined,
                    source,
                });
            }
            Err(_) => {
                return Err(CoordError::Timeout {
                    op: "connect",
                    after: self.request_timeout,
                });
            }
        }
        tracing::info!(endpoints = %joined, "connected to etcd");
        let mut namespace = self.namespace;
        if !namespace.is_empty() && !namespace.ends_with('/') {
            namespace.push('/');
        }
        Ok(Coord {
            inner: Arc::new(CoordInner {
                client,
                endpoints: self.endpoints,
                request_timeout: self.request_timeout,
                namespace,
            }),
        })
    }
}

impl Coord {
    /// Settings for a connection to the given endpoints
    /// (`http://host:port`).
    pub fn builder<E: AsRef<str>>(endpoints: impl IntoIterator<Item = E>) -> CoordBuilder {
        CoordBuilder {
            endpoints: endpoints
                .into_iter()
                .map(|e| e.as_ref().to_owned())
                .collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            namespace: "weft/".to_owned(),
        }
    }

    /// Connects with the default settings.
    pub async fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
    ) -> Result<Coord, CoordError> {
        Coord::builder(endpoints).connect().await
    }

    /// Starts a session (a lease kept alive) with the default settings.
    pub async fn session(&self) -> Result<Session, CoordError> {
        self.session_builder().build().await
    }

    /// Settings for a session on this connection.
    pub fn session_builder(&self) -> SessionBuilder {
        SessionBuilder::new(self.clone())
    }

    /// The underlying `etcd-client` client, for anything weft does not wrap.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The request timeout applied to every call.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The endpoints this connection uses.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The prefix of the keys of `kind` named `name`:
    /// `<namespace><kind>/<escaped name>/` (see [`escape_name`]).
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        let ns = &self.inner.namespace;
        let mut key = String::with_capacity(ns.len() + kind.len() + name.len() + 2);
        key.push_str(ns);
        key.push_str(kind);
        key.push('/');
        escape_name(name, &mut key);
        key.push('/');
        key
    }

    /// Runs one etcd request under the request timeout and maps its error.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CoordError> {
        let after = self.inner.request_timeout;
        match tokio::time::timeout(after, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match CoordError::from_etcd(op, e) {
                CoordError::Timeout { op, .. } => CoordError::Timeout { op, after },
                other => other,
            }),
            Err(_) => Err(CoordError::Timeout { op, after }),
        }
    }
}

/// Appends `name` to `out` with `%` written `%25` and `/` written `%2F`, so
/// that no name's key prefix lies inside another's (unescaped, the keys of
/// `jobs/eu` were keys under `jobs/` and took part in `jobs`'s line) and no
/// two names share one.
fn escape_name(name: &str, out: &mut String) {
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape_name;
    use proptest::prelude::*;

    fn escaped(name: &str) -> String {
        let mut out = String::new();
        escape_name(name, &mut out);
        out
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escaped("jobs"), "jobs");
        assert_eq!(escaped("jobs/eu"), "jobs%2Feu");
        assert_eq!(escaped("50%/x"), "50%25%2Fx");
        assert_eq!(escaped(""), "");
    }

    proptest! {
        /// Escaped names contain no `/`, and two different names never
        /// escape to the same string, so `<kind>/<escaped>/` prefixes of
        /// different names never contain one another.
        #[test]
        fn escaping_delimits_and_is_injective(a in "[a/%2F5]{0,8}", b in "[a/%2F5]{0,8}") {
            let (ea, eb) = (escaped(&a), escaped(&b));
            prop_assert!(!ea.contains('/'));
            prop_assert_eq!(a == b, ea == eb);
            prop_assert_eq!(a == b, format!("{ea}/").starts_with(&format!("{eb}/")));
        }
    }
}

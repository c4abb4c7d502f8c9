//! The `http_service` application: an axum router behind weft's layers, its
//! shutdown wiring, and a minimal HTTP/1.1 client. Shared by
//! `examples/http_service.rs` and `examples/tests/http_service.rs` (both
//! include it with `#[path = "..."] mod app;`).
//!
//! Routes and what guards them:
//!
//! | route | guarded by |
//! |---|---|
//! | `GET /work?ms=N` | shutdown, per-client rate limit, load shed + adaptive limit |
//! | `GET /hash?n=N` | the same, then a bounded `BlockingPool` (CPU work) |
//! | `GET /downstream?key=K` | the same, then a circuit breaker around the downstream |
//! | `POST /admin/outage?on=true\|false` | shutdown only |
//! | `GET /healthz` | shutdown only (503 while draining: load balancers stop sending) |
//! | `GET /metrics` | nothing (the last scrape during a drain still works) |

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use weft_breaker::{CallError, CircuitBreaker, Open};
use weft_core::{BoxError, Overflow};
use weft_exec::{
    AdaptiveLimitLayer, Aimd, KeyedRateLimitLayer, KeyedRateLimiter, LoadShedLayer, Overloaded,
    Quota, RateLimited, TooManyKeys,
};
use weft_pool::{BlockingPool, PoolStats, SubmitError};
use weft_shutdown::admission::Stats as HttpStats;
use weft_shutdown::{Coordinator, Report, ShutdownLayer, ShuttingDown};

/// The header that names the client for the per-client rate limit.
pub(crate) const CLIENT_HEADER: &str = "x-client-id";

/// The service's knobs. The defaults suit a laptop demo.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The `name` label of every component's metrics (the breaker gets
    /// `{name}_downstream`, the pool `{name}_hash`).
    pub(crate) name: String,
    /// The adaptive concurrency limit (AIMD) starts here...
    pub(crate) initial_limit: usize,
    /// ...never goes above this...
    pub(crate) max_limit: usize,
    /// ...and backs off when a response takes longer than this.
    pub(crate) latency_threshold: Duration,
    /// Each client's (`x-client-id`) request budget.
    pub(crate) rate: Quota,
    /// Failures in a row that open the downstream's breaker.
    pub(crate) breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub(crate) breaker_open: Duration,
    /// Threads of the hashing pool.
    pub(crate) hash_workers: usize,
    /// Jobs the hashing pool queues before it refuses (503).
    pub(crate) hash_queue: usize,
    /// How long a (healthy) downstream call takes.
    pub(crate) downstream_latency: Duration,
    /// Timeout of the `stop-accepting` (in-flight requests) and `drain`
    /// (hashing pool) shutdown phases.
    pub(crate) drain_timeout: Duration,
    /// Whether SIGINT/SIGTERM trigger the shutdown.
    pub(crate) signals: bool,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "http".to_owned(),
            initial_limit: 16,
            max_limit: 256,
            latency_threshold: Duration::from_secs(2),
            rate: Quota::per_second(nz(20)).allow_burst(nz(40)),
            breaker_failures: 3,
            breaker_open: Duration::from_secs(2),
            hash_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue: 64,
            downstream_latency: Duration::from_millis(5),
            drain_timeout: Duration::from_secs(10),
            signals: true,
        }
    }
}

/// Installs the process-wide Prometheus recorder (once per process: weft's
/// components register their metric handles when they are built, so call
/// this before [`App::start`]). Durations are rendered as Prometheus
/// histograms with these buckets, so that dashboards can aggregate them
/// across instances with `histogram_quantile`.
pub(crate) fn install_prometheus() -> Result<PrometheusHandle, BoxError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    Ok(handle)
}

/// The simulated downstream: answers after a short delay, or fails while the
/// outage switch is on.
#[derive(Debug)]
struct Downstream {
    outage: AtomicBool,
    latency: Duration,
}

/// The downstream failed (the outage switch is on).
#[derive(Debug)]
struct DownstreamError;

impl fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("downstream unavailable")
    }
}

impl std::error::Error for DownstreamError {}

impl Downstream {
    async fn fetch(&self, key: &str) -> Result<String, DownstreamError> {
        tokio::time::sleep(self.latency).await;
        if self.outage.load(Ordering::Relaxed) {
            Err(DownstreamError)
        } else {
            Ok(format!("{key}={:016x}", hash(key.len() as u64 + 1_000)))
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    breaker: CircuitBreaker,
    downstream: Downstream,
    pool: BlockingPool,
    working: AtomicUsize,
    metrics: Option<PrometheusHandle>,
}

type AppState = Arc<Shared>;

/// A running service: its address, its shutdown coordinator, and its parts'
/// stats.
#[derive(Debug)]
pub(crate) struct App {
    addr: SocketAddr,
    coordinator: Coordinator,
    http: ShutdownLayer,
    limit: AdaptiveLimitLayer<Aimd>,
    limiter: KeyedRateLimiter<String>,
    shared: AppState,
}

impl App {
    /// Builds the service and serves it on `listener` (in a spawned task).
    /// `metrics` renders `/metrics`; without it `/metrics` answers 404.
    ///
    /// Shutdown (see [`App::trigger`] and [`App::shutdown_report`]) runs in
    /// three phases: `stop-accepting` (new requests get 503, those in flight
    /// finish), `drain` (the hashing pool finishes its queue), `close` (the
    /// server stops listening and closes its connections).
    pub(crate) async fn start(
        listener: TcpListener,
        config: Config,
        metrics: Option<PrometheusHandle>,
    ) -> Result<App, BoxError> {
        let addr = listener.local_addr()?;
        let name = config.name.clone();
        let coordinator = Coordinator::builder()
            .phase("stop-accepting", config.drain_timeout)
            .phase("drain", config.drain_timeout)
            .phase("close", Duration::from_secs(5))
            .signals(config.signals)
            .build()?;

        // Outermost: refuse new requests once shutdown starts; the
        // `stop-accepting` phase waits for the ones in flight.
        let http = coordinator.layer("stop-accepting", name.clone())?;

        let pool = BlockingPool::builder()
            .name(format!("{name}_hash"))
            .workers(config.hash_workers)
            .queue_capacity(config.hash_queue)
            .overflow(Overflow::Reject)
            .build_blocking()?;
        coordinator.register("drain", format!("{name}_hash pool"), pool.clone())?;

        let breaker = CircuitBreaker::builder()
            .name(format!("{name}_downstream"))
            .consecutive_failures(config.breaker_failures)
            .open_duration(config.breaker_open)
            .half_open_probes(1)
            .build()?;

        let limit = AdaptiveLimitLayer::named(
            name.clone(),
            Aimd::new()
                .initial(config.initial_limit)
                .max(config.max_limit)
                .latency_threshold(config.latency_threshold),
        );
        let limiter = KeyedRateLimiter::new(config.rate).name(name.clone());

        let shared = Arc::new(Shared {
            breaker,
            downstream: Downstream {
                outage: AtomicBool::new(false),
                latency: config.downstream_latency,
            },
            pool,
            working: AtomicUsize::new(0),
            metrics: metrics.clone(),
        });

        // The API: a client over its budget gets 429 before it takes a
        // concurrency slot; past the adaptive limit, requests are shed (503)
        // rather than queued.
        let api = Router::new()
            .route("/work", get(work))
            .route("/hash", get(hash_route))
            .route("/downstream", get(downstream))
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(error_response))
                    .layer(KeyedRateLimitLayer::new(
                        limiter.clone(),
                        client_id as fn(&Request) -> String,
                    ))
                    .layer(LoadShedLayer::named(name.clone()))
                    .layer(limit.clone()),
            );
        let router = Router::new()
            .merge(api)
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/admin/outage", post(outage))
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(error_response))
                    .layer(http.clone()),
            )
            .route("/metrics", get(render_metrics))
            .with_state(shared.clone());

        let stop_server = CancellationToken::new();
        let server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop_server.clone().cancelled_owned())
                .into_future(),
        );
        coordinator.register_fn("close", "http server", move |deadline| async move {
            stop_server.cancel();
            match tokio::time::timeout_at(deadline, server).await {
                Ok(Ok(Ok(()))) => tracing::info!("http server closed"),
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "http server failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
                Err(_) => tracing::warn!("http server still had open connections at the deadline"),
            }
        })?;

        if let Some(handle) = metrics {
            // The exporter without its HTTP listener leaves upkeep (draining
            // histogram samples) to us: a tracked task, stopped at shutdown.
            coordinator.spawn("metrics upkeep", move |stop| async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => handle.run_upkeep(),
                    }
                }
            })?;
        }

        tracing::info!(%addr, "http_service listening");
        Ok(App {
            addr,
            coordinator,
            http,
            limit,
            limiter,
            shared,
        })
    }

    /// The address the service listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shutdown coordinator (to trigger it from elsewhere).
    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Starts the shutdown (as Ctrl-C would).
    pub(crate) fn trigger(&self) {
        self.coordinator.trigger();
    }

    /// Waits for the shutdown to be triggered, runs it, and returns its
    /// report.
    pub(crate) async fn shutdown_report(&self) -> Report {
        self.coordinator.run().await
    }

    /// The `ShutdownLayer`'s counters: requests accepted, completed, failed,
    /// cancelled, refused while shutting down, in flight.
    pub(crate) fn http_stats(&self) -> HttpStats {
        self.http.stats()
    }

    /// The adaptive concurrency limit now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.limit()
    }

    /// Requests inside the `/work` handler right now.
    pub(crate) fn working(&self) -> usize {
        self.shared.working.load(Ordering::SeqCst)
    }

    /// The downstream's breaker.
    pub(crate) fn breaker(&self) -> &CircuitBreaker {
        &self.shared.breaker
    }

    /// The hashing pool's counters.
    pub(crate) fn pool_stats(&self) -> PoolStats {
        self.shared.pool.stats()
    }

    /// The per-client rate limiter.
    pub(crate) fn rate_limiter(&self) -> &KeyedRateLimiter<String> {
        &self.limiter
    }
}

/// The client id of a request (its `x-client-id` header, or `anonymous`).
fn client_id(req: &Request) -> String {
    req.headers()
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

/// A query parameter, without a URL-decoding dependency (the values here are
/// numbers, booleans and plain keys).
fn param<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A numeric query parameter; the error is the 400 response's body.
fn param_u64(uri: &Uri, key: &str, default: u64, max: u64) -> Result<u64, String> {
    match param(uri, key) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("{key} must be a whole number up to {max}\n")),
        },
    }
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn with_retry_after(mut resp: Response, after: Duration) -> Response {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// Maps weft's typed refusals to HTTP: shutting down → 503, shed by the
/// concurrency limit → 503, rate limited → 429 (both with `Retry-After`).
pub(crate) async fn error_response(err: BoxError) -> Response {
    if err.is::<ShuttingDown>() {
        let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    } else if let Some(limited) = err.downcast_ref::<RateLimited>() {
        with_retry_after(
            plain(StatusCode::TOO_MANY_REQUESTS, format!("{limited}\n")),
            limited.retry_after(),
        )
    } else if let Some(full) = err.downcast_ref::<TooManyKeys>() {
        with_retry_after(
            plain(StatusCode::TOO_MANY_REQUESTS, format!("{full}\n")),
            Duration::from_secs(1),
        )
    } else if err.is::<Overloaded>() {
        with_retry_after(
            plain(StatusCode::SERVICE_UNAVAILABLE, "overloaded: retry later\n"),
            Duration::from_secs(1),
        )
    } else {
        tracing::error!(error = %err, "unexpected error");
        plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
    }
}

/// An open breaker: 503 with `Retry-After` (when the next probe is due).
fn breaker_open(open: &Open) -> Response {
    with_retry_after(
        plain(StatusCode::SERVICE_UNAVAILABLE, format!("{open}\n")),
        open.retry_after().unwrap_or(Duration::from_secs(1)),
    )
}

/// Decrements the `/work` gauge when the request ends, however it ends.
struct Working<'a>(&'a AtomicUsize);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /work?ms=N`: I/O-ish work that takes `N` ms (default 10).
async fn work(State(s): State<AppState>, uri: Uri) -> Response {
    let ms = match param_u64(&uri, "ms", 10, 60_000) {
        Ok(ms) => ms,
        Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
    };
    s.working.fetch_add(1, Ordering::SeqCst);
    let _guard = Working(&s.working);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    plain(StatusCode::OK, format!("worked {ms} ms\n"))
}

/// `GET /hash?n=N`: `N` rounds of hashing (default 100,000) on the blocking
/// pool, so CPU work never stalls the async workers.
async fn hash_route(State(s): State<AppState>, uri: Uri) -> Response {
    let n = match param_u64(&uri, "n", 100_000, 100_000_000) {
        Ok(n) => n,
        Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
    };
    let job = match s.pool.try_submit(move |_: &mut ()| hash(n)) {
        Ok(job) => job,
        Err(e @ SubmitError::Closed(_)) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
        }
        Err(e) => {
            return with_retry_after(
                plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                Duration::from_secs(1),
            );
        }
    };
    match job.await {
        Ok(h) => plain(StatusCode::OK, format!("n={n} hash={h:016x}\n")),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `GET /downstream?key=K`: a call to the downstream through its breaker:
/// 200, 502 when the downstream fails, 503 + `Retry-After` when the breaker
/// is open.
async fn downstream(State(s): State<AppState>, uri: Uri) -> Response {
    let key = param(&uri, "key").unwrap_or("default").to_owned();
    match s.breaker.call(s.downstream.fetch(&key)).await {
        Ok(body) => plain(StatusCode::OK, body + "\n"),
        Err(CallError::Open(open)) => breaker_open(&open),
        Err(e) => plain(StatusCode::BAD_GATEWAY, format!("{e}\n")),
    }
}

/// `POST /admin/outage?on=true|false`: switches the simulated downstream's
/// outage on or off.
async fn outage(State(s): State<AppState>, uri: Uri) -> Response {
    let on = match param(&uri, "on") {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        _ => return plain(StatusCode::BAD_REQUEST, "pass on=true or on=false\n"),
    };
    s.downstream.outage.store(on, Ordering::Relaxed);
    tracing::info!(on, "downstream outage switched");
    plain(
        StatusCode::OK,
        format!(
            "outage {}; breaker {}\n",
            if on { "on" } else { "off" },
            s.breaker.state()
        ),
    )
}

/// `GET /metrics`: Prometheus text format.
async fn render_metrics(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(handle) => {
            // weft-pool sets its gauges (queue depth, workers) when its stats
            // are read: read them so the scrape is current.
            let _ = s.pool.stats();
            let mut resp = plain(StatusCode::OK, handle.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        None => plain(StatusCode::NOT_FOUND, "no metrics recorder installed\n"),
    }
}

/// CPU work: `n` rounds of xorshift64 folded with FNV-1a.
pub(crate) fn hash(n: u64) -> u64 {
    let mut x = n | 1;
    let mut acc: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = (acc ^ x).wrapping_mul(0x0100_0000_01b3);
    }
    acc
}

/// A complete HTTP/1.1 response, as read by [`request`].
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    /// The status code.
    pub(crate) status: u16,
    /// The headers, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body (it was exactly `content-length` bytes).
    pub(crate) body: String,
}

impl HttpResponse {
    /// A header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on a new connection (`connection: close`) and reads
/// the whole response. A response that is cut short (no status line, no
/// `content-length`, or fewer body bytes than it announced) is an error, so
/// a caller can tell a complete answer from a dropped one.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    client: Option<&str>,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: 0\r\n"
    );
    if let Some(c) = client {
        head.push_str(&format!("{CLIENT_HEADER}: {c}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

fn cut(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("response cut: {what}"),
    )
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| cut("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| cut("headers not utf-8"))?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| cut("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .ok_or_else(|| cut("no content-length"))?;
    if body.len() != len {
        return Err(cut(&format!("{} of {len} body bytes", body.len())));
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

/// The value of one sample in Prometheus text: the line starting with
/// `metric{` (or `metric ` when it has no labels) that carries every
/// `label="value"` pair given.
pub(crate) fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
}

//! Sessions: a lease kept alive, under which locks, permits and leadership are held.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_core::{Drain, ShutdownReport};

use crate::client::Coord;
use crate::election::Election;
use crate::error::{CoordError, LostReason};
use crate::keepalive::{self, EtcdRefresh};
use crate::mutex::Mutex;
use crate::semaphore::Semaphore;

/// Whether a session's lease is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// The lease is alive and kept alive.
    Alive,
    /// The lease is gone (or the session was closed); everything held under
    /// it is lost.
    Lost(LostReason),
}

/// Settings for a [`Session`]; made by [`Coord::session_builder`].
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    coord: Coord,
    ttl: Duration,
    owner: String,
    keep_alive_interval: Option<Duration>,
}

impl SessionBuilder {
    pub(crate) fn new(coord: Coord) -> Self {
        SessionBuilder {
            coord,
            ttl: Duration::from_secs(10),
            owner: format!("pid-{}", std::process::id()),
            keep_alive_interval: None,
        }
    }

    /// The lease's time to live: how long after this process dies (or is
    /// cut off) its locks, permits and leadership are released, and how long
    /// a failed keep-alive is retried before the session is declared lost.
    /// Rounded up to whole seconds; etcd may raise very small values to its
    /// minimum (about 2 s with default settings), and [`build`](Self::build)
    /// refuses more than etcd's maximum lease ttl (9,000,000,000 s). Default
    /// 10 s: a failover within seconds without losing the lease to one slow
    /// round trip.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The name that identifies this holder: stored as the value of every
    /// lock, permit and election key, shown by [`Mutex::holder`]. Default
    /// `pid-<process id>`; use something unique per node (host name, pod
    /// name).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// How often the lease is refreshed. Default a third of the ttl, so two
    /// refreshes can fail before the lease is at risk.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    /// Grants the lease and starts keeping it alive.
    pub async fn build(self) -> Result<Session, CoordError> {
        let secs = self
            .ttl
            .as_secs()
            .saturating_add(u64::from(self.ttl.subsec_nanos() > 0));
        if secs == 0 {
            return Err(CoordError::InvalidArgument(
                "session ttl of zero; pass a ttl of a few seconds, e.g. 10s".into(),
            ));
        }
        if secs > MAX_LEASE_TTL_SECS {
            return Err(CoordError::InvalidArgument(format!(
                "session ttl of {:?} is above etcd's maximum lease ttl ({MAX_LEASE_TTL_SECS} s); \
                 pass a ttl of a few seconds, e.g. 10s: it is how long a dead process keeps \
                 what it holds",
                self.ttl
            )));
        }
        let mut lease_client = self.coord.inner.client.lease_client();
        let grant = self
            .coord
            .call("lease grant", lease_client.grant(secs as i64, None))
            .await?;
        let lease = grant.id();
        let granted = grant.ttl().max(1);
        let ttl = Duration::from_secs(granted as u64);
        let interval = self
            .keep_alive_interval
            .unwrap_or(ttl / 3)
            .min(ttl / 2)
            .max(Duration::from_millis(10));
        let (state, _) = watch::channel(SessionState::Alive);
        let stop = CancellationToken::new();
        let inner = Arc::new(SessionInner {
            coord: self.coord.clone(),
            lease,
            ttl,
            owner: self.owner,
            seq: AtomicU64::new(0),
            state,
            lost: CancellationToken::new(),
            closing: CancellationToken::new(),
            stop_keepalive: stop.clone(),
            revoking: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            holds: std::sync::Mutex::new(Holds::default()),
            free_keys: std::sync::Mutex::new(HashMap::new()),
            close_report: std::sync::Mutex::new(None),
            interrupted_report: std::sync::OnceLock::new(),
        });
        let refresh = EtcdRefresh {
            client: lease_client,
            lease,
            granted,
            stream: None,
        };
        let weak: Weak<SessionInner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            if let Some(reason) = keepalive::run(refresh, ttl, interval, stop).await {
                if let Some(inner) = weak.upgrade() {
                    inner.lease_gone(reason);
                }
            }
        });
        tracing::info!(lease = format_args!("{lease:x}"), ttl = granted, owner = %inner.owner, "session started");
        Ok(Session { inner })
    }
}

/// etcd's largest lease ttl (`MaxLeaseTTL` in its lessor), in seconds.
const MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

/// The first and the largest pause between two attempts of a background
/// release that etcd did not take.
const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(50);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(2);

/// A lease kept alive in the background. Everything acquired through a
/// session — [`Mutex`] guards, [`Semaphore`] permits, [`Election`]
/// leadership — is an etcd key attached to its lease, so it disappears when
/// the lease does: when the session is closed, or when this process dies or
/// is cut off from etcd for a whole ttl.
///
/// Loss is reported at once, three ways: [`state`](Session::state) /
/// [`watch`](Session::watch) (a `watch` channel), a
/// [`CancellationToken`] from [`lost_token`](Session::lost_token) that work
/// can `select!` on, and [`CoordError::SessionLost`] from every operation
/// after it.
///
/// Cloning is cheap and shares the lease. When the last clone (and every
/// guard made from it) is dropped, keep-alive stops and the lease is revoked
/// in the background; [`close`](Session::close) (or [`Drain::drain`]) does
/// the same and waits for it, returning a report.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) coord: Coord,
    pub(crate) lease: i64,
    pub(crate) ttl: Duration,
    pub(crate) owner: String,
    seq: AtomicU64,
    state: watch::Sender<SessionState>,
    pub(crate) lost: CancellationToken,
    pub(crate) closing: CancellationToken,
    stop_keepalive: CancellationToken,
    /// Set just before `close` revokes the lease: a "lease not found" seen
    /// from then on is the revoke's doing, so the session ends as closed.
    revoking: AtomicBool,
    /// Background releases and enqueue transactions; `close` waits for them.
    tracker: TaskTracker,
    holds: std::sync::Mutex<Holds>,
    /// Keys of this session that were deleted and may be written again,
    /// by prefix (see `next_key`).
    free_keys: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// The report of the close, once one has started (see `close`).
    close_report: std::sync::Mutex<Option<watch::Receiver<Option<ShutdownReport>>>>,
    /// The report of a close whose task was dropped unfinished, settled by
    /// the first caller to find it so (settling twice would report the
    /// same holds once as aborted, then as failed).
    interrupted_report: std::sync::OnceLock<ShutdownReport>,
}

/// What kind of thing a session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mutex,
    Permit,
    Leader,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Permit => "permit",
            Kind::Leader => "leader",
        }
    }
}

#[derive(Default)]
struct Holds {
    next: u64,
    live: HashMap<u64, (Kind, String)>,
    acquired: u64,
    released: u64,
    lost: u64,
    rejected_after_close: u64,
}

/// A snapshot of a session's counts, from [`Session::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// The lease id.
    pub lease: i64,
    /// Whether the lease is alive.
    pub state: SessionState,
    /// Locks, permits and leaderships held right now.
    pub held: usize,
    /// Acquisitions granted over the session's life.
    pub acquired: u64,
    /// Acquisitions released by their holder (unlock, drop, resign).
    pub released: u64,
    /// Acquisitions lost with the lease.
    pub lost: u64,
    /// Acquisitions refused because the session was closing.
    pub rejected_after_close: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.lease))
            .field("owner", &self.inner.owner)
            .field("ttl", &self.inner.ttl)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl Session {
    /// The lease id (shown in hex in logs and keys).
    pub fn lease_id(&self) -> i64 {
        self.inner.lease
    }

    /// The ttl etcd granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The owner name stored in every key this session writes.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The connection this session uses.
    pub fn coord(&self) -> &Coord {
        &self.inner.coord
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        *self.inner.state.borrow()
    }

    /// Whether the lease is alive.
    pub fn is_alive(&self) -> bool {
        self.state() == SessionState::Alive
    }

    /// A `watch` receiver that sees the state change to
    /// [`SessionState::Lost`] the moment the loss is known.
    pub fn watch(&self) -> watch::Receiver<SessionState> {
        self.inner.state.subscribe()
    }

    /// A token cancelled when the session is lost or closed. It is a child
    /// token: cancelling it does not end the session.
    pub fn lost_token(&self) -> CancellationToken {
        self.inner.lost.child_token()
    }

    /// Waits until the session is lost or closed, and says why.
    pub async fn lost(&self) -> LostReason {
        self.inner.lost.cancelled().await;
        match self.state() {
            SessionState::Lost(reason) => reason,
            SessionState::Alive => LostReason::Closed,
        }
    }

    /// A mutex named `name` (processes using the same name exclude each other).
    pub fn mutex(&self, name: &str) -> Mutex {
        Mutex::new(self, name)
    }

    /// A semaphore named `name` with `permits` permits (every process using
    /// it must pass the same number). Refuses zero permits.
    pub fn semaphore(&self, name: &str, permits: usize) -> Result<Semaphore, CoordError> {
        Semaphore::new(self, name, permits)
    }

    /// An election named `name`.
    pub fn election(&self, name: &str) -> Election {
        Election::new(self, name)
    }

    /// A snapshot of the session's counts.
    pub fn stats(&self) -> SessionStats {
        let holds = self.inner.holds.lock().unwrap_or_else(|e| e.into_inner());
        SessionStats {
            lease: self.inner.lease,
            state: self.state(),
            held: holds.live.len(),
            acquired: holds.acquired,
            released: holds.released,
            lost: holds.lost,
            rejected_after_close: holds.rejected_after_close,
        }
    }

    /// Closes the session: refuses new acquisitions, cancels waiting ones,
    /// waits (up to the request timeout) for background releases, then
    /// revokes the lease, which releases every lock, permit and leadership
    /// still held in one step. Returns what happened to what was held:
    /// `completed` = released by their holders, `cancelled` = released by
    /// this close, `failed` = lost with the lease earlier, `aborted` = still
    /// held because etcd could not be reached (they expire with the ttl).
    /// Calling it again returns the same report.
    ///
    /// The close runs to its end even if this future is dropped (a
    /// caller's own timeout, a second ctrl-c): it is not left half done
    /// with keep-alive stopped and guards still reading as held.
    pub async fn close(&self) -> ShutdownReport {
        let timeout = self.inner.coord.request_timeout();
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or_else(|| far_future(now));
        SessionInner::close(&self.inner, deadline).await
    }
}

/// An instant later than any deadline that matters (about 30 years on).
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}

impl Drain for Session {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(SessionInner::close(&self.inner, deadline))
    }
}

impl SessionInner {
    /// A key under `prefix` for one acquisition attempt that no other
    /// attempt of this session is using. Concurrent attempts get distinct
    /// keys, so two tasks of one process sharing a session still exclude
    /// each other (no re-entrancy to get wrong).
    ///
    /// Keys this session deleted are written again rather than new ones
    /// minted: etcd keeps a deleted key in its index until the next
    /// compaction, and a range read over the lock's prefix (one per lock)
    /// walks them all, so fresh keys per attempt would make every lock
    /// slower than the last on a cluster without auto-compaction. A re-used
    /// key still gets a new, larger creation revision, hence a new fence.
    pub(crate) fn next_key(&self, prefix: &str) -> String {
        if let Some(key) = self
            .free_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(prefix)
            .and_then(Vec::pop)
        {
            return key;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}-{n:x}", self.lease)
    }

    /// Makes a key deleted by this session available to `next_key` again.
    /// Only for a key this session deleted itself, at the incarnation it
    /// wrote: nothing else of the session writes it until it is taken again.
    fn recycle(&self, key: &str) {
        if let Some(cut) = key.rfind('/') {
            let (prefix, _) = key.split_at(cut + 1);
            self.free_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(prefix.to_owned())
                .or_default()
                .push(key.to_owned());
        }
    }

    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        match *self.state.borrow() {
            SessionState::Alive => None,
            SessionState::Lost(r) => Some(r),
        }
    }

    /// Checks that a new acquisition may start.
    pub(crate) fn admit(&self) -> Result<(), CoordError> {
        if self.closing.is_cancelled() {
            self.holds().rejected_after_close += 1;
            return Err(CoordError::Closed);
        }
        match self.lost_reason() {
            None => Ok(()),
            Some(LostReason::Closed) => Err(CoordError::Closed),
            Some(r) => Err(CoordError::SessionLost(r)),
        }
    }

    /// The error a waiter gets when the session ends under it.
    pub(crate) fn ended_error(&self) -> CoordError {
        match self.lost_reason() {
            Some(LostReason::Closed) => CoordError::Closed,
            Some(r) => CoordError::SessionLost(r),
            None if self.closing.is_cancelled() => CoordError::Closed,
            None => CoordError::SessionLost(LostReason::LeaseExpired),
        }
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, kind: Kind, key: &str) -> u64 {
        let mut h = self.holds();
        h.next += 1;
        let id = h.next;
        h.live.insert(id, (kind, key.to_owned()));
        h.acquired += 1;
        #[cfg(feature = "metrics")]
        {
            metrics::counter!("weft_coord_acquired_total", "name" => self.owner.clone(), "kind" => kind.label()).increment(1);
            metrics::gauge!("weft_coord_held", "name" => self.owner.clone(), "kind" => kind.label()).increment(1.0);
        }
        id
    }

    /// Records that the holder released hold `id` (no-op if the session
    /// already accounted for it).
    pub(crate) fn released(&self, id: u64) {
        let mut h = self.holds();
        if let Some((_kind, _key)) = h.live.remove(&id) {
            h.released += 1;
            #[cfg(feature = "metrics")]
            {
                metrics::counter!("weft_coord_released_total", "name" => self.owner.clone(), "kind" => _kind.label()).increment(1);
                metrics::gauge!("weft_coord_held", "name" => self.owner.clone(), "kind" => _kind.label()).decrement(1.0);
            }
        }
    }

    /// The lease is gone (etcd said so, or keep-alive failed for a ttl):
    /// marks the session lost, or closed if `close` is revoking the lease.
    pub(crate) fn lease_gone(&self, reason: LostReason) {
        if self.revoking.load(Ordering::Acquire) {
            self.mark_lost(LostReason::Closed);
        } else {
            self.mark_lost(reason);
        }
    }

    /// Runs one etcd request made for this session (under its lease, or on
    /// its keys) under the request timeout. A request that finds the lease
    /// gone ("lease not found") marks the session lost before the error is
    /// returned, so every guard under it reads as lost at once rather than
    /// at the next keep-alive.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CoordError> {
        let r = self.coord.call(op, fut).await;
        if let Err(CoordError::SessionLost(reason)) = &r {
            self.lease_gone(*reason);
        }
        r
    }

    /// Asks etcd whether the lease still exists. If not, the session is
    /// marked lost and `Ok(false)` returned.
    pub(crate) async fn lease_alive(&self) -> Result<bool, CoordError> {
        let mut lease = self.coord.inner.client.lease_client();
        match self
            .call("lease ttl", lease.time_to_live(self.lease, None))
            .await
        {
            // etcd answers -1 for a lease it does not know.
            Ok(resp) if resp.ttl() < 0 => {
                self.lease_gone(LostReason::LeaseExpired);
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(CoordError::SessionLost(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs `task` on a task `close` waits for, so that it is not cut short
    /// when the caller stops waiting for it. Without a tokio runtime (never
    /// the case inside an async call made on tokio) it runs inline.
    pub(crate) async fn spawn_tracked<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.tracker.spawn_on(task, &handle);
            }
            Err(_) => task.await,
        }
    }

    pub(crate) fn mark_lost(&self, reason: LostReason) {
        let changed = self.state.send_if_modified(|s| {
            if *s == SessionState::Alive {
                *s = SessionState::Lost(reason);
                true
            } else {
                false
            }
        });
        if !changed {
            return;
        }
        self.stop_keepalive.cancel();
        if reason != LostReason::Closed {
            let mut h = self.holds();
            let n = h.live.len() as u64;
            h.lost += n;
            let _keys: Vec<(Kind, String)> = h.live.drain().map(|(_, v)| v).collect();
            #[cfg(feature = "metrics")]
            for (kind, _) in &_keys {
                metrics::counter!("weft_coord_lost_total", "name" => self.owner.clone(), "kind" => kind.label()).increment(1);
                metrics::gauge!("weft_coord_held", "name" => self.owner.clone(), "kind" => kind.label()).decrement(1.0);
            }
            #[cfg(feature = "metrics")]
            metrics::counter!("weft_coord_session_lost_total", "name" => self.owner.clone())
                .increment(1);
            tracing::warn!(
                lease = format_args!("{:x}", self.lease),
                owner = %self.owner,
                %reason,
                held = n,
                "session lost: everything held under it is released"
            );
        }
        // Tokens last: whoever wakes on them sees the counts settled.
        self.lost.cancel();
    }

    /// Deletes this session's `key` now: the incarnation created at
    /// revision `rev`, or whatever is there when `rev` is 0 (the answer to
    /// the put was never seen). Conditional on the creation revision, a
    /// late delete (one that timed out here but reaches etcd later) cannot
    /// delete the key written again by a later attempt of this session.
    /// `Ok` when that incarnation is gone, whoever deleted it.
    pub(crate) async fn delete(&self, key: &str, rev: i64) -> Result<(), CoordError> {
        let mut kv = self.coord.inner.client.kv_client();
        if rev == 0 {
            // Not recycled: which incarnation was deleted is unknown.
            self.call("delete", kv.delete(key, None)).await?;
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)]);
        if self.call("delete", kv.txn(txn)).await?.succeeded() {
            self.recycle(key);
        }
        Ok(())
    }

    /// Deletes `key` (created at `rev`, 0 if unknown) in the background: a
    /// guard dropped without an explicit release, a release or removal
    /// that failed, an abandoned attempt. Retried with a back-off until
    /// etcd takes it, so a key is never left holding a lock for nobody while
    /// the session lives (errors that retrying cannot fix, such as a
    /// permission denied, end the retries with a warning). Skipped (or given up) when the lease is gone or
    /// being revoked, which deletes the key anyway; without a tokio runtime
    /// the key stays until the session ends.
    pub(crate) fn spawn_release(self: &Arc<Self>, key: String, rev: i64, hold: Option<u64>) {
        if self.lost.is_cancelled() || self.closing.is_cancelled() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(%key, "no runtime to release in the background; the key goes with the lease");
            return;
        };
        let inner = self.clone();
        self.tracker.spawn_on(
            async move { inner.release_until_done(key, rev, hold).await },
            &handle,
        );
    }

    async fn release_until_done(&self, key: String, rev: i64, hold: Option<u64>) {
        let mut pause = RELEASE_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            match self.delete(&key, rev).await {
                Ok(()) => {
                    if let Some(id) = hold {
                        self.released(id);
                    }
                    tracing::debug!(%key, failures, "released in the background");
                    return;
                }
                // Retrying cannot help (permission denied, a bad request):
                // say so once and leave the key to the lease.
                Err(e) if !e.is_retryable() && !matches!(e, CoordError::SessionLost(_)) => {
                    tracing::warn!(%key, error = %e, "background release failed and cannot succeed by retrying; the key goes with the lease");
                    return;
                }
                Err(e) if failures == 0 => {
                    tracing::warn!(%key, error = %e, "background release failed; retrying until etcd takes it or the session ends");
                }
                Err(e) => {
                    tracing::debug!(%key, error = %e, failures, "background release failed again")
                }
            }
            failures += 1;
            tokio::select! {
                _ = self.lost.cancelled() => {
                    tracing::debug!(%key, "session ended: the key goes with the lease");
                    return;
                }
                // The close revokes the lease, which deletes the key.
                _ = self.closing.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RELEASE_RETRY_MAX);
        }
    }

    /// Closes the session once; every call waits for the same report. The
    /// work runs on its own task, so a caller that stops waiting (drops the
    /// future) cannot leave it half done.
    async fn close(this: &Arc<Self>, deadline: Instant) -> ShutdownReport {
        let (mut rx, tx) = {
            let mut slot = this.close_report.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *slot = Some(rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(tx) = tx {
            let inner = this.clone();
            let work = async move {
                let report = inner.close_now(deadline).await;
                tx.send_replace(Some(report));
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(work)),
                Err(_) => work.await,
            }
        }
        let report = match rx.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            Err(_) => None,
        };
        // `None`: the close task was dropped unfinished (its runtime shut
        // down); its guard marked the session closed. Report what is known,
        // settled once, so that every later call returns the same report.
        report.unwrap_or_else(|| {
            this.interrupted_report
                .get_or_init(|| this.settle(Instant::now(), false))
                .clone()
        })
    }

    async fn close_now(&self, deadline: Instant) -> ShutdownReport {
        /// Marks the session closed if the close is dropped unfinished, so
        /// no guard keeps reading as held on a lease nobody refreshes.
        struct Unfinished<'a>(Option<&'a SessionInner>);
        impl Drop for Unfinished<'_> {
            fn drop(&mut self) {
                if let Some(inner) = self.0 {
                    inner.mark_lost(LostReason::Closed);
                }
            }
        }
        let mut unfinished = Unfinished(Some(self));
        let start = Instant::now();
        self.closing.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout_at(deadline, self.tracker.wait()).await;
        // Keep-alive runs until the revoke has answered (or the deadline):
        // stopped earlier, the lease could expire while guards still read
        // as held.
        let revoked = if self.lost_reason().is_some() {
            true
        } else {
            self.revoking.store(true, Ordering::Release);
            let mut lease = self.coord.inner.client.lease_client();
            let call = self.coord.call("lease revoke", lease.revoke(self.lease));
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(_)) => true,
                Ok(Err(CoordError::SessionLost(_))) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not revoke the lease; what it holds expires with its ttl");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        "lease revoke did not finish by the deadline; what it holds expires with its ttl"
                    );
                    false
                }
            }
        };
        self.stop_keepalive.cancel();
        let report = self.settle(start, revoked);
        unfinished.0 = None;
        tracing::info!(%report, "session closed");
        report
    }

    /// Accounts for what is still held (released by the revoke, or left to
    /// expire), marks the session closed, and reports.
    fn settle(&self, start: Instant, revoked: bool) -> ShutdownReport {
        let mut report = ShutdownReport::new(format!("weft-coord session {}", self.owner));
        {
            let mut h = self.holds();
            let live: Vec<(Kind, String)> = h.live.drain().map(|(_, v)| v).collect();
            report.accepted = h.acquired;
            report.rejected_after_close = h.rejected_after_close;
            if revoked {
                h.released += live.len() as u64;
                report.cancelled = live.len() as u64;
            } else {
                h.lost += live.len() as u64;
                report.aborted = live.len() as u64;
                report.unfinished = live
                    .iter()
                    .map(|(kind, key)| {
                        format!("{} {key} (held until the ttl expires)", kind.label())
                    })
                    .collect();
            }
            // Released by their holders, and lost with the lease earlier:
            // what was counted before this close settled the rest.
            report.completed = h.released - report.cancelled;
            report.failed = h.lost - report.aborted;
        }
        report.elapsed = start.elapsed();
        self.mark_lost(LostReason::Closed);
        // If the session was lost just before closing, the keep-alive
        // task may still be settling it; either way every guard
        // reads as released once `close` returns.
        self.lost.cancel();
        report
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.stop_keepalive.cancel();
        let closing = self
            .close_report
            .get_mut()
            .map(|r| r.is_some())
            .unwrap_or(true);
        if self.lost_reason().is_some() || closing {
            return;
        }
        self.lost.cancel();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let mut lease = self.coord.inner.client.lease_client();
            let id = self.lease;
            let after = self.coord.request_timeout();
            handle.spawn(async move {
                let _ = tokio::time::timeout(after, lease.revoke(id)).await;
            });
        }
    }
}

/// The part every guard shares: one registered hold, released explicitly or
/// in the background on drop.
pub(crate) struct Hold {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) id: u64,
    pub(crate) key: String,
    /// The key's creation revision (the fence).
    rev: i64,
    /// The key is deleted, or its deletion is in the background's hands.
    done: bool,
}

impl Hold {
    pub(crate) fn new(session: Arc<SessionInner>, kind: Kind, key: String, rev: i64) -> Self {
        let id = session.register(kind, &key);
        Hold {
            session,
            id,
            key,
            rev,
            done: false,
        }
    }

    /// Deletes the key now. After a session loss, says so: the hold had
    /// already ended, and the protected work may have overlapped another
    /// holder's. If etcd does not take the delete, the error is returned
    /// and the key handed to a background release that retries until it
    /// does (or the session ends): the hold stays armed until its key is
    /// gone, and so does it if this future is dropped midway.
    pub(crate) async fn release(&mut self) -> Result<(), CoordError> {
        if let Some(reason) = self.session.lost_reason() {
            self.done = true;
            return match reason {
                LostReason::Closed => Ok(()),
                r => Err(CoordError::SessionLost(r)),
            };
        }
        match self.session.delete(&self.key, self.rev).await {
            Ok(()) => {
                self.done = true;
                self.session.released(self.id);
                Ok(())
            }
            Err(e) => {
                self.done = true;
                tracing::warn!(key = %self.key, error = %e, "release failed; retrying in the background");
                self.session
                    .spawn_release(self.key.clone(), self.rev, Some(self.id));
                Err(e)
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            self.session
                .spawn_release(self.key.clone(), self.rev, Some(self.id));
        }
    }
}

//! Leader election: campaign, resign, observe, and a guard for "run this while I lead".

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, SortOrder, SortTarget, WatchFilterType, WatchOptions};
use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::Coord;
use crate::error::{CoordError, Holder};
use crate::mutex::Fence;
use crate::queue;
use crate::session::{Hold, Kind, Session, SessionInner};

/// This node's part in an election, as seen by
/// [`Election::role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not leading (campaigning, or not taking part).
    Follower,
    /// Leading; the fence is the leader key's creation revision, larger
    /// for every later leader.
    Leader(Fence),
}

/// An election shared by every process that uses the same name. Any string
/// is a name: `sched/eu` is an election of its own, unrelated to `sched`.
///
/// Candidates line up exactly as for a [`Mutex`](crate::Mutex): the
/// candidate whose key was created first leads, each other candidate
/// watches the key just ahead of it. A leader whose process dies (or is cut
/// off) loses its key with its lease, and the next candidate takes over
/// within the ttl.
///
/// ```no_run
/// # async fn demo(session: weft_coord::Session) -> Result<(), weft_coord::CoordError> {
/// let election = session.election("scheduler");
/// let leader = election.campaign("node-a:8080").await?;
/// // Runs until the future ends or leadership is lost, whichever is first.
/// let outcome = leader.run(async { /* leader-only work */ }).await;
/// leader.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Election {
    session: Arc<SessionInner>,
    name: String,
    prefix: String,
    role: Arc<watch::Sender<Role>>,
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("role", &*self.role.borrow())
            .finish()
    }
}

impl Election {
    /// The election `name` under `session`.
    pub fn new(session: &Session, name: &str) -> Self {
        Election {
            prefix: session.inner.coord.key("election", name),
            session: session.inner.clone(),
            name: name.to_owned(),
            role: Arc::new(watch::channel(Role::Follower).0),
        }
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This node's role, as a `watch` channel: it changes only when the
    /// role does (no duplicates), never blocks the election, and turns to
    /// [`Role::Follower`] the moment leadership is lost (session lost, key
    /// deleted, resigned).
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Whether this node leads right now.
    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader(_))
    }

    /// Campaigns with `value` (shown to observers, e.g. this node's address)
    /// and waits until this node leads. Dropping the future withdraws the
    /// candidacy.
    pub async fn campaign(&self, value: impl Into<String>) -> Result<LeaderGuard, CoordError> {
        self.campaign_inner(value.into(), None).await
    }

    /// Campaigns until `cancel` is cancelled ([`CoordError::Cancelled`]).
    pub async fn campaign_with_cancel(
        &self,
        value: impl Into<String>,
        cancel: &CancellationToken,
    ) -> Result<LeaderGuard, CoordError> {
        self.campaign_inner(value.into(), Some(cancel)).await
    }

    async fn campaign_inner(
        &self,
        value: String,
        cancel: Option<&CancellationToken>,
    ) -> Result<LeaderGuard, CoordError> {
        let _start = tokio::time::Instant::now();
        let entry = queue::acquire(&self.session, &self.prefix, &value, 1, cancel).await?;
        let (key, rev) = entry.disarm();
        #[cfg(feature = "metrics")]
        metrics::histogram!("weft_coord_acquire_wait_seconds", "name" => self.session.owner.clone(), "kind" => "leader")
            .record(_start.elapsed().as_secs_f64());
        let fence = Fence(rev);
        // A child of the session's: leadership reads as lost the moment the
        // session is lost or closed (as locks and permits do), not only once
        // the watcher task has run.
        let lost = self.session.lost.child_token();
        let stop = CancellationToken::new();
        let hold = Hold::new(self.session.clone(), Kind::Leader, key.clone(), rev);
        self.role.send_replace(Role::Leader(fence));
        tracing::info!(election = %self.name, %key, fence = rev, "became leader");
        tokio::spawn(watch_leadership(
            self.session.clone(),
            key,
            rev,
            lost.clone(),
            stop.clone(),
            self.role.clone(),
            self.name.clone(),
        ));
        Ok(LeaderGuard {
            hold,
            fence,
            lost,
            _stop: stop.drop_guard(),
            role: self.role.clone(),
            name: self.name.clone(),
        })
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<Holder>, CoordError> {
        Ok(queue::holders(&self.session.coord, &self.prefix, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Follows who leads: a [`LeaderWatch`] that sees every change of leader
    /// once (no duplicates) and never holds the election up — a slow
    /// observer skips to the latest leader rather than queueing old ones.
    pub async fn observe(&self) -> Result<LeaderWatch, CoordError> {
        let coord = self.session.coord.clone();
        let (current, rev) = first_key(&coord, &self.prefix).await?;
        let (tx, rx) = watch::channel(current);
        tokio::spawn(observe_task(coord, self.prefix.clone(), rev, tx));
        Ok(LeaderWatch { rx })
    }
}

async fn first_key(coord: &Coord, prefix: &str) -> Result<(Option<Holder>, i64), CoordError> {
    let mut kv = coord.inner.client.kv_client();
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let resp = coord.call("get leader", kv.get(prefix, Some(opts))).await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
    Ok((resp.kvs().first().map(queue::holder), rev))
}

/// The pause before the `n`th retry in a row of a watch that could not be
/// opened or that etcd ended: none for the first, then 100 ms doubling up
/// to 3.2 s, so a watch that keeps failing is not a hot loop against etcd.
fn retry_pause(n: u32) -> Duration {
    match n {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(50 << n.min(6)),
    }
}

async fn observe_task(
    coord: Coord,
    prefix: String,
    mut rev: i64,
    tx: watch::Sender<Option<Holder>>,
) {
    // Watches in a row that failed or ended without an event.
    let mut failures = 0u32;
    loop {
        let pause = retry_pause(failures);
        if !pause.is_zero() {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        failures += 1;
        // Wait for any change under the prefix after `rev`.
        let mut client = coord.inner.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let stream = tokio::select! {
            _ = tx.closed() => return,
            s = coord.call("watch", client.watch(prefix.as_str(), Some(options))) => s,
        };
        match stream {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) if resp.canceled() => break,
                    Ok(Some(resp)) if resp.events().is_empty() => continue,
                    Ok(Some(_)) => {
                        failures = 0;
                        break;
                    }
                    _ => break,
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "observer could not watch the election; retrying");
            }
        }
        match first_key(&coord, &prefix).await {
            Ok((leader, at)) => {
                rev = at;
                tx.send_if_modified(|cur| {
                    if *cur != leader {
                        *cur = leader;
                        true
                    } else {
                        false
                    }
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "observer could not read the leader; retrying");
            }
        }
    }
}

/// Follows this node's leader key until leadership ends, and says why.
///
/// The watch starts right after the key's creation revision. If etcd
/// cancels it (that revision was compacted while this node waited in line)
/// or it ends, the key is read again: gone, or created anew, means
/// leadership was lost; otherwise the watch resumes from that read, so no
/// deletion is missed and no cancelled watch is re-created in a loop.
async fn watch_leadership(
    session: Arc<SessionInner>,
    key: String,
    rev: i64,
    lost: CancellationToken,
    stop: CancellationToken,
    role: Arc<watch::Sender<Role>>,
    name: String,
) {
    let fence = Fence(rev);
    let why = leadership_watch(&session, &key, rev, &stop).await;
    drop(session);
    finish(&role, fence, &lost, why, &name)
}

async fn leadership_watch(
    session: &SessionInner,
    key: &str,
    rev: i64,
    stop: &CancellationToken,
) -> &'static str {
    let coord = &session.coord;
    let session_lost = &session.lost;
    let deleted = || {
        if session.closing.is_cancelled() {
            "session closed"
        } else {
            "leader key deleted"
        }
    };
    let mut from = rev + 1;
    // Watches in a row that failed or ended without an event.
    let mut failures = 0u32;
    loop {
        let pause = retry_pause(failures);
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => return "resigned",
                _ = session_lost.cancelled() => return "session lost",
                _ = tokio::time::sleep(pause) => {}
            }
        }
        failures += 1;
        let mut client = coord.inner.client.watch_client();
        let options = WatchOptions::new()
            .with_start_revision(from)
            .with_filters([WatchFilterType::NoPut]);
        let stream = tokio::select! {
            _ = stop.cancelled() => return "resigned",
            _ = session_lost.cancelled() => return "session lost",
            s = session.call("watch", client.watch(key, Some(options))) => s,
        };
        // etcd unreachable: the session's keep-alive decides; try again.
        if let Ok(mut stream) = stream {
            let opened = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return "resigned",
                    _ = session_lost.cancelled() => return "session lost",
                    m = stream.message() => match m {
                        Ok(Some(resp)) if resp.events().iter().any(|e| e.event_type() == EventType::Delete) => return deleted(),
                        Ok(Some(resp)) if resp.canceled() => break,
                        Ok(Some(_)) => continue,
                        _ => break,
                    },
                }
            }
            // A watch that ran a while before it ended is not a failure in
            // a row.
            if opened.elapsed() >= Duration::from_secs(5) {
                failures = 1;
            }
        }
        // Is the key still the one this leadership created?
        let mut kv = coord.inner.client.kv_client();
        let read = tokio::select! {
            _ = stop.cancelled() => return "resigned",
            _ = session_lost.cancelled() => return "session lost",
            r = session.call("get leader key", kv.get(key, None)) => r,
        };
        match read {
            Ok(resp) => match resp.kvs().first() {
                Some(kv) if kv.create_revision() == rev => {
                    from = resp.header().map(|h| h.revision()).unwrap_or(rev) + 1;
                }
                _ => return deleted(),
            },
            Err(e) => {
                tracing::debug!(error = %e, %key, "could not read the leader key; retrying");
            }
        }
    }
}

fn finish(
    role: &watch::Sender<Role>,
    fence: Fence,
    lost: &CancellationToken,
    why: &str,
    name: &str,
) {
    let changed = role.send_if_modified(|r| {
        if *r == Role::Leader(fence) {
            *r = Role::Follower;
            true
        } else {
            false
        }
    });
    // The token last: whoever wakes on it reads the role as settled.
    lost.cancel();
    if changed {
        if why == "resigned" || why == "session closed" {
            tracing::info!(election = %name, fence = fence.0, why, "leadership ended");
        } else {
            tracing::warn!(election = %name, fence = fence.0, why, "leadership lost");
        }
    }
}

/// Leadership of an [`Election`]. Resigns with
/// [`resign`](LeaderGuard::resign) or, when dropped, in the background.
pub struct LeaderGuard {
    hold: Hold,
    fence: Fence,
    lost: CancellationToken,
    _stop: DropGuard,
    role: Arc<watch::Sender<Role>>,
    name: String,
}

impl fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderGuard")
            .field("election", &self.name)
            .field("key", &self.hold.key)
            .field("fence", &self.fence)
            .field("leading", &self.is_leader())
            .finish()
    }
}

impl LeaderGuard {
    /// This leadership's fencing token.
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// The leader key.
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// Whether this node still leads.
    pub fn is_leader(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// A token cancelled the moment leadership is lost (session lost,
    /// leader key deleted).
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Runs `work` while this node leads: returns its output, or
    /// [`CoordError::NotLeader`] (dropping `work`) as soon as leadership is
    /// lost.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, CoordError> {
        tokio::select! {
            biased;
            _ = self.lost.cancelled() => Err(CoordError::NotLeader),
            out = work => Ok(out),
        }
    }

    /// Steps down now: deletes the leader key, so the next candidate takes
    /// over at once.
    pub async fn resign(mut self) -> Result<(), CoordError> {
        self.lost.cancel();
        self.step_down();
        let r = self.hold.release().await;
        tracing::info!(election = %self.name, fence = self.fence.0, "resigned");
        r
    }

    fn step_down(&self) {
        let fence = self.fence;
        self.role.send_if_modified(|r| {
            if *r == Role::Leader(fence) {
                *r = Role::Follower;
                true
            } else {
                false
            }
        });
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.lost.cancel();
        self.step_down();
    }
}

/// Who leads an election, followed over time; made by
/// [`Election::observe`].
#[derive(Debug, Clone)]
pub struct LeaderWatch {
    rx: watch::Receiver<Option<Holder>>,
}

impl LeaderWatch {
    /// The leader as last seen.
    pub fn current(&self) -> Option<Holder> {
        self.rx.borrow().clone()
    }

    /// Waits for the next change of leader and returns the new one
    /// (`None`: nobody leads). Returns `Err(CoordError::Closed)` if the
    /// observer stopped.
    pub async fn changed(&mut self) -> Result<Option<Holder>, CoordError> {
        self.rx.changed().await.map_err(|_| CoordError::Closed)?;
        Ok(self.rx.borrow_and_update().clone())
    }

    /// The changes as a stream (each new leader once).
    pub fn into_stream(self) -> impl Stream<Item = Option<Holder>> + Send + 'static {
        futures::stream::unfold(self, |mut w| async move {
            match w.changed().await {
                Ok(leader) => Some((leader, w)),
                Err(_) => None,
            }
        })
    }
}

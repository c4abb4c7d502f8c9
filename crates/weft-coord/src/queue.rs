//! The waiting line every lock, semaphore and election is built on: one key
//! per waiter, ordered by creation revision, each waiter watching for the
//! deletions that let it in.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::{CoordError, Holder};
use crate::session::SessionInner;

/// A waiter's key in the line. Armed from before its put is sent until it
/// becomes a hold or its key is known deleted: dropped while armed (the
/// attempt was abandoned, failed, or its removal did not go through), it
/// deletes its key in the background so it does not block those behind it.
pub(crate) struct Entry {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) key: String,
    /// The key's creation revision: its place in line and its fencing
    /// token (0 until etcd has answered the put).
    pub(crate) rev: i64,
    armed: bool,
}

impl Entry {
    fn new(session: Arc<SessionInner>, key: String) -> Self {
        Entry {
            session,
            key,
            rev: 0,
            armed: true,
        }
    }

    /// The line is done with this entry: it became a hold (or its key is
    /// already gone).
    pub(crate) fn disarm(mut self) -> (String, i64) {
        self.armed = false;
        (std::mem::take(&mut self.key), self.rev)
    }

    /// Deletes the key now (a failed `try_*`). The entry stays armed until
    /// etcd has taken the delete: if it fails, or this future is dropped
    /// midway, the key is deleted in the background.
    pub(crate) async fn remove(mut self) -> Result<(), CoordError> {
        self.session.delete(&self.key, self.rev).await?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.armed {
            self.session
                .spawn_release(std::mem::take(&mut self.key), self.rev, None);
        }
    }
}

fn first_n(n: usize) -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(n as i64)
}

/// Joins the line under `prefix`: creates this waiter's key (attached to
/// the session's lease, holding `value`) and, in the same transaction, reads
/// the first `permits` keys. Returns the entry and whether it is already
/// among the first `permits`, i.e. admitted (one round trip when
/// uncontended).
///
/// The transaction runs on a task of the session that owns the entry and
/// answers through a channel: if the caller gives up while the put is in
/// flight (a timeout, a dropped future), the entry is dropped there, once
/// etcd has answered, and its key deleted after it was written rather than
/// (racing it) before.
pub(crate) async fn enqueue(
    session: &Arc<SessionInner>,
    prefix: &str,
    value: &str,
    permits: usize,
) -> Result<(Entry, bool), CoordError> {
    session.admit()?;
    let mut entry = Entry::new(session.clone(), session.next_key(prefix));
    let txn = Txn::new()
        .when([Compare::create_revision(
            entry.key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then([
            TxnOp::put(
                entry.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(session.lease)),
            ),
            TxnOp::get(prefix, Some(first_n(permits).with_keys_only())),
        ]);
    let (tx, rx) = oneshot::channel();
    let inner = session.clone();
    session
        .spawn_tracked(async move {
            let mut kv = inner.coord.inner.client.kv_client();
            let out = match inner.call("lock", kv.txn(txn)).await {
                Ok(resp) if !resp.succeeded() => {
                    // The key is unique to this attempt; it cannot exist
                    // already. Not ours to delete.
                    let (key, _) = entry.disarm();
                    Err(CoordError::InvalidArgument(format!(
                        "key {key} already exists; is another process using the same lease?"
                    )))
                }
                Ok(resp) => {
                    entry.rev = resp.header().map(|h| h.revision()).unwrap_or_default();
                    let admitted = resp.op_responses().iter().any(|op| match op {
                        TxnOpResponse::Get(get) => {
                            get.kvs().iter().any(|kv| kv.key() == entry.key.as_bytes())
                        }
                        _ => false,
                    });
                    Ok((entry, admitted))
                }
                // The put may have been applied: the entry, still armed,
                // deletes its key in the background.
                Err(e) => Err(e),
            };
            // If the caller is gone, `out` (and the armed entry) is dropped
            // here.
            let _ = tx.send(out);
        })
        .await;
    rx.await.unwrap_or_else(|_| Err(session.ended_error()))
}

/// Joins the line under `prefix` and waits until admitted: a whole
/// acquisition (`lock`, `acquire`, `campaign`).
///
/// A waiter whose key disappears while its lease lives on (someone deleted
/// it by hand) joins the line again at the back, with a new key; if the
/// lease is gone the session is marked lost and the error says so.
pub(crate) async fn acquire(
    session: &Arc<SessionInner>,
    prefix: &str,
    value: &str,
    permits: usize,
    cancel: Option<&CancellationToken>,
) -> Result<Entry, CoordError> {
    loop {
        let (entry, admitted) = enqueue(session, prefix, value, permits).await?;
        if admitted {
            return Ok(entry);
        }
        tracing::debug!(key = %entry.key, "waiting in line");
        match wait_turn(&entry, prefix, permits, cancel).await? {
            Turn::Admitted => return Ok(entry),
            Turn::KeyGone => {
                tracing::warn!(key = %entry.key, "this waiter's key was deleted by someone else; joining the line again");
                // Already gone; not recycled (someone else deleted it).
                entry.disarm();
            }
        }
    }
}

/// How a wait in line ended, when it did not fail.
enum Turn {
    /// Among the first `permits`: admitted.
    Admitted,
    /// The waiter's key was deleted by someone else while its lease lives.
    KeyGone,
}

/// Waits until `entry` is among the first `permits` keys under `prefix`.
///
/// The check is "am I among the first `permits` keys by creation
/// revision". Keys only ever join at the back (revisions increase), so once
/// true it stays true until this key is deleted: no waiter can be overtaken
/// and nobody has to back off and retry (the put-then-count livelock).
///
/// With one permit the waiter watches only its immediate predecessor's key
/// (no thundering herd); with more it watches the prefix for deletions.
async fn wait_turn(
    entry: &Entry,
    prefix: &str,
    permits: usize,
    cancel: Option<&CancellationToken>,
) -> Result<Turn, CoordError> {
    let session = &entry.session;
    let coord = &session.coord;
    let never = CancellationToken::new();
    let cancel = cancel.unwrap_or(&never);
    // Consecutive watches that ended without a deletion (cancelled by
    // etcd, stream closed): paused between, so a watch etcd keeps
    // cancelling does not become a hot loop.
    let mut interrupted = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(CoordError::Cancelled);
        }
        if session.lost.is_cancelled() || session.closing.is_cancelled() {
            return Err(session.ended_error());
        }
        if interrupted > 1 {
            let pause = Duration::from_millis(25 << interrupted.min(6));
            tokio::select! {
                _ = cancel.cancelled() => return Err(CoordError::Cancelled),
                _ = session.lost.cancelled() => return Err(session.ended_error()),
                _ = session.closing.cancelled() => return Err(session.ended_error()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let mut kv = coord.inner.client.kv_client();
        // Who is ahead of me? Read the keys created up to my revision.
        let (watch_key, from) = if permits == 1 {
            let opts = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(entry.rev)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(2)
                .with_keys_only();
            let resp = session.call("lock", kv.get(prefix, Some(opts))).await?;
            let kvs = resp.kvs();
            if kvs.first().map(|kv| kv.key()) != Some(entry.key.as_bytes()) {
                return own_key_gone(session).await;
            }
            match kvs.get(1) {
                None => return Ok(Turn::Admitted),
                Some(pred) => (
                    Some(pred.key().to_vec()),
                    resp.header().map(|h| h.revision()).unwrap_or_default(),
                ),
            }
        } else {
            let opts = first_n(permits)
                .with_max_create_revision(entry.rev)
                .with_keys_only();
            let resp = session.call("acquire", kv.get(prefix, Some(opts))).await?;
            let kvs = resp.kvs();
            if kvs.iter().any(|kv| kv.key() == entry.key.as_bytes()) {
                return Ok(Turn::Admitted);
            }
            if kvs.len() < permits {
                return own_key_gone(session).await;
            }
            (
                None,
                resp.header().map(|h| h.revision()).unwrap_or_default(),
            )
        };
        // Wait for a deletion, starting right after the read so none is missed.
        let mut options = WatchOptions::new()
            .with_start_revision(from + 1)
            .with_filters([WatchFilterType::NoPut]);
        let key = match watch_key {
            Some(k) => k,
            None => {
                options = options.with_prefix();
                prefix.as_bytes().to_vec()
            }
        };
        let mut watch = coord.inner.client.watch_client();
        let mut stream = session
            .call("watch", watch.watch(key, Some(options)))
            .await?;
        interrupted += 1;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(CoordError::Cancelled),
                _ = session.lost.cancelled() => return Err(session.ended_error()),
                _ = session.closing.cancelled() => return Err(session.ended_error()),
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            interrupted = 0;
                            break;
                        }
                        if resp.canceled() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(CoordError::from_etcd("watch", e)),
                },
            }
        }
    }
}

/// This waiter's key is not in line any more: either the lease is gone
/// (etcd deleted its keys; the session is marked lost at once rather than
/// at the next keep-alive) or someone deleted the key by hand.
async fn own_key_gone(session: &SessionInner) -> Result<Turn, CoordError> {
    if session.lease_alive().await? {
        Ok(Turn::KeyGone)
    } else {
        Err(session.ended_error())
    }
}

/// The first `n` entries in line under `prefix`: the holders.
pub(crate) async fn holders(
    coord: &crate::Coord,
    prefix: &str,
    n: usize,
) -> Result<Vec<Holder>, CoordError> {
    let mut kv = coord.inner.client.kv_client();
    let resp = coord.call("get", kv.get(prefix, Some(first_n(n)))).await?;
    Ok(resp.kvs().iter().map(holder).collect())
}

pub(crate) fn holder(kv: &etcd_client::KeyValue) -> Holder {
    Holder {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        owner: String::from_utf8_lossy(kv.value()).into_owned(),
        lease: kv.lease(),
        fence: kv.create_revision(),
    }
}

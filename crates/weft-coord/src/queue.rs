//! The waiting line every lock, semaphore and election is built on: one key
//! per waiter, ordered by creation revision, each waiter watching for the
//! deletions that let it in.

use std::sync::Arc;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use crate::error::{CoordError, Holder};
use crate::session::SessionInner;

/// A waiter's key in the line. Dropped while still armed (the wait was
/// cancelled or failed), it deletes its key in the background so it does
/// not block those behind it.
pub(crate) struct Entry {
    pub(crate) session: Arc<SessionInner>,
    pub(crate) key: String,
    /// The key's creation revision: its place in line and its fencing token.
    pub(crate) rev: i64,
    armed: bool,
}

impl Entry {
    /// The line is done with this entry: it became a hold.
    pub(crate) fn disarm(mut self) -> (String, i64) {
        self.armed = false;
        (std::mem::take(&mut self.key), self.rev)
    }

    /// Deletes the key now (a failed `try_*`).
    pub(crate) async fn remove(mut self) -> Result<(), CoordError> {
        self.armed = false;
        self.session.delete(&self.key).await
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.armed {
            self.session
                .spawn_release(std::mem::take(&mut self.key), None);
        }
    }
}

fn first_n(prefix: &str, n: usize) -> GetOptions {
    let _ = prefix;
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
pub(crate) async fn enqueue(
    session: &Arc<SessionInner>,
    prefix: &str,
    value: &str,
    permits: usize,
) -> Result<(Entry, bool), CoordError> {
    session.admit()?;
    let key = session.next_key(prefix);
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(session.lease)),
            ),
            TxnOp::get(prefix, Some(first_n(prefix, permits).with_keys_only())),
        ]);
    let mut kv = session.coord.inner.client.kv_client();
    let resp = session.coord.call("lock", kv.txn(txn)).await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
    let entry = Entry {
        session: session.clone(),
        key,
        rev,
        armed: true,
    };
    if !resp.succeeded() {
        // The key is unique to this attempt; it cannot exist already.
        return Err(CoordError::InvalidArgument(format!(
            "key {} already exists; is another process using the same lease?",
            entry.key
        )));
    }
    let admitted = resp.op_responses().iter().any(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().iter().any(|kv| kv.key() == entry.key.as_bytes()),
        _ => false,
    });
    Ok((entry, admitted))
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
pub(crate) async fn wait_turn(
    entry: &Entry,
    prefix: &str,
    permits: usize,
    cancel: Option<&CancellationToken>,
) -> Result<(), CoordError> {
    let session = &entry.session;
    let coord = &session.coord;
    let never = CancellationToken::new();
    let cancel = cancel.unwrap_or(&never);
    loop {
        if cancel.is_cancelled() {
            return Err(CoordError::Cancelled);
        }
        if session.lost.is_cancelled() || session.closing.is_cancelled() {
            return Err(session.ended_error());
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
            let resp = coord.call("lock", kv.get(prefix, Some(opts))).await?;
            let kvs = resp.kvs();
            if kvs.first().map(|kv| kv.key()) != Some(entry.key.as_bytes()) {
                // My own key is gone: the lease expired under me.
                return Err(session.ended_error());
            }
            match kvs.get(1) {
                None => return Ok(()),
                Some(pred) => (
                    Some(pred.key().to_vec()),
                    resp.header().map(|h| h.revision()).unwrap_or_default(),
                ),
            }
        } else {
            let opts = first_n(prefix, permits)
                .with_max_create_revision(entry.rev)
                .with_keys_only();
            let resp = coord.call("acquire", kv.get(prefix, Some(opts))).await?;
            let kvs = resp.kvs();
            if kvs.iter().any(|kv| kv.key() == entry.key.as_bytes()) {
                return Ok(());
            }
            if kvs.len() < permits {
                return Err(session.ended_error());
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
        let mut stream = coord.call("watch", watch.watch(key, Some(options))).await?;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(CoordError::Cancelled),
                _ = session.lost.cancelled() => return Err(session.ended_error()),
                _ = session.closing.cancelled() => return Err(session.ended_error()),
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled()
                            || resp.events().iter().any(|e| e.event_type() == EventType::Delete)
                        {
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

/// The first `n` entries in line under `prefix`: the holders.
pub(crate) async fn holders(
    coord: &crate::Coord,
    prefix: &str,
    n: usize,
) -> Result<Vec<Holder>, CoordError> {
    let mut kv = coord.inner.client.kv_client();
    let resp = coord
        .call("get", kv.get(prefix, Some(first_n(prefix, n))))
        .await?;
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

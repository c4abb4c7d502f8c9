//! The errors every coordination operation returns.

use std::fmt;
use std::time::Duration;

/// Why a session ended: its lease is gone, and with it every lock, permit
/// and leadership held under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// etcd answered a keep-alive with a TTL of zero: the lease expired or
    /// was revoked by someone else.
    LeaseExpired,
    /// No keep-alive got through for a whole TTL (etcd unreachable, network
    /// partition): etcd has expired the lease, or will before anyone could
    /// be told otherwise.
    KeepAliveFailed,
    /// The session was closed or drained on purpose.
    Closed,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::LeaseExpired => "the lease expired or was revoked",
            LostReason::KeepAliveFailed => "no keep-alive reached etcd within the lease ttl",
            LostReason::Closed => "the session was closed",
        })
    }
}

/// Information about whoever holds a lock (or leads an election) right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The etcd key of the holder's entry.
    pub key: String,
    /// The holder's owner name (its session's [`owner`](crate::SessionBuilder::owner));
    /// for an election, the leader's campaign value.
    pub owner: String,
    /// The lease the holder's entry is attached to.
    pub lease: i64,
    /// The holder's fencing token (its key's creation revision).
    pub fence: i64,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (key {}, lease {:x}, fence {})",
            self.owner, self.key, self.lease, self.fence
        )
    }
}

/// Everything that can go wrong while coordinating through etcd. Each
/// variant says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// etcd could not be reached when connecting (connection refused,
    /// unknown host, nothing listening).
    #[error(
        "cannot reach etcd at {endpoints}: {source}; check that etcd is running and the endpoints are right"
    )]
    Connect {
        /// The endpoints that were tried.
        endpoints: String,
        /// What the client reported.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd became unreachable during an operation (connection refused or
    /// reset, no leader). Retry after a back-off; held locks stay held until
    /// the session's ttl runs out.
    #[error("etcd is unavailable during {op}: {source}; retry after a back-off")]
    Unavailable {
        /// The operation that failed.
        op: &'static str,
        /// What the client reported.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer within the request timeout (or the caller's
    /// deadline). Retry, or raise the timeout if etcd is merely slow.
    #[error("etcd did not answer {op} within {after:?}; retry, or raise the timeout")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The session's lease is gone: everything held under it is lost.
    /// Stop the work it protected and create a new session.
    #[error("session lost ({0}); stop the protected work and start a new session")]
    SessionLost(LostReason),
    /// `try_lock` / `try_acquire` found the lock or permits taken.
    #[error("would block: {}", match .holder { Some(h) => format!("held by {h}"), None => "no permit free".to_owned() })]
    WouldBlock {
        /// Who holds the lock (for a mutex), if known.
        holder: Option<Holder>,
    },
    /// The caller cancelled the operation through its cancellation token.
    #[error("cancelled by the caller")]
    Cancelled,
    /// The session is closing or closed (drained): no new acquisitions.
    #[error("the session is closed; create a new session to acquire again")]
    Closed,
    /// This node is not (or no longer) the leader.
    #[error("not the leader; campaign again to lead")]
    NotLeader,
    /// A setting was refused when building something.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Any other error from etcd (permission denied, request too large, ...).
    #[error("etcd error during {op}: {source}")]
    Etcd {
        /// The operation that failed.
        op: &'static str,
        /// What the client reported.
        #[source]
        source: etcd_client::Error,
    },
}

impl CoordError {
    /// Whether trying again later may succeed (unavailable, timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CoordError::Unavailable { .. }
                | CoordError::Timeout { .. }
                | CoordError::Connect { .. }
        )
    }

    /// Maps an etcd client error met during `op` to the matching variant.
    pub(crate) fn from_etcd(op: &'static str, source: etcd_client::Error) -> Self {
        // gRPC codes, see tonic::Code.
        const CANCELLED: i32 = 1;
        const UNKNOWN: i32 = 2;
        const DEADLINE_EXCEEDED: i32 = 4;
        const UNAVAILABLE: i32 = 14;
        match &source {
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                CoordError::Unavailable { op, source }
            }
            etcd_client::Error::GRpcStatus(status) => {
                let code = i32::from(status.code());
                let msg = status.message();
                if msg.contains("lease not found") {
                    CoordError::SessionLost(LostReason::LeaseExpired)
                } else if code == DEADLINE_EXCEEDED {
                    CoordError::Timeout {
                        op,
                        after: Duration::ZERO,
                    }
                } else if code == UNAVAILABLE
                    || code == CANCELLED
                    || (code == UNKNOWN
                        && (msg.contains("transport") || msg.contains("h2 protocol error")))
                    || msg.contains("no leader")
                {
                    CoordError::Unavailable { op, source }
                } else {
                    CoordError::Etcd { op, source }
                }
            }
            etcd_client::Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
                CoordError::SessionLost(LostReason::LeaseExpired)
            }
            etcd_client::Error::LeaseKeepAliveError(_) | etcd_client::Error::WatchError(_) => {
                CoordError::Unavailable { op, source }
            }
            _ => CoordError::Etcd { op, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_say_what_to_do() {
        let e = CoordError::Timeout {
            op: "lock",
            after: Duration::from_secs(1),
        };
        assert_eq!(
            e.to_string(),
            "etcd did not answer lock within 1s; retry, or raise the timeout"
        );
        assert!(e.is_retryable());
        let e = CoordError::SessionLost(LostReason::LeaseExpired);
        assert!(e.to_string().starts_with("session lost (the lease expired"));
        assert!(!e.is_retryable());
        let e = CoordError::WouldBlock {
            holder: Some(Holder {
                key: "k".into(),
                owner: "node-a".into(),
                lease: 255,
                fence: 7,
            }),
        };
        assert_eq!(
            e.to_string(),
            "would block: held by node-a (key k, lease ff, fence 7)"
        );
    }

    #[test]
    fn lease_not_found_is_session_lost() {
        let e = CoordError::from_etcd(
            "put",
            etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
        );
        assert!(matches!(
            e,
            CoordError::SessionLost(LostReason::LeaseExpired)
        ));
        let e = CoordError::from_etcd("watch", etcd_client::Error::WatchError("gone".into()));
        assert!(matches!(e, CoordError::Unavailable { op: "watch", .. }));
    }
}

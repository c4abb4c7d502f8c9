//! Coordination across machines on etcd: sessions, a mutex with fencing
//! tokens, leader election and a fair semaphore.
//!
//! weft does not build its own consensus. Every primitive here is a key in
//! [etcd](https://etcd.io) (the store Kubernetes trusts), written through
//! the [`etcd-client`](https://docs.rs/etcd-client) crate, attached to a
//! lease, and ordered by etcd's revision counter:
//!
//! - [`Coord`]: the connection, with a request timeout on every call.
//! - [`Session`]: a lease kept alive in the background. When keep-alive
//!   fails for a whole ttl or etcd says the lease is gone, the session
//!   reports the loss at once ([`Session::watch`], [`Session::lost_token`])
//!   and everything held under it is released by etcd.
//! - [`Mutex`]: `lock` / `try_lock` / `lock_with_timeout` /
//!   `lock_with_cancel`; the [`MutexGuard`] carries a [`Fence`] (the lock
//!   key's creation revision, larger for every later holder) to hand to the
//!   protected resource ([`FenceGate`]), names its holder
//!   ([`Mutex::holder`]), and unlocks explicitly or, dropped, in the
//!   background.
//! - [`Election`]: `campaign` / `resign` / `leader` / `observe`, this node's
//!   [`Role`] as a `watch` channel without duplicates, and a
//!   [`LeaderGuard`] that runs work only while this node leads.
//! - [`Semaphore`]: N permits across processes, served in arrival order.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_coord::Coord;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), weft_coord::CoordError> {
//! let coord = Coord::connect(["http://127.0.0.1:2379"]).await?;
//! let session = coord
//!     .session_builder()
//!     .ttl(Duration::from_secs(5))
//!     .owner("billing-7f9c")
//!     .build()
//!     .await?;
//!
//! let guard = session.mutex("invoices").lock().await?;
//! let fence = guard.fence(); // pass it with every write the lock protects
//! let lost = guard.lost_token();
//! tokio::select! {
//!     _ = lost.cancelled() => eprintln!("lost the lock: stop"),
//!     _ = async { /* critical section, using `fence` */ } => {}
//! }
//! guard.unlock().await?;
//! session.close().await;
//! # Ok(()) }
//! ```
//!
//! # What etcd guarantees, and what it does not
//!
//! etcd is linearizable: every write gets a cluster-wide revision, and the
//! order of revisions is the order of writes. So "the key with the smallest
//! creation revision holds the lock" has one answer, the same for every
//! client. What no lock service can guarantee is that a holder *knows* it
//! still holds the lock: a process paused longer than its ttl (GC, swap, a
//! frozen VM) wakes up believing it holds a lock etcd has already given to
//! someone else. The session reports the loss as soon as it can (its local
//! deadline is conservative: it runs out before etcd's), but only the
//! resource can refuse the stale holder's writes — that is what the
//! [`Fence`] is for. See `docs/coord.md`.
//!
//! # Failure and shutdown
//!
//! Every request has a timeout ([`CoordBuilder::request_timeout`]): a dead
//! cluster gives [`CoordError::Unavailable`] or [`CoordError::Timeout`], not
//! a hang. Waiting operations end with [`CoordError::SessionLost`] when the
//! session is lost and [`CoordError::Closed`] when it is closed. A
//! [`Session`] implements [`weft_core::Drain`]: draining refuses new
//! acquisitions, cancels waiting ones, lets background releases finish,
//! revokes the lease (resigning every leadership and releasing every lock
//! and permit in one step) and reports what was held; it runs to the end
//! even if its future is dropped. A release etcd does not take (unlock
//! while etcd is unreachable) returns the error and is retried in the
//! background until it goes through or the session ends, so a lock is
//! never left held by nobody while its session lives.
//!
//! Names are escaped in keys (`/` and `%`), so `jobs/eu` and `jobs` are two
//! unrelated locks; see [`CoordBuilder::namespace`] for the key layout.
//!
//! # Feature flags
//!
//! - `metrics`: emits `weft_coord_*` metrics (see `docs/metrics.md`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod election;
mod error;
mod keepalive;
mod mutex;
mod queue;
mod semaphore;
mod session;

pub use client::{Coord, CoordBuilder};
pub use election::{Election, LeaderGuard, LeaderWatch, Role};
pub use error::{CoordError, Holder, LostReason};
pub use mutex::{Fence, FenceGate, Mutex, MutexGuard, StaleFence};
pub use semaphore::{Semaphore, SemaphorePermit};
pub use session::{Session, SessionBuilder, SessionState, SessionStats};

/// The `etcd-client` crate weft-coord is built on, for anything it does not wrap.
pub use etcd_client;

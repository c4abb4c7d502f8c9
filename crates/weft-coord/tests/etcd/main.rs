//! Integration tests against a real etcd: every test starts its own server
//! on free loopback ports in a temporary directory and kills it at the end.
//! Real time is used only where etcd's lease ttls demand it (ttl 2 s).

mod election;
mod mutex;
mod semaphore;
mod session;
mod support;

use std::time::Duration;

use weft_coord::{Coord, Session};

/// The ttl of sessions whose lease must actually expire in a test.
pub(crate) const TTL: Duration = Duration::from_secs(2);

/// A session that is not meant to expire: a long ttl, so a loaded machine
/// (every crate's tests at once on 2 cores) cannot lose it by accident.
pub(crate) async fn session(coord: &Coord, owner: &str) -> Session {
    with_ttl(coord, owner, Duration::from_secs(15)).await
}

/// A session that a test cuts off or kills: expires after [`TTL`].
pub(crate) async fn short_session(coord: &Coord, owner: &str) -> Session {
    with_ttl(coord, owner, TTL).await
}

async fn with_ttl(coord: &Coord, owner: &str, ttl: Duration) -> Session {
    coord
        .session_builder()
        .ttl(ttl)
        .owner(owner)
        .build()
        .await
        .expect("session")
}

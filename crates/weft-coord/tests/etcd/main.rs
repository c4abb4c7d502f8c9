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

/// The ttl used wherever a lease must actually expire.
pub(crate) const TTL: Duration = Duration::from_secs(2);

pub(crate) async fn session(coord: &Coord, owner: &str) -> Session {
    coord
        .session_builder()
        .ttl(TTL)
        .owner(owner)
        .build()
        .await
        .expect("session")
}

//! Broadcast one request to several tower services and gather the answers.

mod error;
pub mod future;
mod gather;
mod service;

pub use error::{BuildError, NoReplicaSucceeded, QuorumNotReached};
pub use gather::{All, FirstSuccess, Gather, Quorum, Strategy};
pub use service::{Broadcast, BroadcastStats};

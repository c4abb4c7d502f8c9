use std::fmt;

use weft_core::BoxError;

/// A broadcast that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No services were given; pass at least one.
    #[error("broadcast needs at least one service; pass one or more")]
    NoServices,
    /// The quorum asks for 0 answers (a quorum of nothing); pass at least 1
    /// (1 is "any one replica").
    #[error("quorum must be at least 1; pass 1 for \"any one replica\"")]
    ZeroQuorum,
    /// The quorum asks for more answers than there are services.
    #[error(
        "quorum of {needed} cannot be reached with {services} services; pass at most {services}"
    )]
    QuorumTooLarge {
        /// The quorum asked for.
        needed: usize,
        /// The services given.
        services: usize,
    },
}

/// Too many replicas failed for a [`Quorum`](super::Quorum) to be reached.
/// Decided as soon as the remaining replicas could no longer make up the
/// quorum; the last error is the [`source`](std::error::Error::source).
#[derive(thiserror::Error)]
#[error("quorum not reached: {succeeded} of {needed} needed answers succeeded, {failed} failed")]
#[non_exhaustive]
pub struct QuorumNotReached {
    /// Answers needed.
    pub needed: usize,
    /// Answers that succeeded before the quorum became impossible.
    pub succeeded: usize,
    /// Replicas that failed.
    pub failed: usize,
    /// The last failure.
    #[source]
    pub last: BoxError,
}

impl fmt::Debug for QuorumNotReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuorumNotReached")
            .field("needed", &self.needed)
            .field("succeeded", &self.succeeded)
            .field("failed", &self.failed)
            .field("last", &self.last)
            .finish()
    }
}

/// Returned by a gather that ran out of replicas without deciding. Weft's own
/// strategies always decide; a custom [`Gather`](super::Gather) that does not
/// gets this error.
#[derive(Debug, Clone, Copy, Default, thiserror::Error)]
#[error("no replica succeeded and the gather strategy decided nothing")]
pub struct NoReplicaSucceeded {
    _priv: (),
}

impl NoReplicaSucceeded {
    pub(crate) fn new() -> Self {
        NoReplicaSucceeded { _priv: () }
    }
}

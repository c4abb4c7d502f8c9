use std::time::Duration;

/// What a bounded queue does with an item that arrives when it is full.
///
/// This is the one admission policy of weft: the same enum configures a pool's
/// job queue, an executor's wait queue, a pipeline stage's input channel and
/// an actor's mailbox. Whatever the policy, an item that is not queued is
/// **never lost silently**: it is handed back to the caller inside the error
/// (or, for [`DropOldest`](Overflow::DropOldest), the evicted item is handed
/// back inside the `Ok`), and the component counts it.
///
/// | policy | the new item | an already queued item |
/// |---|---|---|
/// | [`Block`](Overflow::Block) | waits for room (backpressure) | kept |
/// | [`Reject`](Overflow::Reject) | handed back at once in a `Full` error | kept |
/// | [`DropOldest`](Overflow::DropOldest) | queued | the oldest is evicted and handed back |
/// | [`DropNewest`](Overflow::DropNewest) | handed back in a `Dropped` error and counted as dropped | kept |
/// | [`WaitTimeout`](Overflow::WaitTimeout) | waits up to the duration, then handed back in a `Timeout` error | kept |
///
/// The non-blocking `try_*` forms of every component treat `Block` and
/// `WaitTimeout` as `Reject`: they never wait.
///
/// ```
/// use std::time::Duration;
/// use weft_core::Overflow;
///
/// // The default is backpressure.
/// assert_eq!(Overflow::default(), Overflow::Block);
/// // A producer that must not wait longer than 50 ms for room:
/// let policy = Overflow::WaitTimeout(Duration::from_millis(50));
/// assert!(policy.waits());
/// assert!(!Overflow::Reject.waits());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait until there is room. The caller is slowed down to the rate the
    /// consumer can sustain; this is backpressure, and the default.
    #[default]
    Block,
    /// Refuse the new item at once and hand it back to the caller.
    Reject,
    /// Make room by evicting the oldest queued item, which is handed back to
    /// the caller (and counted as dropped); the new item is queued. For
    /// telemetry-like work where fresh data matters more than old data.
    DropOldest,
    /// Refuse the new item, hand it back and count it as dropped rather than
    /// rejected. For work that may be shed under load without alarming anyone.
    DropNewest,
    /// Wait up to the given duration for room, then hand the item back. A
    /// duration too long for the clock (`Duration::MAX`) waits as `Block`
    /// does.
    WaitTimeout(Duration),
}

impl Overflow {
    /// Whether the asynchronous form of a push may wait under this policy.
    pub fn waits(&self) -> bool {
        matches!(self, Overflow::Block | Overflow::WaitTimeout(_))
    }
}

/// A configuration error found when a bounded component is built.
///
/// ```
/// use weft_core::{Overflow, OverflowError, queue::Queue};
///
/// let err = Queue::<u32>::bounded(0, Overflow::Block).unwrap_err();
/// assert_eq!(err, OverflowError::ZeroCapacity);
/// assert!(err.to_string().contains("at least 1"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverflowError {
    /// A capacity of 0 was given to a queue that must hold items.
    #[error(
        "queue capacity must be at least 1 (got 0): pass the number of items that may wait, \
         or ask for an unbounded queue by name"
    )]
    ZeroCapacity,
    /// `WaitTimeout` was given a zero duration.
    #[error(
        "Overflow::WaitTimeout needs a non-zero duration: use Overflow::Reject to refuse at once"
    )]
    ZeroTimeout,
    /// An unbounded queue was asked to drop items when full; it is never full.
    #[error("an unbounded queue is never full: use Overflow::Block with an unbounded queue")]
    UnboundedWithDrop,
}

impl OverflowError {
    /// Checks a capacity and policy pair, as every bounded component does when
    /// it is built.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft_core::{Overflow, OverflowError};
    ///
    /// assert!(OverflowError::check(8, Overflow::Block).is_ok());
    /// assert_eq!(
    ///     OverflowError::check(8, Overflow::WaitTimeout(Duration::ZERO)),
    ///     Err(OverflowError::ZeroTimeout)
    /// );
    /// ```
    pub fn check(capacity: usize, overflow: Overflow) -> Result<(), OverflowError> {
        if capacity == 0 {
            return Err(OverflowError::ZeroCapacity);
        }
        if overflow == Overflow::WaitTimeout(Duration::ZERO) {
            return Err(OverflowError::ZeroTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_backpressure() {
        assert_eq!(Overflow::default(), Overflow::Block);
    }

    #[test]
    fn only_block_and_wait_timeout_wait() {
        assert!(Overflow::Block.waits());
        assert!(Overflow::WaitTimeout(Duration::from_millis(1)).waits());
        assert!(!Overflow::Reject.waits());
        assert!(!Overflow::DropOldest.waits());
        assert!(!Overflow::DropNewest.waits());
    }

    #[test]
    fn check_refuses_zero_capacity_and_zero_timeout() {
        assert_eq!(
            OverflowError::check(0, Overflow::Reject),
            Err(OverflowError::ZeroCapacity)
        );
        assert_eq!(
            OverflowError::check(1, Overflow::WaitTimeout(Duration::ZERO)),
            Err(OverflowError::ZeroTimeout)
        );
        assert_eq!(OverflowError::check(1, Overflow::DropOldest), Ok(()));
    }
}

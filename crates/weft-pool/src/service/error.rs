use std::fmt;

/// The pool behind a [`Pool`](super::Pool) service is shut down: the request
/// was not run. Found in the boxed error with `downcast_ref::<Closed>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closed(());

impl Closed {
    pub(crate) fn new() -> Self {
        Closed(())
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pool is shut down")
    }
}

impl std::error::Error for Closed {}

/// The pool's queue had no room for a call although `poll_ready` reserved
/// it: something other than the services over the pool (a direct
/// `submit`, or another pool user) filled the queue. The request was not
/// run. Found in the boxed error with `downcast_ref::<Full>()`.
///
/// The services over one pool share its reservations, so this only happens
/// when the pool is not dedicated to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Full(());

impl Full {
    pub(crate) fn new() -> Self {
        Full(())
    }
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "pool queue is full: another submitter took the slot reserved in poll_ready; \
             dedicate the pool to its services, or retry",
        )
    }
}

impl std::error::Error for Full {}

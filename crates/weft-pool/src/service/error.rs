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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

/// What happened to the work a component had accepted when it was shut down.
///
/// Every weft component returns one from [`Drain::drain`] (and from its own
/// `shutdown`). The counts obey one invariant, tested in every crate:
///
/// `accepted = completed + failed + cancelled + aborted + returned`
///
/// where `failed` includes panicked and timed-out work, `cancelled` is work
/// that stopped cooperatively when asked, `aborted` is work that was cut off,
/// and `returned` is work handed back to the caller unstarted. Items refused
/// because admission was already closed are counted in
/// `rejected_after_close`; they were never accepted.
///
/// ```
/// use weft_core::ShutdownReport;
///
/// let mut r = ShutdownReport::new("ingest pool");
/// r.accepted = 10;
/// r.completed = 7;
/// r.failed = 1;
/// r.returned = 2;
/// assert!(r.is_balanced());
/// assert!(r.is_clean()); // nothing aborted, nothing left unfinished
/// r.aborted = 1;
/// r.accepted += 1;
/// r.unfinished.push("job 41".into());
/// assert!(r.is_balanced());
/// assert!(!r.is_clean());
/// println!("{r}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The component's name.
    pub name: String,
    /// Items (jobs, messages, requests) the component accepted over its life.
    pub accepted: u64,
    /// Items that finished successfully.
    pub completed: u64,
    /// Items that finished with an error, a panic or a timeout.
    pub failed: u64,
    /// Items that stopped because they were asked to (cancellation token).
    pub cancelled: u64,
    /// Items that were cut off (task aborted) at the deadline.
    pub aborted: u64,
    /// Items handed back to their caller without being run.
    pub returned: u64,
    /// Items refused because admission was closed (never accepted).
    pub rejected_after_close: u64,
    /// Identities of the items that did not finish (aborted or still running).
    pub unfinished: Vec<String>,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// An empty report for the named component.
    pub fn new(name: impl Into<String>) -> Self {
        ShutdownReport {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Whether every accepted item is accounted for:
    /// `accepted = completed + failed + cancelled + aborted + returned`.
    pub fn is_balanced(&self) -> bool {
        // Checked: a component's counting bug (a huge field) must read as
        // unbalanced, not overflow (a panic in debug, a wrap in release).
        [
            self.completed,
            self.failed,
            self.cancelled,
            self.aborted,
            self.returned,
        ]
        .iter()
        .try_fold(0u64, |sum, &n| sum.checked_add(n))
            == Some(self.accepted)
    }

    /// Whether the shutdown was clean: balanced, nothing aborted, nothing
    /// left unfinished.
    pub fn is_clean(&self) -> bool {
        self.is_balanced() && self.aborted == 0 && self.unfinished.is_empty()
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: accepted {}, completed {}, failed {}, cancelled {}, aborted {}, returned {}, \
             rejected after close {} ({:.3}s)",
            self.name,
            self.accepted,
            self.completed,
            self.failed,
            self.cancelled,
            self.aborted,
            self.returned,
            self.rejected_after_close,
            self.elapsed.as_secs_f64()
        )?;
        if !self.is_balanced() {
            write!(f, " [UNBALANCED]")?;
        }
        if !self.unfinished.is_empty() {
            write!(f, "; unfinished: {}", self.unfinished.join(", "))?;
        }
        Ok(())
    }
}

/// A component that can be shut down: stop admission, finish (or hand back)
/// what it holds before `deadline`, and report.
///
/// This is how weft-shutdown drains a pool, an actor system or a pipeline it
/// has never heard of. Implementations close admission first, drain queued and
/// in-flight work until the deadline, then cancel and abort what is left, and
/// must return by `deadline` (plus the time it takes to abort). `drain` may be
/// called more than once; later calls report the same totals.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use futures::future::BoxFuture;
/// use tokio::time::Instant;
/// use weft_core::{Drain, ShutdownReport};
///
/// struct Cache { open: AtomicBool }
///
/// impl Drain for Cache {
///     fn drain(&self, _deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
///         Box::pin(async move {
///             self.open.store(false, Ordering::SeqCst);
///             ShutdownReport::new("cache")
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = Cache { open: AtomicBool::new(true) };
/// let report = cache.drain(Instant::now()).await;
/// assert!(report.is_clean());
/// assert!(!cache.open.load(Ordering::SeqCst));
/// # }
/// ```
pub trait Drain: Send + Sync {
    /// Stops admission and drains until `deadline`; returns what happened.
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport>;
}

impl<D: Drain + ?Sized> Drain for Arc<D> {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        (**self).drain(deadline)
    }
}

impl<D: Drain + ?Sized> Drain for Box<D> {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        (**self).drain(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_and_display() {
        let mut r = ShutdownReport::new("x");
        assert!(r.is_clean());
        r.accepted = 3;
        assert!(!r.is_balanced());
        assert!(r.to_string().contains("[UNBALANCED]"));
        r.completed = 1;
        r.cancelled = 1;
        r.aborted = 1;
        r.unfinished.push("task a".into());
        assert!(r.is_balanced());
        assert!(!r.is_clean());
        let s = r.to_string();
        assert!(s.starts_with("x: accepted 3, completed 1"), "{s}");
        assert!(s.ends_with("unfinished: task a"), "{s}");
    }

    struct Fixed;
    impl Drain for Fixed {
        fn drain(&self, _deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
            Box::pin(async { ShutdownReport::new("fixed") })
        }
    }

    #[tokio::test]
    async fn drain_through_arc_and_box() {
        let a: Arc<dyn Drain> = Arc::new(Fixed);
        assert_eq!(a.drain(Instant::now()).await.name, "fixed");
        let b: Box<dyn Drain> = Box::new(Fixed);
        assert_eq!(b.drain(Instant::now()).await.name, "fixed");
    }
}

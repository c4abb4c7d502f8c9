use std::sync::Arc;

use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::ConcurrencyLimit;
use super::service::check_max;

/// Applies a [`ConcurrencyLimit`]; every service this layer builds shares
/// **one** limit (unlike tower's `ConcurrencyLimitLayer`, which gives each
/// service its own).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    max: usize,
    sem: Arc<Semaphore>,
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight across every service built from this
    /// layer and all their clones.
    ///
    /// # Panics
    ///
    /// If `max` is 0 (a limit that would never be ready), as tokio's
    /// `mpsc::channel(0)` does; pass how many requests may be in flight at
    /// once. Also if `max` is above tokio's `Semaphore::MAX_PERMITS`.
    #[track_caller]
    pub fn new(max: usize) -> Self {
        ConcurrencyLimitLayer {
            max,
            sem: Arc::new(Semaphore::new(check_max(max))),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::with_semaphore(inner, self.max, self.sem.clone())
    }
}

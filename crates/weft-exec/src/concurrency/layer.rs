use std::sync::Arc;

use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::ConcurrencyLimit;

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
    pub fn new(max: usize) -> Self {
        ConcurrencyLimitLayer {
            max,
            sem: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::with_semaphore(inner, self.max, self.sem.clone())
    }
}

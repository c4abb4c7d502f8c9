use std::sync::Arc;

use tower_layer::Layer;

use super::service::Limiter;
use super::{AdaptiveLimit, Algorithm};

/// Applies [`AdaptiveLimit`]; every service built from one layer shares one
/// limit.
pub struct AdaptiveLimitLayer<A> {
    shared: Arc<Limiter<A>>,
}

impl<A: Algorithm> AdaptiveLimitLayer<A> {
    /// An adaptive limit driven by `algorithm`.
    ///
    /// # Panics
    ///
    /// If the algorithm's initial limit is 0, or its settings contradict
    /// each other (see [`Algorithm::initial_limit`]).
    pub fn new(algorithm: A) -> Self {
        Self::named("adaptive_limit", algorithm)
    }

    /// An adaptive limit with a name for tracing and metrics.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn named(name: impl Into<String>, algorithm: A) -> Self {
        AdaptiveLimitLayer {
            shared: Arc::new(Limiter::new(name.into(), algorithm)),
        }
    }

    /// Sets the least number of samples aggregated before the algorithm
    /// moves the limit (default 10; a window also lasts at least one round
    /// trip). Must be called before the layer is cloned or used.
    ///
    /// # Panics
    /// If the layer was already cloned or used to build a service.
    pub fn window_samples(mut self, n: u32) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("window_samples must be set before the layer is cloned or used")
            .window_samples = n.max(1);
        self
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }
}

impl<A> Clone for AdaptiveLimitLayer<A> {
    fn clone(&self) -> Self {
        AdaptiveLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<A> std::fmt::Debug for AdaptiveLimitLayer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, A: Algorithm> Layer<S> for AdaptiveLimitLayer<A> {
    type Service = AdaptiveLimit<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit::with_shared(inner, self.shared.clone())
    }
}

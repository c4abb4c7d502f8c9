use std::sync::Arc;

use tower_layer::Layer;

use super::LoadShed;
use super::service::Shared;

/// Applies [`LoadShed`]; services built from one layer share one shed count.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

impl LoadShedLayer {
    /// A load-shedding layer named `"load_shed"` (for tracing and metrics).
    pub fn new() -> Self {
        Self::named("load_shed")
    }

    /// A load-shedding layer with a name for tracing and metrics.
    pub fn named(name: impl Into<String>) -> Self {
        LoadShedLayer {
            shared: Arc::new(Shared::new(name.into())),
        }
    }
}

impl Default for LoadShedLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed::with_shared(inner, self.shared.clone())
    }
}

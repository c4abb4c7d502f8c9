use std::fmt;

use tower_layer::Layer;
use weft_core::DefaultClassifier;

use super::circuit::CircuitBreaker;
use super::service::Breaker;

/// Wraps services in a [`Breaker`] that shares one [`CircuitBreaker`].
///
/// ```
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// use weft_breaker::{BreakerLayer, CircuitBreaker, Open};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let breaker = CircuitBreaker::builder().consecutive_failures(1).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(BreakerLayer::new(breaker.clone()))
///     .service(service_fn(|fail: bool| async move {
///         if fail { Err("down") } else { Ok("up") }
///     }));
/// assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "up");
/// assert!(svc.ready().await.unwrap().call(true).await.is_err());
/// // Now open: poll_ready rejects before the inner service is touched.
/// let err = svc.ready().await.unwrap_err();
/// assert!(err.downcast_ref::<Open>().unwrap().retry_after().is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct BreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker,
    classify: C,
}

impl BreakerLayer {
    /// A layer whose services share `breaker` and count every `Err` as a
    /// failure.
    pub fn new(breaker: CircuitBreaker) -> Self {
        BreakerLayer {
            breaker,
            classify: DefaultClassifier,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Classifies results with `classify` instead (it sees the inner
    /// service's `Result<Response, Error>` before the error is boxed).
    pub fn classify<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::with_classifier(inner, self.breaker.clone(), self.classify.clone())
    }
}

impl<C> fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

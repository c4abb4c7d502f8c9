/// The service is shutting down and refuses new requests (the HTTP 503 case).
///
/// Returned, boxed into [`weft_core::BoxError`], from `poll_ready` of a
/// [`Shutdown`](super::Shutdown) service once the shutdown was triggered or
/// the layer was closed; find it with `downcast_ref::<ShuttingDown>()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error("service is shutting down; retry against another instance")]
pub struct ShuttingDown;

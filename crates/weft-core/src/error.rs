/// A type-erased error, as used by tower middleware.
///
/// weft's own errors are small types that are boxed into a `BoxError` when
/// they pass through a tower stack; find them again with
/// [`downcast_ref`](std::error::Error#method.downcast_ref):
///
/// ```
/// use weft_core::{BoxError, Panicked};
///
/// let err: BoxError = Box::new(Panicked::new("boom"));
/// assert!(err.downcast_ref::<Panicked>().is_some());
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

//! A concurrency limit whose state is shared by every clone and every
//! service built from one layer.

pub(crate) mod future;
mod layer;
mod service;

pub use layer::ConcurrencyLimitLayer;
pub use service::{ConcurrencyLimit, ConcurrencyStats};

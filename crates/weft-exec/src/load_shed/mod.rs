//! Fail fast with [`Overloaded`](crate::Overloaded) when the inner service is
//! not ready, instead of queueing.

pub(crate) mod future;
mod layer;
mod service;

pub use layer::LoadShedLayer;
pub use service::{LoadShed, LoadShedStats};

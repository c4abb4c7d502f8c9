//! tower: [`PoolLayer`] and [`Pool`], which run an inner service's calls on a
//! [`WorkerPool`](crate::WorkerPool)'s workers.

mod error;
pub mod future;
mod layer;
#[allow(clippy::module_inception)]
mod service;

pub use error::{Closed, Full};
pub use layer::PoolLayer;
pub use service::Pool;

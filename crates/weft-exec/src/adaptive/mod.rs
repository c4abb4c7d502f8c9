//! An adaptive concurrency limit: the limit follows the downstream's latency
//! and errors (AIMD, Vegas), as in Netflix's concurrency-limits.

mod aimd;
mod algorithm;
pub(crate) mod future;
mod layer;
mod service;
mod slots;
mod vegas;

pub use aimd::Aimd;
pub use algorithm::{Algorithm, Sample};
pub use layer::AdaptiveLimitLayer;
pub use service::{AdaptiveLimit, AdaptiveStats};
pub use vegas::Vegas;

//! Hedged requests: a second attempt after a delay, first success wins.

mod error;
pub mod future;
mod layer;
mod policy;
mod service;

pub use error::ConfigError;
pub use layer::{HedgeLayer, HedgeLayerBuilder};
pub use service::{Hedge, HedgeStats};

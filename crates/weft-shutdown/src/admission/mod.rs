//! Refusing new requests during shutdown and draining in-flight ones, as a tower layer.

mod error;
pub mod future;
mod layer;
mod service;
mod state;

pub use error::ShuttingDown;
pub use layer::{ShutdownLayer, Stats};
pub use service::Shutdown;

//! The circuit breaker: plain (`CircuitBreaker::call`) and tower (`BreakerLayer`).

mod circuit;
mod config;
pub(crate) mod core;
mod error;
pub mod future;
mod layer;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod model;
mod service;
mod state;
mod window;

pub use circuit::{CircuitBreaker, OwnedPermit, Permit, Stats};
pub use config::{Builder, SlidingWindow};
pub use error::{BuildError, CallError, Open};
pub use layer::BreakerLayer;
pub use service::Breaker;
pub use state::{Reason, State, Transition};

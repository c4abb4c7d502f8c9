//! The side-by-side cases, one module per pattern.

pub mod actor;
pub mod coord;
pub mod pipeline;
pub mod pool;
pub mod reference;

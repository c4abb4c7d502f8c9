//! The side-by-side cases, one module per pattern.

pub mod actor;
pub mod pool;
pub mod reference;

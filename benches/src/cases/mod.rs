//! The side-by-side cases, one module per pattern.

pub mod actor;
pub mod breaker;
pub mod coord;
pub mod exec;
pub mod fanout;
pub mod pipeline;
pub mod pool;
pub mod reference;

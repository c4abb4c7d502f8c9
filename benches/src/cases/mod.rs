//! The side-by-side cases, one module per pattern.

pub mod reference;

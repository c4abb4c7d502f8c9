//! Retry policy: backoff with jitter, max attempts, a shared budget, a deadline.

mod backoff;
mod budget;
mod error;
mod policy;
#[cfg(feature = "tower-retry")]
mod tower;

pub use backoff::{Backoff, Jitter};
pub use budget::{BudgetStats, RetryBudget};
pub use error::RetryError;
pub use policy::RetryPolicy;

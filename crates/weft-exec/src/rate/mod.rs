//! Rate limits built on `governor`: direct (one budget) and keyed (a budget
//! per key, with idle keys evicted and a cap on keys).

mod clock;
mod direct;
mod keyed;

pub use clock::TokioClock;
pub use direct::{RateLimit, RateLimitLayer, RateLimitStats};
pub use keyed::{
    KeyedFuture, KeyedRateLimit, KeyedRateLimitLayer, KeyedRateLimitStats, KeyedRateLimiter,
};

/// governor's quota type, re-exported: `Quota::per_second(nonzero!(100u32))`.
pub use governor::Quota;

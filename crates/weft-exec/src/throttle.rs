//! Keeps a flood of one warning from becoming a flood of log lines.
//!
//! Under overload a limit may refuse thousands of calls a second; a `warn!`
//! for each would add I/O to the overload and bury everything else in the
//! log. [`Throttle`] lets one line a second through and counts the rest,
//! so the next line says how many it stands for (every refusal is still
//! counted in `stats()` and the metrics).

/// weft-core's [`LogThrottle`](weft_core::LogThrottle), under the name
/// this crate's fields use.
pub(crate) use weft_core::LogThrottle as Throttle;

/// `tracing::warn!` (with `more_since_last_line`) when `$throttle` lets
/// this event through, `tracing::debug!` otherwise; same fields and message.
macro_rules! warn_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        match $throttle.admit() {
            Some(more) => tracing::warn!(more_since_last_line = more, $($arg)+),
            None => tracing::debug!($($arg)+),
        }
    };
}
pub(crate) use warn_throttled;

use std::fmt;

use crate::breaker::Open;

/// Why a retried call gave up.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The last attempt's error (it was not retryable, or the attempts, the
    /// budget or the deadline ran out).
    #[error("call failed after {attempts} attempt(s): {error}")]
    Inner {
        /// The last attempt's error.
        error: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The circuit breaker rejected the attempt.
    #[error("call rejected after {attempts} attempt(s): {open}")]
    Open {
        /// The rejection.
        open: Open,
        /// Attempts made, the rejected one included.
        attempts: u32,
    },
    /// The deadline passed while an attempt was running; it was cancelled.
    #[error("deadline exceeded during attempt {attempts}")]
    DeadlineExceeded {
        /// Attempts made, the cancelled one included.
        attempts: u32,
    },
}

impl<E> RetryError<E> {
    /// The last attempt's own error, if it ran to completion.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RetryError::Inner { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Inner { attempts, .. }
            | RetryError::Open { attempts, .. }
            | RetryError::DeadlineExceeded { attempts } => *attempts,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::Inner { error, attempts } => f
                .debug_struct("Inner")
                .field("error", error)
                .field("attempts", attempts)
                .finish(),
            RetryError::Open { open, attempts } => f
                .debug_struct("Open")
                .field("open", open)
                .field("attempts", attempts)
                .finish(),
            RetryError::DeadlineExceeded { attempts } => f
                .debug_struct("DeadlineExceeded")
                .field("attempts", attempts)
                .finish(),
        }
    }
}

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};
use weft_core::{Classify, DefaultClassifier, Outcome};

use super::backoff::Backoff;
use super::budget::RetryBudget;
use super::error::RetryError;
use crate::breaker::{CallError, CircuitBreaker};

/// When and how often to retry: exponential backoff with jitter, a maximum
/// number of attempts, a retry budget shared across clones, a per-request
/// deadline that retries never outlive, and the same classifier as the
/// breaker (only [`Outcome::Failure`] is retried). A breaker's
/// [`Open`](crate::Open) rejection is not retried unless
/// [`retry_on_open`](Self::retry_on_open) says so.
///
/// Use it from plain async code with [`call`](Self::call) or
/// [`call_through`](Self::call_through), or (feature `tower-retry`) as a
/// `tower::retry::Policy`.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use weft_breaker::retry::{Backoff, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let policy = RetryPolicy::new()
///     .max_attempts(4)
///     .backoff(Backoff::exponential(Duration::from_millis(50)))
///     .deadline(Duration::from_secs(2));
/// let tries = AtomicU32::new(0);
/// let r = policy
///     .call(|| async {
///         let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
///         if n < 3 { Err("flaky") } else { Ok(n) }
///     })
///     .await;
/// assert_eq!(r.unwrap(), 3);
/// # }
/// ```
#[derive(Clone)]
pub struct RetryPolicy<C = DefaultClassifier> {
    pub(crate) name: Cow<'static, str>,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) classify: C,
    pub(crate) retry_on_open: bool,
    /// Per-request state (used by the tower policy, which tower clones per
    /// request).
    pub(crate) request: RequestState,
}

#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "tower-retry"), allow(dead_code))]
pub(crate) struct RequestState {
    pub(crate) attempts: u32,
    pub(crate) started: Option<Instant>,
    pub(crate) previous: Duration,
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Attempts,
    Deadline,
    Budget,
}

impl Stop {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stop::Attempts => "attempts_exhausted",
            Stop::Deadline => "deadline",
            Stop::Budget => "budget_exhausted",
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new()
    }
}

impl RetryPolicy {
    /// A policy with 3 attempts, backoff from 100 ms (doubling, full jitter,
    /// capped at 10 s), a budget of 20% of calls plus 10 retries, and no
    /// deadline.
    pub fn new() -> Self {
        RetryPolicy {
            name: Cow::Borrowed("retry"),
            backoff: Backoff::exponential(Duration::from_millis(100)),
            max_attempts: 3,
            budget: Some(RetryBudget::new(0.2, 10)),
            deadline: None,
            classify: DefaultClassifier,
            retry_on_open: false,
            request: RequestState::default(),
        }
    }
}

impl<C> RetryPolicy<C> {
    /// The name used in tracing events and metric labels. Default `"retry"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Attempts in all, the first included (at least 1). Default 3.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The budget, shared with every clone of this policy (and with any
    /// other policy given a clone of it). Default 20% of calls plus 10.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Retries without a budget (only max attempts and the deadline limit
    /// them). Beware of retry storms.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The most time one request may take, retries included: a retry whose
    /// backoff would end past it is not made, and with
    /// [`call`](Self::call) an attempt still running at the deadline is
    /// cancelled. Default: none.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// Whether a breaker's `Open` rejection is retried (after the backoff or
    /// the breaker's `retry_after`, whichever is longer). Default `false`:
    /// an open breaker is an answer, not a failure.
    pub fn retry_on_open(mut self, yes: bool) -> Self {
        self.retry_on_open = yes;
        self
    }

    /// Classifies results with `classify`: only [`Outcome::Failure`] is
    /// retried.
    pub fn classify<C2>(self, classify: C2) -> RetryPolicy<C2> {
        RetryPolicy {
            name: self.name,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            budget: self.budget,
            deadline: self.deadline,
            classify,
            retry_on_open: self.retry_on_open,
            request: self.request,
        }
    }

    /// The shared budget, if any.
    pub fn retry_budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    pub(crate) fn start(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// Decides whether attempt `made + 1` happens and after which delay.
    pub(crate) fn plan(
        &self,
        made: u32,
        previous: &mut Duration,
        started: Instant,
        at_least: Duration,
    ) -> Result<Duration, Stop> {
        let stop = |s: Stop| {
            tracing::debug!(policy = %self.name, attempts = made, reason = s.as_str(), "not retrying");
            #[cfg(feature = "metrics")]
            crate::metrics::retry_attempt(&self.name, s.as_str());
            Err(s)
        };
        if made >= self.max_attempts {
            return stop(Stop::Attempts);
        }
        let delay = self.backoff.next(made, *previous).max(at_least);
        if let Some(d) = self.deadline {
            // A delay too long to add to the clock ends past any deadline; a
            // deadline too far to add to it is never reached.
            let past = match (Instant::now().checked_add(delay), started.checked_add(d)) {
                (Some(end), Some(deadline)) => end >= deadline,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if past {
                return stop(Stop::Deadline);
            }
        }
        if let Some(b) = &self.budget {
            if !b.try_withdraw() {
                tracing::warn!(policy = %self.name, "retry budget exhausted");
                return stop(Stop::Budget);
            }
        }
        *previous = delay;
        tracing::debug!(policy = %self.name, attempt = made + 1, ?delay, "retrying");
        #[cfg(feature = "metrics")]
        crate::metrics::retry_attempt(&self.name, "retried");
        Ok(delay)
    }

    /// Runs `make()` until it succeeds, its result is not a failure, or the
    /// policy says stop; returns the last result.
    pub async fn call<F, Fut, T, E>(&self, mut make: F) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        let started = Instant::now();
        // A deadline too far to add to the clock is never reached.
        let deadline = self.deadline.and_then(|d| started.checked_add(d));
        self.start();
        let mut previous = Duration::ZERO;
        let mut made = 0;
        loop {
            made += 1;
            let result = match deadline {
                Some(at) => match timeout_at(at, make()).await {
                    Ok(r) => r,
                    Err(_) => return Err(RetryError::DeadlineExceeded { attempts: made }),
                },
                None => make().await,
            };
            if self.classify.classify(&result) != Outcome::Failure {
                return result.map_err(|e| RetryError::Inner {
                    error: e,
                    attempts: made,
                });
            }
            match self.plan(made, &mut previous, started, Duration::ZERO) {
                Ok(delay) => sleep(delay).await,
                Err(_) => {
                    return result.map_err(|e| RetryError::Inner {
                        error: e,
                        attempts: made,
                    });
                }
            }
        }
    }

    /// Like [`call`](Self::call), with every attempt going through `breaker`
    /// (classified by this policy's classifier for both). A rejection by the
    /// breaker ends the retries with [`RetryError::Open`] unless
    /// [`retry_on_open`](Self::retry_on_open) is set.
    pub async fn call_through<F, Fut, T, E>(
        &self,
        breaker: &CircuitBreaker,
        mut make: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        let started = Instant::now();
        let deadline = self.deadline.and_then(|d| started.checked_add(d));
        self.start();
        let mut previous = Duration::ZERO;
        let mut made = 0;
        loop {
            made += 1;
            let attempt = breaker.call_with(&self.classify, make());
            let result = match deadline {
                Some(at) => match timeout_at(at, attempt).await {
                    Ok(r) => r,
                    Err(_) => return Err(RetryError::DeadlineExceeded { attempts: made }),
                },
                None => attempt.await,
            };
            match result {
                Ok(v) => return Ok(v),
                Err(CallError::Open(open)) => {
                    if !self.retry_on_open {
                        return Err(RetryError::Open {
                            open,
                            attempts: made,
                        });
                    }
                    let wait = open.retry_after().unwrap_or_default();
                    match self.plan(made, &mut previous, started, wait) {
                        Ok(delay) => sleep(delay).await,
                        Err(_) => {
                            return Err(RetryError::Open {
                                open,
                                attempts: made,
                            });
                        }
                    }
                }
                Err(CallError::Inner(e)) => {
                    let r = Err(e);
                    let retry = self.classify.classify(&r) == Outcome::Failure
                        && self
                            .plan(made, &mut previous, started, Duration::ZERO)
                            .map(|d| previous = d)
                            .is_ok();
                    if !retry {
                        return r.map_err(|e| RetryError::Inner {
                            error: e,
                            attempts: made,
                        });
                    }
                    sleep(previous).await;
                }
            }
        }
    }
}

impl<C> fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("budget", &self.budget)
            .field("deadline", &self.deadline)
            .field("retry_on_open", &self.retry_on_open)
            .finish_non_exhaustive()
    }
}

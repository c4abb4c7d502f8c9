//! Metric handles, registered once per component so that the hot path only
//! increments them (see docs/metrics.md for the names).

use metrics::{Counter, Gauge, counter, gauge};
use weft_core::Outcome;

use crate::breaker::{State, Transition};

pub(crate) struct BreakerMetrics {
    name: String,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    pub(crate) cancelled: Counter,
    slow: Counter,
    pub(crate) rejected: Counter,
    state: Gauge,
}

impl BreakerMetrics {
    pub(crate) fn new(name: &str) -> Self {
        let name = name.to_owned();
        let calls = |outcome: &'static str| counter!("weft_breaker_calls_total", "name" => name.clone(), "outcome" => outcome);
        let state = gauge!("weft_breaker_state", "name" => name.clone());
        state.set(0.0);
        BreakerMetrics {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            cancelled: calls("cancelled"),
            slow: counter!("weft_breaker_slow_calls_total", "name" => name.clone()),
            rejected: counter!("weft_breaker_rejected_total", "name" => name.clone()),
            state,
            name,
        }
    }

    pub(crate) fn outcome(&self, outcome: Outcome, slow: bool) {
        match outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Failure => self.failure.increment(1),
            Outcome::Ignored => self.ignored.increment(1),
        }
        if slow {
            self.slow.increment(1);
        }
    }

    pub(crate) fn transition(&self, t: &Transition, now: State) {
        counter!(
            "weft_breaker_transitions_total",
            "name" => self.name.clone(),
            "from" => t.from.as_str(),
            "to" => t.to.as_str()
        )
        .increment(1);
        self.state.set(now.as_index() as f64);
    }
}

/// Retry metrics.
pub(crate) fn retry_attempt(name: &str, outcome: &'static str) {
    counter!("weft_breaker_retries_total", "name" => name.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Keyed-breaker metrics.
pub(crate) fn keyed(name: &str, keys: usize, evicted: u64) {
    gauge!("weft_breaker_keys", "name" => name.to_owned()).set(keys as f64);
    if evicted > 0 {
        counter!("weft_breaker_keys_evicted_total", "name" => name.to_owned()).increment(evicted);
    }
}

/// A keyed breaker evicted, at the cap, a key whose breaker was open,
/// half-open or forced open.
pub(crate) fn keyed_evicted_open(name: &str) {
    counter!("weft_breaker_keys_evicted_open_total", "name" => name.to_owned()).increment(1);
}

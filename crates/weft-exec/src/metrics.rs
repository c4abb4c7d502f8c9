//! Emission to the `metrics` facade (no-ops without the `metrics` feature).
#![allow(unused_variables)]

#[inline]
pub(crate) fn task_ended(name: &str, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("weft_exec_tasks_total", "name" => name.to_owned(), "outcome" => outcome)
        .increment(1);
}

#[inline]
pub(crate) fn spawn_refused(name: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("weft_exec_spawn_refused_total", "name" => name.to_owned()).increment(1);
}

#[inline]
pub(crate) fn shed(name: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("weft_exec_shed_total", "name" => name.to_owned()).increment(1);
}

#[inline]
pub(crate) fn rate_limited(name: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("weft_exec_rate_limited_total", "name" => name.to_owned()).increment(1);
}

#[inline]
pub(crate) fn limit(name: &str, limit: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("weft_exec_limit", "name" => name.to_owned()).set(limit as f64);
}

#[inline]
pub(crate) fn degradation_level(name: &str, level: u8) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("weft_exec_degradation_level", "name" => name.to_owned()).set(level as f64);
}

//! Emission to the `metrics` facade (no-ops without the `metrics` feature).
//!
//! Each metric's key (name and labels) is built once, when its component is
//! built (see [`weft_core::Metric`]): no allocation per event, and a
//! recorder installed after the component was built still gets every event.
#![allow(unused_variables)]

/// One counter or gauge of one component, labelled `name` (and `outcome`):
/// a [`weft_core::Metric`] with this crate's `metrics` feature, nothing
/// without it.
#[derive(Debug, Clone)]
pub(crate) struct Metric {
    #[cfg(feature = "metrics")]
    inner: weft_core::Metric,
}

impl Metric {
    pub(crate) fn new(metric: &'static str, name: &str) -> Self {
        Metric {
            #[cfg(feature = "metrics")]
            inner: weft_core::Metric::new(metric, &[("name", name)]),
        }
    }

    pub(crate) fn with_outcome(metric: &'static str, name: &str, outcome: &'static str) -> Self {
        Metric {
            #[cfg(feature = "metrics")]
            inner: weft_core::Metric::new(metric, &[("name", name), ("outcome", outcome)]),
        }
    }

    /// Adds one to the counter.
    #[inline]
    pub(crate) fn incr(&self) {
        #[cfg(feature = "metrics")]
        self.inner.increment(1);
    }

    /// Sets the gauge.
    #[inline]
    pub(crate) fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        self.inner.set(value);
    }
}

/// The executor's metrics: `weft_exec_tasks_total{name, outcome}` per
/// outcome and `weft_exec_spawn_refused_total{name}`.
#[derive(Debug)]
pub(crate) struct ExecutorMetrics {
    pub(crate) completed: Metric,
    pub(crate) panicked: Metric,
    pub(crate) timed_out: Metric,
    pub(crate) queue_timed_out: Metric,
    pub(crate) cancelled: Metric,
    pub(crate) aborted: Metric,
    pub(crate) evicted: Metric,
    pub(crate) not_started: Metric,
    pub(crate) spawn_refused: Metric,
}

impl ExecutorMetrics {
    pub(crate) fn new(name: &str) -> Self {
        let task = |outcome| Metric::with_outcome("weft_exec_tasks_total", name, outcome);
        ExecutorMetrics {
            completed: task("completed"),
            panicked: task("panicked"),
            timed_out: task("timed_out"),
            queue_timed_out: task("queue_timed_out"),
            cancelled: task("cancelled"),
            aborted: task("aborted"),
            evicted: task("evicted"),
            not_started: task("not_started"),
            spawn_refused: Metric::new("weft_exec_spawn_refused_total", name),
        }
    }
}

/// `weft_exec_shed_total{name}`.
pub(crate) fn shed(name: &str) -> Metric {
    Metric::new("weft_exec_shed_total", name)
}

/// `weft_exec_rate_limited_total{name}`.
pub(crate) fn rate_limited(name: &str) -> Metric {
    Metric::new("weft_exec_rate_limited_total", name)
}

/// `weft_exec_limit{name}`.
pub(crate) fn limit(name: &str) -> Metric {
    Metric::new("weft_exec_limit", name)
}

/// `weft_exec_degradation_level{name}`.
pub(crate) fn degradation_level(name: &str) -> Metric {
    Metric::new("weft_exec_degradation_level", name)
}

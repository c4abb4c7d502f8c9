//! A metric whose key is built once, for emission to the `metrics` facade
//! (the `metrics` feature; without it every method is an empty inline).
//!
//! The `metrics::counter!` macro with a runtime label (a component's name)
//! allocates the label, its vector and the key, and hashes the key, on every
//! event, even when no recorder is installed. A [`Metric`] builds its key
//! (name and labels, hash cached) once, when its component is built, and
//! each event hands that key to the *current* recorder: no allocation per
//! event, and a recorder installed after the component was built still gets
//! every event (a cached `metrics::Counter` handle would keep talking to the
//! recorder that was current when it was made).
//!
//! Each weft crate wraps these in its own `metrics` feature, so that turning
//! the feature on for one crate does not make another emit.

#[cfg(feature = "metrics")]
static META: metrics::Metadata<'static> =
    metrics::Metadata::new("weft", metrics::Level::INFO, Some(module_path!()));

/// One counter, gauge or histogram of one component: a metric name and its
/// labels, fixed when the component is built.
///
/// ```
/// use weft_core::Metric;
///
/// let jobs = Metric::new("weft_pool_jobs_total", &[("name", "images"), ("outcome", "succeeded")]);
/// jobs.increment(1); // a no-op unless a recorder is installed
/// ```
#[derive(Debug, Clone)]
pub struct Metric {
    #[cfg(feature = "metrics")]
    key: metrics::Key,
}

impl Metric {
    /// A metric named `name` with `labels` (label keys are static, values
    /// are copied once).
    pub fn new(name: &'static str, labels: &[(&'static str, &str)]) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (name, labels);
        Metric {
            #[cfg(feature = "metrics")]
            key: metrics::Key::from_parts(
                name,
                labels
                    .iter()
                    .map(|&(k, v)| metrics::Label::new(k, v.to_owned()))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// Adds `n` to the counter.
    #[inline]
    pub fn increment(&self, n: u64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| r.register_counter(&self.key, &META).increment(n));
        #[cfg(not(feature = "metrics"))]
        let _ = n;
    }

    /// Sets the gauge.
    #[inline]
    pub fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| r.register_gauge(&self.key, &META).set(value));
        #[cfg(not(feature = "metrics"))]
        let _ = value;
    }

    /// Records one sample in the histogram.
    #[inline]
    pub fn record(&self, value: f64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| r.register_histogram(&self.key, &META).record(value));
        #[cfg(not(feature = "metrics"))]
        let _ = value;
    }
}

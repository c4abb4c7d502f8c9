//! Emission to the `metrics` facade (no-ops without the `metrics` feature).

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    pub(crate) fn job(name: &str, outcome: &'static str, run: Option<Duration>) {
        metrics::counter!("weft_pool_jobs_total", "name" => name.to_owned(), "outcome" => outcome)
            .increment(1);
        if let Some(run) = run {
            metrics::histogram!("weft_pool_job_duration_seconds", "name" => name.to_owned())
                .record(run.as_secs_f64());
        }
    }

    pub(crate) fn queue_wait(name: &str, wait: Duration) {
        metrics::histogram!("weft_pool_queue_wait_seconds", "name" => name.to_owned())
            .record(wait.as_secs_f64());
    }

    pub(crate) fn refused(name: &str, outcome: &'static str, n: u64) {
        metrics::counter!("weft_pool_jobs_total", "name" => name.to_owned(), "outcome" => outcome)
            .increment(n);
    }

    pub(crate) fn gauges(name: &str, depth: usize, workers: usize) {
        metrics::gauge!("weft_pool_queue_depth", "name" => name.to_owned()).set(depth as f64);
        metrics::gauge!("weft_pool_workers", "name" => name.to_owned()).set(workers as f64);
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(dead_code)]
mod imp {
    use std::time::Duration;

    #[inline(always)]
    pub(crate) fn job(_: &str, _: &'static str, _: Option<Duration>) {}
    #[inline(always)]
    pub(crate) fn queue_wait(_: &str, _: Duration) {}
    #[inline(always)]
    pub(crate) fn refused(_: &str, _: &'static str, _: u64) {}
    #[inline(always)]
    pub(crate) fn gauges(_: &str, _: usize, _: usize) {}
}

pub(crate) use imp::*;

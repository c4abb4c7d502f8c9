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

    pub(crate) fn factory_panicked(name: &str) {
        metrics::counter!("weft_pool_factory_panics_total", "name" => name.to_owned()).increment(1);
    }

    /// When a queue item (one job or a batch) was queued; its queue wait is
    /// recorded once, when a worker takes it.
    #[derive(Debug)]
    pub(crate) struct QueuedAt(Option<tokio::time::Instant>);

    impl QueuedAt {
        pub(crate) fn now() -> Self {
            QueuedAt(Some(tokio::time::Instant::now()))
        }
        /// Records the wait on the first call; later calls do nothing.
        pub(crate) fn started(&mut self, name: &str) {
            if let Some(q) = self.0.take() {
                queue_wait(name, q.elapsed());
            }
        }
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
    #[inline(always)]
    pub(crate) fn factory_panicked(_: &str) {}

    /// Without `metrics`: nothing (zero-sized, so a queued job carries no
    /// clock).
    #[derive(Debug)]
    pub(crate) struct QueuedAt;

    impl QueuedAt {
        #[inline(always)]
        pub(crate) fn now() -> Self {
            QueuedAt
        }
        #[inline(always)]
        pub(crate) fn started(&mut self, _: &str) {}
    }
}

pub(crate) use imp::*;

#[cfg(all(test, not(feature = "metrics")))]
mod tests {
    #[test]
    fn without_metrics_a_queued_job_carries_no_clock() {
        assert_eq!(std::mem::size_of::<super::QueuedAt>(), 0);
    }
}

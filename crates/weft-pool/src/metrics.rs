//! Emission to the `metrics` facade (no-ops without the `metrics` feature).

/// Why jobs were refused or shed at admission (the `outcome` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    Rejected,
    Dropped,
    Evicted,
}

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    use weft_core::Metric;

    use super::Refused;
    use crate::core::JobOutcome;

    /// One pool's metrics, each key built once when the pool is built (see
    /// [`weft_core::Metric`]: no allocation per job).
    #[derive(Debug, Clone)]
    pub(crate) struct PoolMetrics {
        succeeded: Metric,
        failed: Metric,
        panicked: Metric,
        timed_out: Metric,
        rejected: Metric,
        dropped: Metric,
        evicted: Metric,
        duration: Metric,
        queue_wait: Metric,
        depth: Metric,
        workers: Metric,
        factory_panics: Metric,
    }

    impl PoolMetrics {
        pub(crate) fn new(name: &str) -> Self {
            let jobs = |outcome| {
                Metric::new(
                    "weft_pool_jobs_total",
                    &[("name", name), ("outcome", outcome)],
                )
            };
            let named = |metric| Metric::new(metric, &[("name", name)]);
            PoolMetrics {
                succeeded: jobs("succeeded"),
                failed: jobs("failed"),
                panicked: jobs("panicked"),
                timed_out: jobs("timed_out"),
                rejected: jobs("rejected"),
                dropped: jobs("dropped"),
                evicted: jobs("evicted"),
                duration: named("weft_pool_job_duration_seconds"),
                queue_wait: named("weft_pool_queue_wait_seconds"),
                depth: named("weft_pool_queue_depth"),
                workers: named("weft_pool_workers"),
                factory_panics: named("weft_pool_factory_panics_total"),
            }
        }

        /// One finished job and, if it started, how long it ran.
        pub(crate) fn job(&self, outcome: JobOutcome, run: Option<Duration>) {
            match outcome {
                JobOutcome::Succeeded => &self.succeeded,
                JobOutcome::Failed => &self.failed,
                JobOutcome::Panicked => &self.panicked,
                JobOutcome::TimedOut => &self.timed_out,
            }
            .increment(1);
            if let Some(run) = run {
                self.duration.record(run.as_secs_f64());
            }
        }

        pub(crate) fn queue_wait(&self, wait: Duration) {
            self.queue_wait.record(wait.as_secs_f64());
        }

        pub(crate) fn refused(&self, why: Refused, n: u64) {
            match why {
                Refused::Rejected => &self.rejected,
                Refused::Dropped => &self.dropped,
                Refused::Evicted => &self.evicted,
            }
            .increment(n);
        }

        pub(crate) fn gauges(&self, depth: usize, workers: usize) {
            self.depth.set(depth as f64);
            self.workers.set(workers as f64);
        }

        pub(crate) fn factory_panicked(&self) {
            self.factory_panics.increment(1);
        }
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
        pub(crate) fn started(&mut self, m: Option<&PoolMetrics>) {
            if let Some(q) = self.0.take()
                && let Some(m) = m
            {
                m.queue_wait(q.elapsed());
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(dead_code)]
mod imp {
    use std::time::Duration;

    use super::Refused;
    use crate::core::JobOutcome;

    /// Without `metrics`: nothing.
    #[derive(Debug, Clone)]
    pub(crate) struct PoolMetrics;

    impl PoolMetrics {
        #[inline(always)]
        pub(crate) fn new(_: &str) -> Self {
            PoolMetrics
        }
        #[inline(always)]
        pub(crate) fn job(&self, _: JobOutcome, _: Option<Duration>) {}
        #[inline(always)]
        pub(crate) fn queue_wait(&self, _: Duration) {}
        #[inline(always)]
        pub(crate) fn refused(&self, _: Refused, _: u64) {}
        #[inline(always)]
        pub(crate) fn gauges(&self, _: usize, _: usize) {}
        #[inline(always)]
        pub(crate) fn factory_panicked(&self) {}
    }

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
        pub(crate) fn started(&mut self, _: Option<&PoolMetrics>) {}
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

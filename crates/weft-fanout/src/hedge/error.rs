/// A hedge configuration that [`HedgeLayerBuilder::build`](super::HedgeLayerBuilder::build) refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The percentile is outside `(0, 1]`; pass for example `0.95` for p95.
    #[error("latency percentile must be in (0, 1], got {0}; pass e.g. 0.95 for p95")]
    Percentile(f64),
    /// The budget ratio is outside `[0, 1)`; pass for example `0.1` for at
    /// most 10% extra load.
    #[error(
        "hedge budget ratio must be in [0, 1) so hedging cannot double the load, got {0}; pass e.g. 0.1"
    )]
    BudgetRatio(f64),
    /// `min_samples` is 0: a percentile of no latencies is not a delay;
    /// pass at least 1.
    #[error(
        "min_samples must be at least 1; pass e.g. 20 (a percentile of fewer samples is mostly noise)"
    )]
    ZeroMinSamples,
    /// The latency window is empty or smaller than `min_samples`; pass at
    /// least `min_samples`.
    #[error(
        "latency window of {window} cannot hold min_samples = {min_samples}; pass a window of at least {min_samples}"
    )]
    Window {
        /// The window asked for.
        window: usize,
        /// The samples needed before hedging starts.
        min_samples: usize,
    },
    /// Neither a fixed delay nor a percentile was chosen.
    #[error("no hedge delay chosen; call fixed_delay(..) or latency_percentile(..)")]
    NoDelay,
}

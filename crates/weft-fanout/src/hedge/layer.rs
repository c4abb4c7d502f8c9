use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::error::ConfigError;
use super::policy::DelaySource;
use super::service::{Hedge, Shared};

/// A tower layer that hedges requests: when an attempt has not answered
/// after a delay (fixed, or a percentile of recent latencies), another is
/// sent, at most `max_extra_attempts` times; the first success wins and the
/// other attempts are cancelled. A budget caps hedges to a share of the
/// requests, so hedging cannot double the load on a struggling service;
/// only hedges actually sent spend it (a hedge that is due but then not
/// sent, because another attempt answered first, the caller left, or the
/// service reported an error instead of readiness, gives its token back).
///
/// Build with [`HedgeLayer::builder`]. Clones of the layer, and every
/// service it makes, share one latency window, one budget and one set of
/// counters.
///
/// ```
/// use std::time::Duration;
/// use weft_fanout::hedge::HedgeLayer;
///
/// let layer = HedgeLayer::builder()
///     .latency_percentile(0.95)     // hedge after the recent p95
///     .min_samples(50)              // ... once 50 latencies are known
///     .max_extra_attempts(1)
///     .budget_ratio(0.1)            // at most ~10% extra requests
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    shared: Arc<Shared>,
}

/// Builds a [`HedgeLayer`].
#[derive(Debug, Clone)]
pub struct HedgeLayerBuilder {
    fixed: Option<Duration>,
    percentile: Option<f64>,
    min_samples: usize,
    window: usize,
    max_extra: usize,
    ratio: f64,
    burst: u32,
    name: &'static str,
}

impl HedgeLayer {
    /// A builder with the defaults documented on each setter.
    pub fn builder() -> HedgeLayerBuilder {
        HedgeLayerBuilder {
            fixed: None,
            percentile: None,
            min_samples: 20,
            window: 1000,
            max_extra: 1,
            ratio: 0.1,
            burst: 10,
            name: "hedge",
        }
    }
}

impl HedgeLayerBuilder {
    /// Hedge after a fixed delay.
    pub fn fixed_delay(mut self, delay: Duration) -> Self {
        self.fixed = Some(delay);
        self.percentile = None;
        self
    }

    /// Hedge after the `p` percentile (in `(0, 1]`, e.g. `0.95`) of the
    /// latencies of recent successful attempts. Until
    /// [`min_samples`](Self::min_samples) are known, nothing is hedged.
    pub fn latency_percentile(mut self, p: f64) -> Self {
        self.percentile = Some(p);
        self.fixed = None;
        self
    }

    /// Latencies needed before percentile hedging starts (default 20: a
    /// percentile of fewer samples is mostly noise). At least 1:
    /// [`build`](Self::build) refuses 0 with [`ConfigError::ZeroMinSamples`].
    pub fn min_samples(mut self, n: usize) -> Self {
        self.min_samples = n;
        self
    }

    /// How many recent latencies the percentile is taken over (default
    /// 1000: enough for a stable p99, short enough to follow a shift).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }

    /// Extra attempts per request at most (default 1; each is sent one delay
    /// after the previous attempt). 0 turns hedging off.
    pub fn max_extra_attempts(mut self, k: usize) -> Self {
        self.max_extra = k;
        self
    }

    /// Hedges per request allowed on average, in `[0, 1)` (default 0.1:
    /// hedging the slowest 10% is where it pays).
    pub fn budget_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Hedges allowed in a burst beyond the ratio (default 10).
    pub fn budget_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Names the hedge in traces and metrics (default `"hedge"`).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The layer, or what to change: a [`ConfigError`] whose message says
    /// what to pass instead. Nothing in the hedge panics on configuration.
    pub fn build(self) -> Result<HedgeLayer, ConfigError> {
        let source = match (self.fixed, self.percentile) {
            (Some(d), _) => DelaySource::Fixed(d),
            (None, Some(p)) => {
                if !(p > 0.0 && p <= 1.0) {
                    return Err(ConfigError::Percentile(p));
                }
                if self.min_samples == 0 {
                    return Err(ConfigError::ZeroMinSamples);
                }
                if self.window < self.min_samples {
                    return Err(ConfigError::Window {
                        window: self.window,
                        min_samples: self.min_samples,
                    });
                }
                DelaySource::Percentile {
                    p,
                    min_samples: self.min_samples,
                    window: self.window,
                }
            }
            (None, None) => return Err(ConfigError::NoDelay),
        };
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(ConfigError::BudgetRatio(self.ratio));
        }
        Ok(HedgeLayer {
            shared: Arc::new(Shared::new(
                self.name,
                source,
                self.max_extra,
                self.ratio,
                self.burst,
            )),
        })
    }
}

impl HedgeLayer {
    /// Wraps one service (same as [`Layer::layer`]).
    pub fn wrap<S>(&self, inner: S) -> Hedge<S> {
        Hedge::from_shared(inner, self.shared.clone())
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.wrap(inner)
    }
}

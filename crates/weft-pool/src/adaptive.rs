//! Adaptive sizing: the scaling rule and the task that applies it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::core::{Runner, WeakShared};

/// How an adaptive pool grows and shrinks between `min_workers` and
/// `max_workers`. Set with [`Builder::scaling`](crate::Builder::scaling);
/// the defaults are the reference design's.
///
/// Every `interval` the pool measures *utilisation*: the share of the last
/// interval its live workers spent running jobs. It grows by `grow_by` (at
/// least one worker) when utilisation is at or above `grow_at` **and** jobs
/// are waiting; it shrinks by `shrink_by` (at least one) when utilisation is
/// below `shrink_at` **and** nothing is queued. The gap between the two
/// thresholds is the hysteresis; after any change the pool waits `cooldown`
/// before the next one. Independently, a worker idle for `idle_timeout`
/// exits while the pool is above `min_workers`.
///
/// Building a pool checks the rule and refuses one that makes no sense with
/// [`BuildError::InvalidScaling`](crate::BuildError::InvalidScaling): a zero
/// `interval` or `idle_timeout`; thresholds outside
/// `0 <= shrink_at < grow_at <= 1` (or not numbers); a `grow_by` that is
/// negative or not finite; a `shrink_by` outside `0..=1`. A step of 0 means
/// the least step, one worker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Scaling {
    /// How often utilisation is checked. Default 500 ms.
    pub interval: Duration,
    /// Utilisation at or above which the pool grows (with work queued).
    /// Default 0.7.
    pub grow_at: f64,
    /// Utilisation below which the pool shrinks (with nothing queued).
    /// Default 0.35.
    pub shrink_at: f64,
    /// Growth step, as a share of live workers. Default 0.25.
    pub grow_by: f64,
    /// Shrink step, as a share of live workers. Default 0.15.
    pub shrink_by: f64,
    /// Minimum time between two changes. Default 1 s (two intervals), so one
    /// noisy sample cannot undo the last change.
    pub cooldown: Duration,
    /// A worker idle this long exits while above `min_workers`. Default 30 s.
    pub idle_timeout: Duration,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            interval: Duration::from_millis(500),
            grow_at: 0.7,
            shrink_at: 0.35,
            grow_by: 0.25,
            shrink_by: 0.15,
            cooldown: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Scaling {
    /// The reference design's defaults.
    pub fn new() -> Self {
        Scaling::default()
    }

    /// Sets how often utilisation is checked.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Sets the grow and shrink thresholds.
    pub fn thresholds(mut self, grow_at: f64, shrink_at: f64) -> Self {
        self.grow_at = grow_at;
        self.shrink_at = shrink_at;
        self
    }

    /// Sets the grow and shrink steps, as shares of the live workers.
    pub fn steps(mut self, grow_by: f64, shrink_by: f64) -> Self {
        self.grow_by = grow_by;
        self.shrink_by = shrink_by;
        self
    }

    /// Sets the cooldown between changes.
    pub fn cooldown(mut self, d: Duration) -> Self {
        self.cooldown = d;
        self
    }

    /// Sets the idle timeout after which a surplus worker exits.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Why this rule makes no sense, in words that say what to pass; `Ok`
    /// if it does.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.interval.is_zero() {
            return Err(
                "interval is 0: pass a non-zero interval (how often utilisation is checked)",
            );
        }
        if self.idle_timeout.is_zero() {
            return Err(
                "idle_timeout is 0, so workers above min_workers would exit as soon as they are idle: \
                 pass a non-zero idle_timeout",
            );
        }
        if !(self.grow_at > 0.0 && self.grow_at <= 1.0) {
            return Err("grow_at is not a utilisation share in (0, 1]: pass a number such as 0.7");
        }
        if !(self.shrink_at >= 0.0 && self.shrink_at < self.grow_at) {
            return Err(
                "shrink_at is not a utilisation share in [0, grow_at): pass a number below grow_at, \
                 such as 0.35 (0 never shrinks on utilisation)",
            );
        }
        if !(self.grow_by.is_finite() && self.grow_by >= 0.0) {
            return Err(
                "grow_by is not a finite share of the live workers >= 0: pass a number such as 0.25",
            );
        }
        if !(self.shrink_by >= 0.0 && self.shrink_by <= 1.0) {
            return Err(
                "shrink_by is not a share of the live workers in [0, 1]: pass a number such as 0.15",
            );
        }
        Ok(())
    }

    /// The scaling rule: given `live` workers, their `utilisation` over the
    /// last interval and the number of `queued` items, the new worker count
    /// within `[min, max]`, or `None` to stay. Cooldown is applied by the
    /// caller.
    ///
    /// ```
    /// use weft_pool::Scaling;
    ///
    /// let s = Scaling::default();
    /// assert_eq!(s.decide(8, 0.9, 100, 2, 16), Some(10)); // +25%
    /// assert_eq!(s.decide(8, 0.9, 0, 2, 16), None); // busy but nothing waits
    /// assert_eq!(s.decide(8, 0.1, 0, 2, 16), Some(7)); // -15% (rounded down), at least one
    /// assert_eq!(s.decide(8, 0.5, 0, 2, 16), None); // inside the hysteresis band
    /// ```
    pub fn decide(
        &self,
        live: usize,
        utilisation: f64,
        queued: usize,
        min: usize,
        max: usize,
    ) -> Option<usize> {
        let next = if utilisation >= self.grow_at && queued > 0 {
            let step = ((live as f64) * self.grow_by).ceil().max(1.0) as usize;
            live.saturating_add(step).min(max)
        } else if utilisation < self.shrink_at && queued == 0 {
            let step = ((live as f64) * self.shrink_by).floor().max(1.0) as usize;
            live.saturating_sub(step).max(min)
        } else {
            return None;
        };
        let next = next.clamp(min.max(1), max.max(1));
        (next != live).then_some(next)
    }
}

pub(crate) async fn scaler<R: Runner>(weak: WeakShared<R>, s: Scaling) {
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_change: Option<Instant> = None;
    let (mut last_busy, mut last_at) = match weak.upgrade() {
        Some(sh) => (sh.busy().0, Instant::now()),
        None => return,
    };
    loop {
        tick.tick().await;
        let Some(shared): Option<Arc<_>> = weak.upgrade() else {
            return;
        };
        if shared.is_closed() {
            return;
        }
        let now = Instant::now();
        let (busy, running) = shared.busy();
        let live = shared.live().max(1);
        let window = now.duration_since(last_at).as_nanos().max(1) as f64;
        // Busy time of jobs still running is not in `busy` yet: count the
        // running workers as busy for the whole window.
        let measured = busy.saturating_sub(last_busy) as f64 / (window * live as f64);
        let util = measured.max(running as f64 / live as f64).min(1.0);
        last_busy = busy;
        last_at = now;
        if last_change.is_some_and(|t| now.duration_since(t) < s.cooldown) {
            continue;
        }
        let (min, max) = shared.bounds();
        if let Some(n) = s.decide(shared.live(), util, shared.queue.len(), min, max) {
            tracing::info!(
                pool = &*shared.cfg.name,
                from = shared.live(),
                to = n,
                utilisation = util,
                "pool scaling"
            );
            let target = n;
            shared.set_target(target);
            last_change = Some(now);
        }
    }
}

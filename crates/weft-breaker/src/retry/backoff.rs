use std::time::Duration;

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: `base * multiplier^(n-1)`, capped.
    None,
    /// "Full jitter": uniform in `[0, base * multiplier^(n-1)]`, capped. Spreads
    /// retries the most; the default.
    Full,
    /// "Decorrelated jitter": uniform in `[base, 3 * previous delay]`, capped,
    /// where a previous delay shorter than `base` (none, before the first
    /// retry) counts as `base`.
    /// Grows like exponential backoff without synchronising clients.
    Decorrelated,
}

/// Exponential backoff between attempts.
///
/// ```
/// use std::time::Duration;
/// use weft_breaker::retry::{Backoff, Jitter};
///
/// let b = Backoff::exponential(Duration::from_millis(100))
///     .max(Duration::from_secs(1))
///     .jitter(Jitter::None);
/// assert_eq!(b.delay(1, Duration::ZERO, 0.5), Duration::from_millis(100));
/// assert_eq!(b.delay(3, Duration::ZERO, 0.5), Duration::from_millis(400));
/// assert_eq!(b.delay(10, Duration::ZERO, 0.5), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl Backoff {
    /// Backoff starting at `base`, doubling, capped at 10 s, with full
    /// jitter.
    pub fn exponential(base: Duration) -> Self {
        Backoff {
            base,
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }

    /// The largest delay. Default 10 s. `Duration::MAX` means no cap: a
    /// delay that would grow past what a `Duration` holds is
    /// `Duration::MAX`.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The growth factor per retry (values below 1 are treated as 1).
    /// Default 2.
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = if m.is_finite() { m.max(1.0) } else { 1.0 };
        self
    }

    /// The jitter. Default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The delay before retry `n` (1 for the first retry), given the
    /// previous delay (used by decorrelated jitter) and a random number
    /// `r` in `[0, 1)`. Never more than the max, for any `n` (and never a
    /// panic, even with an uncapped max).
    pub fn delay(&self, n: u32, previous: Duration, r: f64) -> Duration {
        let r = if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        let max = self.max.as_secs_f64();
        let base = self.base.as_secs_f64();
        // `base * multiplier^(n-1)`; a zero base stays zero (rather than
        // 0 * inf = NaN once the growth overflows).
        let grown = || {
            if base == 0.0 {
                0.0
            } else {
                base * self.multiplier.powi(n.saturating_sub(1).min(1_000) as i32)
            }
        };
        let secs = match self.jitter {
            Jitter::None => grown().min(max),
            Jitter::Full => grown().min(max) * r,
            Jitter::Decorrelated => {
                let prev = previous.as_secs_f64().max(base);
                let hi = (prev * 3.0).max(base);
                (base + r * (hi - base)).min(max)
            }
        };
        if secs.is_nan() || secs <= 0.0 {
            return Duration::ZERO;
        }
        // Too large for a `Duration` only when the max is (nearly)
        // `Duration::MAX`, whose seconds round up as an `f64`; the `min`
        // undoes the rounding of a max that is not a whole `f64`.
        Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
    }

    pub(crate) fn next(&self, n: u32, previous: Duration) -> Duration {
        self.delay(n, previous, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_decorrelated_stay_in_bounds() {
        let ms = Duration::from_millis;
        let full = Backoff::exponential(ms(10)).max(ms(100));
        assert_eq!(full.delay(2, ms(0), 0.5), ms(10));
        assert_eq!(full.delay(20, ms(0), 0.999_999).as_millis(), 99);
        let dec = full.jitter(Jitter::Decorrelated);
        assert_eq!(dec.delay(1, ms(0), 0.0), ms(10));
        assert_eq!(dec.delay(2, ms(20), 1.0), ms(60));
        assert_eq!(dec.delay(5, ms(90), 1.0), ms(100));
    }
}

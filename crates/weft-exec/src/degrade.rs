//! Degradation levels chosen from signals the service feeds in.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How degraded a service should run. Ordered: `Full < Reduced < Minimal <
/// Emergency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Everything on.
    #[default]
    Full = 0,
    /// Optional work off (recommendations, prefetching, rich logs).
    Reduced = 1,
    /// Only the core path.
    Minimal = 2,
    /// Survival: serve what keeps the service alive, shed the rest.
    Emergency = 3,
}

impl Level {
    const ALL: [Level; 4] = [
        Level::Full,
        Level::Reduced,
        Level::Minimal,
        Level::Emergency,
    ];
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Full => "full",
            Level::Reduced => "reduced",
            Level::Minimal => "minimal",
            Level::Emergency => "emergency",
        })
    }
}

/// The thresholds of one signal: the value at or above which each level is
/// entered, and how far below a threshold the value must fall to leave that
/// level again (hysteresis).
///
/// ```
/// use weft_exec::Thresholds;
///
/// // CPU: reduced at 70%, minimal at 85%, emergency at 95%; leave a level
/// // only 5 points below its threshold.
/// let cpu = Thresholds::new(0.70, 0.85, 0.95).hysteresis(0.05);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    enter: [f64; 3],
    hysteresis: f64,
}

impl Thresholds {
    /// Enter `Reduced` at `reduced`, `Minimal` at `minimal`, `Emergency` at
    /// `emergency` (non-decreasing). Hysteresis defaults to 0.
    pub fn new(reduced: f64, minimal: f64, emergency: f64) -> Self {
        Thresholds {
            enter: [reduced, minimal, emergency],
            hysteresis: 0.0,
        }
    }

    /// A level is left only when the value falls below its threshold minus
    /// `band` (in the signal's own unit). A negative or NaN band is 0; an
    /// infinite one is refused by
    /// [`build`](DegradationBuilder::build) ([`DegradeError::BadHysteresis`]).
    /// A band wider than the signal's range (say 0.8 under a 0.7 CPU
    /// threshold, for a CPU that never reads below 0) is not refused, since
    /// weft does not know the range: the level it guards is never left.
    pub fn hysteresis(mut self, band: f64) -> Self {
        self.hysteresis = band.max(0.0);
        self
    }

    /// The highest level whose threshold, lowered by `band`, is at or below `v`.
    fn level(&self, v: f64, band: f64) -> Level {
        let mut l = Level::Full;
        for (i, t) in self.enter.iter().enumerate() {
            if v >= t - band {
                l = Level::ALL[i + 1];
            }
        }
        l
    }
}

/// A level change, as passed to the callback.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LevelChange {
    /// The level before.
    pub from: Level,
    /// The level now.
    pub to: Level,
    /// The signal whose value caused the change.
    pub signal: String,
    /// That signal's value.
    pub value: f64,
}

/// The controller could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DegradeError {
    /// No signal was declared.
    #[error("no signals: declare at least one with .signal(name, thresholds)")]
    NoSignals,
    /// A signal's thresholds decrease or are not numbers.
    #[error(
        "thresholds of signal {0:?} must be numbers in non-decreasing order (reduced <= minimal <= emergency)"
    )]
    BadThresholds(String),
    /// The same signal was declared twice.
    #[error("signal {0:?} is declared twice")]
    Duplicate(String),
    /// A signal's hysteresis band is infinite: no value could ever fall
    /// below a threshold minus the band, so the controller would never
    /// recover from a level it entered.
    #[error(
        "hysteresis of signal {0:?} must be a finite number (an infinite band never lets a level go)"
    )]
    BadHysteresis(String),
}

type Callback = Box<dyn Fn(&LevelChange) + Send + Sync>;

/// Builds a [`Degradation`] controller.
pub struct DegradationBuilder {
    name: String,
    signals: Vec<(String, Thresholds)>,
    recovery_delay: Duration,
    on_change: Option<Callback>,
}

impl fmt::Debug for DegradationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradationBuilder")
            .field("name", &self.name)
            .field("signals", &self.signals)
            .field("recovery_delay", &self.recovery_delay)
            .finish()
    }
}

impl DegradationBuilder {
    /// The name used in tracing and metrics (default `"degradation"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Declares a signal (CPU, memory, error rate, request rate, queue
    /// depth: anything numeric where larger is worse).
    pub fn signal(mut self, name: impl Into<String>, thresholds: Thresholds) -> Self {
        self.signals.push((name.into(), thresholds));
        self
    }

    /// How long the signals must stay below a level (minus hysteresis)
    /// before the controller steps down from it. Default 10 s: long enough
    /// that one quiet sample in a storm does not switch features back on.
    /// Escalation is always immediate.
    pub fn recovery_delay(mut self, d: Duration) -> Self {
        self.recovery_delay = d;
        self
    }

    /// Called on every level change, in the order the changes happened, on
    /// a thread that recorded a signal (keep it short). When two threads
    /// change the level at once, the first to deliver also delivers the
    /// other's change, after its own: the last change the callback sees is
    /// always the current level. A panic in the callback is caught, logged
    /// and counted (`stats().callback_panics`); it never reaches `record`.
    /// The callback may call `record` itself.
    pub fn on_change(mut self, f: impl Fn(&LevelChange) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Box::new(f));
        self
    }

    /// Builds the controller, at `Level::Full`.
    pub fn build(self) -> Result<Degradation, DegradeError> {
        if self.signals.is_empty() {
            return Err(DegradeError::NoSignals);
        }
        for (i, (name, t)) in self.signals.iter().enumerate() {
            let ok = t.enter.iter().all(|x| !x.is_nan())
                && t.enter[0] <= t.enter[1]
                && t.enter[1] <= t.enter[2];
            if !ok {
                return Err(DegradeError::BadThresholds(name.clone()));
            }
            if t.hysteresis.is_infinite() {
                return Err(DegradeError::BadHysteresis(name.clone()));
            }
            if self.signals[..i].iter().any(|(n, _)| n == name) {
                return Err(DegradeError::Duplicate(name.clone()));
            }
        }
        let (tx, _) = watch::channel(Level::Full);
        let n = self.signals.len();
        let gauge = crate::metrics::degradation_level(&self.name);
        gauge.set(0.0);
        Ok(Degradation {
            inner: Arc::new(Inner {
                gauge,
                name: self.name,
                signals: self.signals,
                recovery_delay: self.recovery_delay,
                on_change: self.on_change,
                tx,
                state: Mutex::new(State {
                    values: vec![None; n],
                    level: Level::Full,
                    below_since: None,
                    changes: 0,
                    pending: std::collections::VecDeque::new(),
                    delivering: false,
                    callback_panics: 0,
                }),
            }),
        })
    }
}

struct Inner {
    name: String,
    gauge: crate::metrics::Metric,
    signals: Vec<(String, Thresholds)>,
    recovery_delay: Duration,
    on_change: Option<Callback>,
    tx: watch::Sender<Level>,
    state: Mutex<State>,
}

struct State {
    values: Vec<Option<f64>>,
    level: Level,
    /// Since when the signals have allowed a lower level.
    below_since: Option<Instant>,
    changes: u64,
    /// Changes not yet delivered (gauge, log, callback), in order.
    pending: std::collections::VecDeque<LevelChange>,
    /// Whether a thread is delivering `pending` (it delivers them all).
    delivering: bool,
    callback_panics: u64,
}

/// Chooses a degradation [`Level`] from signals the service feeds in, with
/// per-signal thresholds, hysteresis so it does not flap, a recovery delay,
/// a callback and a watch channel on every change — and recovery all the way
/// back to `Full` when the signals fall.
///
/// The level is the worst any signal asks for. Going up is immediate; going
/// down needs every signal below the current level's threshold minus its
/// hysteresis for `recovery_delay`, and then drops straight to the level the
/// signals support (possibly `Full`). Levels are evaluated when a signal is
/// recorded (feed signals periodically; [`record`](Self::record) is cheap).
///
/// ```
/// use std::time::Duration;
/// use weft_exec::{Degradation, Level, Thresholds};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let d = Degradation::builder()
///     .signal("cpu", Thresholds::new(0.70, 0.85, 0.95).hysteresis(0.05))
///     .signal("error_rate", Thresholds::new(0.01, 0.05, 0.20))
///     .recovery_delay(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// let mut rx = d.subscribe();
/// assert_eq!(d.record("cpu", 0.90), Level::Minimal);
/// assert_eq!(*rx.borrow_and_update(), Level::Minimal);
/// // 0.82 is below 0.85 but inside the hysteresis band: stays Minimal.
/// assert_eq!(d.record("cpu", 0.82), Level::Minimal);
/// // Calm for 5 s: back to Full.
/// d.record("cpu", 0.30);
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// assert_eq!(d.record("cpu", 0.30), Level::Full);
/// # }
/// ```
#[derive(Clone)]
pub struct Degradation {
    inner: Arc<Inner>,
}

/// A snapshot of a [`Degradation`] controller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DegradationStats {
    /// The current level.
    pub level: Level,
    /// Level changes so far.
    pub changes: u64,
    /// The last value of each signal (`None` if never recorded).
    pub values: Vec<(String, Option<f64>)>,
    /// Panics of the `on_change` callback (caught and logged).
    pub callback_panics: u64,
}

impl Degradation {
    /// A builder.
    pub fn builder() -> DegradationBuilder {
        DegradationBuilder {
            name: "degradation".to_owned(),
            signals: Vec::new(),
            recovery_delay: Duration::from_secs(10),
            on_change: None,
        }
    }

    /// The current level.
    pub fn level(&self) -> Level {
        *self.inner.tx.borrow()
    }

    /// A watch channel that sees every level change.
    pub fn subscribe(&self) -> watch::Receiver<Level> {
        self.inner.tx.subscribe()
    }

    /// Records a signal's value, re-evaluates and returns the level.
    ///
    /// A NaN value (a 0/0 rate, a failed read) says nothing about load: it
    /// is ignored (the signal keeps its last value) and logged, rather than
    /// read as healthy.
    ///
    /// # Panics
    /// If `signal` was not declared (a typo would otherwise silently never
    /// degrade).
    pub fn record(&self, signal: &str, value: f64) -> Level {
        let i = &*self.inner;
        let idx = i
            .signals
            .iter()
            .position(|(n, _)| n == signal)
            .unwrap_or_else(|| {
                panic!("unknown degradation signal {signal:?}: declare it with .signal()")
            });
        if value.is_nan() {
            tracing::warn!(name = %i.name, signal, "degradation signal got NaN: ignored (pass a number)");
            return self.level();
        }
        let (change, deliver) = {
            let mut st = i.state.lock().unwrap_or_else(|e| e.into_inner());
            st.values[idx] = Some(value);
            let (mut up, mut hold) = (Level::Full, Level::Full);
            for ((_, t), v) in i.signals.iter().zip(&st.values) {
                if let Some(v) = *v {
                    up = up.max(t.level(v, 0.0));
                    hold = hold.max(t.level(v, t.hysteresis));
                }
            }
            let from = st.level;
            let to = if up > from {
                st.below_since = None;
                Some(up)
            } else if hold < from {
                let now = Instant::now();
                let since = *st.below_since.get_or_insert(now);
                (now.duration_since(since) >= i.recovery_delay).then_some(hold)
            } else {
                st.below_since = None;
                None
            };
            let change = to;
            // Queued under the state lock, so in the order they happened;
            // delivered by one thread at a time, outside the lock.
            let mut deliver = false;
            if let Some(to) = change {
                st.level = to;
                st.below_since = None;
                st.changes += 1;
                i.tx.send_replace(to);
                st.pending.push_back(LevelChange {
                    from,
                    to,
                    signal: signal.to_owned(),
                    value,
                });
                deliver = !std::mem::replace(&mut st.delivering, true);
            }
            (change, deliver)
        };
        if deliver {
            self.deliver();
        }
        change.unwrap_or_else(|| self.level())
    }

    /// Delivers queued changes in order until none is left: gauge, log,
    /// callback (its panics contained).
    fn deliver(&self) {
        /// If something outside the contained callback panics (a metrics
        /// recorder, a tracing layer), the next change delivers again.
        struct Unwinding<'a>(&'a Inner);
        impl Drop for Unwinding<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0
                        .state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .delivering = false;
                }
            }
        }
        let i = &*self.inner;
        let _unwinding = Unwinding(i);
        loop {
            let c = {
                let mut st = i.state.lock().unwrap_or_else(|e| e.into_inner());
                match st.pending.pop_front() {
                    Some(c) => c,
                    None => {
                        st.delivering = false;
                        return;
                    }
                }
            };
            i.gauge.set(f64::from(c.to as u8));
            if c.to > c.from {
                tracing::warn!(name = %i.name, from = %c.from, to = %c.to, signal = %c.signal, value = c.value, "degrading");
            } else {
                tracing::info!(name = %i.name, from = %c.from, to = %c.to, signal = %c.signal, value = c.value, "recovering");
            }
            if let Some(f) = &i.on_change
                && let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&c)))
            {
                let p = weft_core::Panicked::from_payload(p.as_ref());
                tracing::error!(name = %i.name, panic = %p.message(), "degradation on_change callback panicked");
                i.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .callback_panics += 1;
            }
        }
    }

    /// A snapshot.
    pub fn stats(&self) -> DegradationStats {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        DegradationStats {
            level: st.level,
            changes: st.changes,
            values: self
                .inner
                .signals
                .iter()
                .map(|(n, _)| n.clone())
                .zip(st.values.iter().copied())
                .collect(),
            callback_panics: st.callback_panics,
        }
    }
}

impl fmt::Debug for Degradation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Degradation")
            .field("name", &self.inner.name)
            .field("level", &self.level())
            .finish()
    }
}

//! The showcase service: an event-processing pipeline built from weft's
//! crates, with a report whose counts must add up.
//!
//! ```text
//! generator ──► parse ──► enrich (per account, in order) ──► batch ──► output.csv
//!                 │           │
//!                 │           └─ tower: Pool (weft-pool) → Breaker (weft-breaker)
//!                 │                     → RateLimit (weft-exec) → dependency
//!                 └─ malformed rows ──► dead_letters.csv
//! ```
//!
//! The dependency is simulated in-process and goes through four phases
//! (by event sequence number, so a run is reproducible): healthy, failing,
//! slow, recovered. The breaker trips in the failing and slow phases and
//! closes again after recovery; events that cannot be enriched while it is
//! open are counted as failed (and named in `failed.csv`). A shutdown
//! (Ctrl-C, `--stop-after`, or the end of the input) stops the source, drains
//! the pipeline, then the pool, and every accepted event is accounted for:
//! `accepted = written + dead-lettered + failed + returned`.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceBuilder;
use weft_breaker::{BreakerLayer, CircuitBreaker, SlidingWindow, Transition};
use weft_core::BoxError;
use weft_exec::{Quota, RateLimitLayer};
use weft_pipeline::{Batch, DeadLetter, OnError, Pipeline, Stage};
use weft_pool::WorkerPool;
use weft_pool::service::PoolLayer;
use weft_shutdown::Coordinator;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Events to generate (default 1,000,000).
    pub events: u64,
    /// Events per second from the generator; `None` for as fast as the
    /// pipeline takes them (default).
    pub rate: Option<u64>,
    /// Fraction of malformed rows (default 0.01).
    pub malformed: f64,
    /// Seed of the generator (default 42).
    pub seed: u64,
    /// Distinct accounts (default 1,000).
    pub accounts: u64,
    /// Whether the dependency goes through its failing and slow phases
    /// (default on; `--no-failures` turns it off).
    pub inject_failures: bool,
    /// Trigger the shutdown after this long (default: run to the end, or
    /// until Ctrl-C).
    pub stop_after: Option<Duration>,
    /// Where the output files go.
    pub out_dir: PathBuf,
    /// Show progress: a bar on a terminal, a plain line a second otherwise
    /// (default on; `--no-progress` turns it off).
    pub progress: bool,
    /// Install SIGINT/SIGTERM handlers (off in tests).
    pub signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            events: 1_000_000,
            rate: None,
            malformed: 0.01,
            seed: 42,
            accounts: 1_000,
            inject_failures: true,
            stop_after: None,
            out_dir: std::env::temp_dir().join("weft-showcase"),
            progress: true,
            signals: true,
        }
    }
}

impl Config {
    /// Parses command-line flags (see `--help`).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
        let mut cfg = Config::default();
        let mut args = args.into_iter();
        fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
            v.and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a value; see --help"))
        }
        while let Some(a) = args.next() {
            match a.as_str() {
                "--events" => cfg.events = value("--events", args.next())?,
                "--rate" => cfg.rate = Some(value("--rate", args.next())?),
                "--malformed" => cfg.malformed = value("--malformed", args.next())?,
                "--seed" => cfg.seed = value("--seed", args.next())?,
                "--accounts" => cfg.accounts = value::<u64>("--accounts", args.next())?.max(1),
                "--no-failures" => cfg.inject_failures = false,
                "--stop-after" => {
                    cfg.stop_after =
                        Some(Duration::from_secs_f64(value("--stop-after", args.next())?))
                }
                "--out" => cfg.out_dir = PathBuf::from(value::<String>("--out", args.next())?),
                "--no-progress" => cfg.progress = false,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        if cfg.rate == Some(0) {
            return Err("--rate must be at least 1 event per second; leave it out to run as fast as the pipeline takes them".to_owned());
        }
        if !(0.0..=1.0).contains(&cfg.malformed) {
            return Err("--malformed is a fraction between 0 and 1".to_owned());
        }
        Ok(cfg)
    }
}

/// The showcase's usage text.
pub const USAGE: &str = "usage: showcase [--events N] [--rate PER_SEC] [--malformed FRACTION] \
[--seed N] [--accounts N] [--no-failures] [--stop-after SECS] [--out DIR] [--no-progress]";

/// One generated row, as it enters the pipeline.
#[derive(Debug, Clone)]
pub struct Raw {
    seq: u64,
    line: String,
    born: Instant,
}

#[derive(Debug, Clone)]
struct Event {
    seq: u64,
    account: u64,
    amount_cents: i64,
    born: Instant,
}

#[derive(Debug)]
struct Enriched {
    event: Event,
    risk: u32,
}

/// The dependency's phase for an event, by its position in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    Failing,
    Slow,
    Recovered,
}

fn phase(seq: u64, events: u64, inject: bool) -> Phase {
    if !inject {
        return Phase::Healthy;
    }
    match seq * 100 / events.max(1) {
        0..30 => Phase::Healthy,
        30..40 => Phase::Failing,
        40..50 => Phase::Slow,
        _ => Phase::Recovered,
    }
}

/// A failed dependency call.
#[derive(Debug)]
struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dependency unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// What a run did. [`Summary::is_balanced`] is the invariant the example
/// checks before exiting.
#[derive(Debug)]
pub struct Summary {
    /// Events the pipeline took from the generator.
    pub accepted: u64,
    /// Events written to output.csv.
    pub written: u64,
    /// Malformed rows written to dead_letters.csv.
    pub dead_lettered: u64,
    /// Events that could not be enriched (failed.csv).
    pub failed: u64,
    /// Events accepted but not processed because the drain deadline passed.
    pub returned: u64,
    /// Wall time from start to the end of the shutdown.
    pub elapsed: Duration,
    /// Median latency from generation to write.
    pub p50: Duration,
    /// 99th percentile latency from generation to write.
    pub p99: Duration,
    /// Breaker transitions, in order.
    pub transitions: Vec<String>,
    /// Calls the breaker rejected while open.
    pub breaker_rejected: u64,
    /// Times the rate limit made a caller wait.
    pub throttled: u64,
    /// The pipeline's own report (per stage).
    pub pipeline: weft_pipeline::Report,
    /// The shutdown coordinator's report.
    pub shutdown: weft_shutdown::Report,
    /// Files written.
    pub files: Files,
}

/// The output files of a run.
#[derive(Debug, Clone)]
pub struct Files {
    /// Enriched events, one line per event.
    pub output: PathBuf,
    /// Malformed rows, with the error.
    pub dead_letters: PathBuf,
    /// Events that could not be enriched, with the error.
    pub failed: PathBuf,
}

impl Summary {
    /// `accepted = written + dead_lettered + failed + returned`.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.written + self.dead_lettered + self.failed + self.returned
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(f, "== showcase report ==")?;
        writeln!(
            f,
            "throughput: {:.0} events/s ({} events in {:.2}s); latency p50 {:.2} ms, p99 {:.2} ms",
            self.accepted as f64 / secs.max(1e-9),
            self.accepted,
            secs,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "accounting: accepted {} = written {} + dead-lettered {} + failed {} + returned {}  [{}]",
            self.accepted,
            self.written,
            self.dead_lettered,
            self.failed,
            self.returned,
            if self.is_balanced() {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        )?;
        writeln!(
            f,
            "breaker: {} transitions, {} calls rejected while open; rate limit made callers wait {} times",
            self.transitions.len(),
            self.breaker_rejected,
            self.throttled
        )?;
        for t in self.transitions.iter().take(12) {
            writeln!(f, "  {t}")?;
        }
        if self.transitions.len() > 12 {
            writeln!(f, "  ... {} more", self.transitions.len() - 12)?;
        }
        writeln!(f, "\n{}", self.pipeline)?;
        writeln!(f, "{}", self.shutdown)?;
        write!(
            f,
            "\nfiles: {}, {}, {}",
            self.files.output.display(),
            self.files.dead_letters.display(),
            self.files.failed.display()
        )
    }
}

/// Builds the generator: `events` rows, about `malformed` of them broken,
/// paced at `rate` per second if given, stopping early when the pipeline
/// stops pulling (the pipeline's shutdown stops its source).
fn generator(cfg: &Config) -> impl futures::Stream<Item = Raw> + Send + 'static {
    let (events, seed, accounts, malformed, rate) =
        (cfg.events, cfg.seed, cfg.accounts, cfg.malformed, cfg.rate);
    let threshold = (malformed * u32::MAX as f64) as u64;
    let accounts = accounts.max(1);
    // `per_tick` events every `period`: ticks of about 10 ms (at most 100 a
    // second), so that any rate, not only multiples of 100, is kept.
    let pacing = rate.map(|r| {
        let r = r.max(1);
        let per_tick = r.div_ceil(100);
        (per_tick, Duration::from_nanos(1_000_000_000 * per_tick / r))
    });
    futures::stream::unfold(
        (0u64, seed | 1, None::<tokio::time::Interval>),
        move |(seq, mut x, mut ticker)| async move {
            if seq >= events {
                return None;
            }
            if let Some((per_tick, period)) = pacing {
                if seq % per_tick == 0 {
                    let t = ticker.get_or_insert_with(|| {
                        let mut t = tokio::time::interval(period);
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        t
                    });
                    t.tick().await;
                }
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let account = x % accounts;
            let amount = (x >> 20) % 100_000;
            let line = if (x >> 32) & 0xFFFF_FFFF < threshold {
                format!("{seq},acct-{account},not-a-number")
            } else {
                format!("{seq},acct-{account},{amount}")
            };
            let raw = Raw {
                seq,
                line,
                born: Instant::now(),
            };
            Some((raw, (seq + 1, x, ticker)))
        },
    )
}

fn parse(raw: Raw) -> Result<Event, BoxError> {
    let mut parts = raw.line.split(',');
    let (Some(_), Some(account), Some(amount), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected 3 fields".into());
    };
    let account = account
        .strip_prefix("acct-")
        .ok_or("account must start with acct-")?
        .parse()?;
    let amount_cents = amount.parse()?;
    Ok(Event {
        seq: raw.seq,
        account,
        amount_cents,
        born: raw.born,
    })
}

/// A file written from several stage workers.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl SharedFile {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(SharedFile(Arc::new(Mutex::new(BufWriter::new(
            File::create(path)?,
        )))))
    }

    fn line(&self, args: fmt::Arguments<'_>) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.write_fmt(args).and_then(|()| w.write_all(b"\n")) {
            tracing::error!(error = %e, "could not write an output line");
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// Runs the showcase to the end (or until the shutdown is triggered) and
/// returns what happened.
pub async fn run(cfg: Config) -> Result<Summary, BoxError> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.out_dir)?;
    let files = Files {
        output: cfg.out_dir.join("output.csv"),
        dead_letters: cfg.out_dir.join("dead_letters.csv"),
        failed: cfg.out_dir.join("failed.csv"),
    };
    let output = SharedFile::create(&files.output)?;
    let dead_letters = SharedFile::create(&files.dead_letters)?;
    let failed_file = SharedFile::create(&files.failed)?;

    let shutdown = Coordinator::builder()
        .phase("stop-accepting", Duration::from_secs(1))
        .phase("drain", Duration::from_secs(10))
        .phase("close", Duration::from_secs(5))
        .signals(cfg.signals)
        .build()?;

    // Progress output: a bar on a terminal, plain lines otherwise.
    let bar = (cfg.progress && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(cfg.events);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events  {per_sec}  {msg}",
            )
            .expect("valid template"),
        );
        pb
    });
    let say = {
        let bar = bar.clone();
        move |s: String| match &bar {
            Some(pb) => pb.println(s),
            None => println!("{s}"),
        }
    };

    // The guarded dependency: a breaker that trips on failures and on slow
    // calls, a rate limit, and a pool whose workers make the calls.
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let breaker = CircuitBreaker::builder()
        .name("dependency")
        .sliding_window(SlidingWindow::Count(100))
        .minimum_calls(50)
        .failure_rate(0.5)
        .slow_calls(Duration::from_millis(2), 0.5)
        .open_duration(Duration::from_millis(100))
        .half_open_probes(4)
        .on_transition({
            let transitions = transitions.clone();
            let say = say.clone();
            let t0 = started;
            move |t: &Transition| {
                let line = format!(
                    "{:>8.3}s breaker {} -> {} ({:?})",
                    (t.at - t0).as_secs_f64(),
                    t.from.as_str(),
                    t.to.as_str(),
                    t.reason
                );
                say(line.clone());
                transitions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line);
            }
        })
        .build()?;
    let pool = WorkerPool::builder()
        .name("enrich")
        .workers(64)
        .queue_capacity(1024)
        .timeout(Duration::from_secs(2))
        .build()?;
    let rate_limit = RateLimitLayer::new(
        Quota::per_second(NonZeroU32::new(2_000_000).expect("non-zero"))
            .allow_burst(NonZeroU32::new(20_000).expect("non-zero")),
    );
    let (events, inject) = (cfg.events, cfg.inject_failures);
    let dependency = tower::service_fn(move |e: Event| async move {
        match phase(e.seq, events, inject) {
            Phase::Failing => return Err::<Enriched, BoxError>(Box::new(Unavailable)),
            Phase::Slow => tokio::time::sleep(Duration::from_millis(4)).await,
            Phase::Healthy | Phase::Recovered => {}
        }
        let risk = ((e.account.wrapping_mul(2_654_435_761) ^ e.amount_cents as u64) % 100) as u32;
        Ok(Enriched { event: e, risk })
    });
    let enrich = ServiceBuilder::new()
        .layer(PoolLayer::new(pool.clone()))
        .layer(BreakerLayer::new(breaker.clone()))
        .layer(rate_limit)
        .service(dependency);
    let enrich_probe = enrich.clone();

    // The pipeline.
    let written = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        cfg.events.min(2_000_000) as usize
    )));
    let running = Pipeline::from_stream(generator(&cfg))
        .named("showcase")
        .try_map(
            Stage::new("parse")
                .workers(2)
                .on_error(OnError::dead_letter({
                    let dl = dead_letters.clone();
                    move |d: DeadLetter<Raw>| {
                        dl.line(format_args!(
                            "{},{:?},{}",
                            d.stage,
                            d.error.to_string(),
                            d.item.line
                        ))
                    }
                })),
            parse,
        )
        .service(
            Stage::new("enrich")
                .workers(32)
                .partition_by(|e: &Event| e.account)
                .on_error(OnError::dead_letter({
                    let f = failed_file.clone();
                    move |d: DeadLetter<Event>| {
                        f.line(format_args!(
                            "{},{},{:?}",
                            d.item.seq,
                            d.item.account,
                            d.error.to_string()
                        ))
                    }
                })),
            enrich,
        )
        .batch("batch", Batch::size(512).max_age(Duration::from_millis(20)))
        .for_each({
            let output = output.clone();
            let written = written.clone();
            let latencies = latencies.clone();
            move |batch: Vec<Enriched>| {
                let now = Instant::now();
                let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner());
                for e in &batch {
                    output.line(format_args!(
                        "{},{},{},{}",
                        e.event.seq, e.event.account, e.event.amount_cents, e.risk
                    ));
                    lat.push((now - e.event.born).as_micros() as u32);
                }
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        })
        .spawn()?;
    let running = Arc::new(running);

    // Shutdown order: the pipeline first (its source stops, its stages
    // drain, batches flush), then the pool that served it.
    shutdown.register("drain", "pipeline", running.clone())?;
    shutdown.register("close", "enrich pool", pool.clone())?;

    // The end of the input also ends the run.
    let end = shutdown.clone();
    let watched = running.clone();
    shutdown.spawn("end-of-input", move |cancel| async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if watched.is_finished() {
                end.trigger();
                return;
            }
        }
    })?;
    if let Some(after) = cfg.stop_after {
        let trigger = shutdown.clone();
        shutdown.spawn("stop-after", move |cancel| async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(after) => {
                    tracing::info!(after = ?after, "--stop-after elapsed: triggering shutdown");
                    trigger.trigger();
                }
            }
        })?;
    }
    // Live progress.
    if cfg.progress {
        let written = written.clone();
        let running = running.clone();
        let breaker = breaker.clone();
        let stop = shutdown.requested();
        let bar = bar.clone();
        shutdown.spawn("progress", move |cancel| async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(if bar.is_some() { 100 } else { 1000 }));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let stats = running.stats();
                let w = written.load(Ordering::Relaxed);
                let state = breaker.state();
                match &bar {
                    Some(pb) => {
                        pb.set_position(stats.items_in);
                        pb.set_message(format!("written {w}, breaker {}", state.as_str()));
                    }
                    None => println!(
                        "progress: {} in, {} written (+{}/s), {} dead-lettered or failed, breaker {}",
                        stats.items_in,
                        w,
                        w - last,
                        stats.failed + stats.dead_lettered,
                        state.as_str()
                    ),
                }
                last = w;
            }
        })?;
    }

    let shutdown_report = shutdown.run().await;
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let pipeline = running.stats();
    output.flush()?;
    dead_letters.flush()?;
    failed_file.flush()?;

    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|us| Duration::from_micros(u64::from(*us)))
            .unwrap_or_default()
    };
    let bstats = breaker.stats();
    // Malformed rows: what the parse stage dead-lettered.
    let dead_lettered: u64 = pipeline
        .stages
        .iter()
        .filter(|s| s.name == "parse")
        .map(|s| s.dead_lettered)
        .sum();
    let summary = Summary {
        accepted: pipeline.items_in,
        written: written.load(Ordering::Relaxed),
        dead_lettered,
        // Everything else that did not make it through a stage, so that no
        // outcome falls between the two counts.
        failed: pipeline.failed + pipeline.dead_lettered - dead_lettered,
        returned: pipeline.cancelled + pipeline.dropped,
        elapsed: started.elapsed(),
        p50: pct(0.50),
        p99: pct(0.99),
        transitions: std::mem::take(&mut *transitions.lock().unwrap_or_else(|p| p.into_inner())),
        breaker_rejected: bstats.rejected,
        throttled: enrich_probe.get_ref().get_ref().stats().throttled,
        pipeline,
        shutdown: shutdown_report,
        files,
    };
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_good_rows_and_explains_bad_ones() {
        let raw = |line: &str| Raw {
            seq: 1,
            line: line.to_owned(),
            born: Instant::now(),
        };
        let e = parse(raw("1,acct-7,1234")).unwrap();
        assert_eq!((e.account, e.amount_cents), (7, 1234));
        assert!(parse(raw("1,acct-7,not-a-number")).is_err());
        assert!(
            parse(raw("1,7,5"))
                .unwrap_err()
                .to_string()
                .contains("acct-")
        );
        assert!(parse(raw("1,acct-7")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_generator_keeps_to_the_rate_it_is_given() {
        use futures::StreamExt;
        for (rate, events) in [(150, 300), (50, 100), (20_000, 40_000)] {
            let cfg = Config {
                events,
                rate: Some(rate),
                ..Config::default()
            };
            let start = Instant::now();
            let n = generator(&cfg).count().await as u64;
            assert_eq!(n, events);
            // `events / rate` seconds: 2 s for every case, give or take the
            // first tick (which fires at once).
            let took = start.elapsed();
            assert!(
                took > Duration::from_millis(1900) && took <= Duration::from_secs(2),
                "rate {rate}: {events} events took {took:?}"
            );
        }
    }

    #[test]
    fn phases_cover_the_run_in_order() {
        let p: Vec<Phase> = [0, 29, 30, 39, 40, 49, 50, 99]
            .iter()
            .map(|s| phase(*s, 100, true))
            .collect();
        assert_eq!(
            p,
            [
                Phase::Healthy,
                Phase::Healthy,
                Phase::Failing,
                Phase::Failing,
                Phase::Slow,
                Phase::Slow,
                Phase::Recovered,
                Phase::Recovered
            ]
        );
        assert_eq!(phase(35, 100, false), Phase::Healthy);
    }

    #[test]
    fn flags_parse_and_bad_flags_say_what_to_do() {
        let cfg = Config::from_args(
            [
                "--events",
                "10",
                "--rate",
                "100",
                "--stop-after",
                "1.5",
                "--no-failures",
            ]
            .map(String::from),
        )
        .unwrap();
        assert_eq!(cfg.events, 10);
        assert_eq!(cfg.rate, Some(100));
        assert_eq!(cfg.stop_after, Some(Duration::from_millis(1500)));
        assert!(!cfg.inject_failures);
        assert!(
            Config::from_args(["--events".to_owned()])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            Config::from_args(["--rate", "0"].map(String::from))
                .unwrap_err()
                .contains("leave it out")
        );
        assert!(
            Config::from_args(["--bogus".to_owned()])
                .unwrap_err()
                .contains("usage")
        );
    }
}

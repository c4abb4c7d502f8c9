//! weft's benchmark harness: the reference workload, the side-by-side cases
//! run by the `compare` binary, and helpers shared with the criterion benches.
//!
//! Each pattern adds one module under [`cases`] exposing a `GROUP: Group`, and
//! lists it in [`groups`]. A group pushes [`Row`]s; the `compare` binary prints
//! them as `CASE<TAB>IMPL<TAB>VALUE<TAB>UNIT`, then a ratio table pairing every
//! weft implementation (impl name starting with `weft`) with every peer in the
//! same case, then the targets the issues set.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

pub mod cases;
pub mod report;
pub mod workload;

/// Settings for one `compare` run.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `--quick`: fewer samples, so the whole run stays under 60 s on 2 cores.
    pub quick: bool,
    /// `--filter`: only cases whose name contains one of these (all if empty).
    pub filters: Vec<String>,
}

impl Ctx {
    /// Samples per measurement: the median of these is reported.
    pub fn samples(&self) -> usize {
        if self.quick { 3 } else { 9 }
    }

    /// Whether a case is selected by the filters.
    pub fn wants(&self, case: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| case.contains(f.as_str()))
    }
}

/// The unit of a measurement, which also says which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Items (jobs, messages, calls) per second; higher is better.
    ItemsPerSec,
    /// Nanoseconds per call; lower is better.
    NsPerCall,
    /// Bytes (memory); lower is better.
    Bytes,
    /// Milliseconds (a latency or a duration); lower is better.
    Millis,
}

impl Unit {
    /// The label printed in the `UNIT` column.
    pub fn label(self) -> &'static str {
        match self {
            Unit::ItemsPerSec => "items/s",
            Unit::NsPerCall => "ns/call",
            Unit::Bytes => "bytes",
            Unit::Millis => "ms",
        }
    }

    /// The unit printed as `label` (see [`Unit::label`]).
    pub fn from_label(label: &str) -> Option<Unit> {
        [
            Unit::ItemsPerSec,
            Unit::NsPerCall,
            Unit::Bytes,
            Unit::Millis,
        ]
        .into_iter()
        .find(|u| u.label() == label)
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::ItemsPerSec)
    }
}

/// One measurement: `CASE<TAB>IMPL<TAB>VALUE<TAB>UNIT`.
#[derive(Debug, Clone)]
pub struct Row {
    /// The workload, shared by every implementation compared on it
    /// (for example `jobs/iters=0`).
    pub case: String,
    /// The implementation; weft's own start with `weft`.
    pub imp: String,
    /// The median value.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
}

impl Row {
    /// A row.
    pub fn new(case: impl Into<String>, imp: impl Into<String>, value: f64, unit: Unit) -> Row {
        Row {
            case: case.into(),
            imp: imp.into(),
            value,
            unit,
        }
    }
}

/// A target an issue sets: `weft / peer >= at_least` (in "better" terms, so
/// for ns/call the ratio is peer / weft).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The case.
    pub case: &'static str,
    /// The weft implementation.
    pub weft: &'static str,
    /// The peer implementation.
    pub peer: &'static str,
    /// The minimum ratio.
    pub at_least: f64,
}

/// A target on an absolute cost: `weft` may add at most `at_most_ns`
/// nanoseconds per call over `peer` (both rows in ns/call, same run).
#[derive(Debug, Clone, Copy)]
pub struct Overhead {
    /// The case.
    pub case: &'static str,
    /// The weft implementation.
    pub weft: &'static str,
    /// The peer implementation.
    pub peer: &'static str,
    /// The most weft may add, in ns per call.
    pub at_most_ns: f64,
}

/// The cases of one pattern.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The pattern's name (`reference`, `pool`, ...).
    pub name: &'static str,
    /// Runs the group's cases that `ctx` selects and pushes their rows.
    pub run: fn(&Ctx, &mut Vec<Row>),
    /// The targets the pattern's issue sets.
    pub targets: &'static [Target],
    /// The targets on added cost (ns per call) the pattern's issue sets.
    pub overheads: &'static [Overhead],
}

/// Every group, in the order `compare` runs them.
pub fn groups() -> Vec<Group> {
    vec![
        cases::reference::GROUP,
        cases::fanout::GROUP,
        cases::exec::GROUP,
        cases::breaker::GROUP,
        cases::pool::GROUP,
        cases::pipeline::GROUP,
        cases::actor::GROUP,
        cases::coord::GROUP,
    ]
}

/// Runs `f` `samples` times and returns the median of the durations it
/// reports (each call times its own measured section).
pub fn median(samples: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..samples.max(1)).map(|_| f()).collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// Runs each measurement `rounds` times, interleaved (every implementation
/// once per round) so that a noisy neighbour or a slow spell of the machine
/// hits every implementation alike, and returns each one's median, in
/// order. Each round takes the implementations in a new order (a shuffle
/// with a fixed seed, so runs are repeatable), so that none always runs
/// first, or always right after the same other one (and inherits, say, the
/// allocator state that one leaves behind).
pub fn interleaved(rounds: usize, fs: &mut [&mut dyn FnMut() -> Duration]) -> Vec<Duration> {
    let n = fs.len();
    let mut times = vec![Vec::with_capacity(rounds.max(1)); n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..rounds.max(1) {
        for i in (1..n).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            times[i].push(fs[i]());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_unstable();
            t[t.len() / 2]
        })
        .collect()
}

/// Times `f` once.
pub fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// A throughput row: `items` per median duration of `ctx.samples()` runs.
pub fn throughput(
    ctx: &Ctx,
    case: &str,
    imp: &str,
    items: u64,
    f: impl FnMut() -> Duration,
) -> Row {
    let d = median(ctx.samples(), f);
    Row::new(case, imp, items as f64 / d.as_secs_f64(), Unit::ItemsPerSec)
}

/// A per-call cost row: the median duration of `ctx.samples()` runs of
/// `calls` calls each, divided by `calls`.
pub fn ns_per_call(
    ctx: &Ctx,
    case: &str,
    imp: &str,
    calls: u64,
    f: impl FnMut() -> Duration,
) -> Row {
    let d = median(ctx.samples(), f);
    Row::new(
        case,
        imp,
        d.as_nanos() as f64 / calls as f64,
        Unit::NsPerCall,
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::{Group, Overhead, Row, Unit, interleaved, report};

    /// Every implementation runs once per round, the order changes between
    /// rounds, and each gets the median of its own samples.
    #[test]
    fn interleaved_runs_each_once_per_round_in_shuffled_orders() {
        let log = RefCell::new(Vec::new());
        let mut calls = [0u64; 4];
        let mut fs: Vec<Box<dyn FnMut() -> Duration + '_>> = Vec::new();
        for (i, c) in calls.iter_mut().enumerate() {
            let log = &log;
            fs.push(Box::new(move || {
                *c += 1;
                log.borrow_mut().push(i);
                // Samples 1, 2, ..., so the median of 9 is 5 (+ i * 100).
                Duration::from_nanos(*c + i as u64 * 100)
            }));
        }
        let mut refs: Vec<&mut dyn FnMut() -> Duration> = fs
            .iter_mut()
            .map(|f| &mut **f as &mut dyn FnMut() -> Duration)
            .collect();
        let medians = interleaved(9, &mut refs);
        drop(refs);
        drop(fs);
        assert_eq!(calls, [9; 4]);
        let log = log.into_inner();
        let rounds: Vec<&[usize]> = log.chunks(4).collect();
        for r in &rounds {
            let mut sorted = r.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3], "each once per round: {r:?}");
        }
        assert!(
            rounds.windows(2).any(|w| w[0] != w[1]),
            "the order changes between rounds"
        );
        let expected: Vec<Duration> = (0..4).map(|i| Duration::from_nanos(5 + i * 100)).collect();
        assert_eq!(medians, expected);
    }

    /// Overhead targets: met at or under the bound, missed over it, and
    /// left out when the rows are not ns per call.
    #[test]
    fn overhead_targets_compare_added_nanoseconds() {
        fn run(_: &super::Ctx, _: &mut Vec<Row>) {}
        const GROUP: Group = Group {
            name: "g",
            run,
            overheads: &[
                Overhead {
                    case: "a",
                    weft: "weft",
                    peer: "peer",
                    at_most_ns: 20.0,
                },
                Overhead {
                    case: "b",
                    weft: "weft",
                    peer: "peer",
                    at_most_ns: 20.0,
                },
                Overhead {
                    case: "c",
                    weft: "weft",
                    peer: "peer",
                    at_most_ns: 20.0,
                },
            ],
            targets: &[],
        };
        let rows = [
            Row::new("a", "weft", 30.0, Unit::NsPerCall),
            Row::new("a", "peer", 10.0, Unit::NsPerCall),
            Row::new("b", "weft", 31.0, Unit::NsPerCall),
            Row::new("b", "peer", 10.0, Unit::NsPerCall),
            Row::new("c", "weft", 99.0, Unit::ItemsPerSec),
            Row::new("c", "peer", 1.0, Unit::ItemsPerSec),
        ];
        let table = report::target_table(&[GROUP], &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(
            lines[0].contains("+20.0 ns/call") && lines[0].ends_with("met"),
            "{table}"
        );
        assert!(
            lines[1].contains("+21.0 ns/call") && lines[1].ends_with("MISSED"),
            "{table}"
        );
    }
}

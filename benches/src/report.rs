//! Printing a `compare` run: the rows, the ratio table, the targets, and
//! docs/benchmarks.md with its chart.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::{Group, Row, Unit};

/// One weft implementation against one peer in one case.
#[derive(Debug, Clone)]
pub struct Ratio {
    /// The case.
    pub case: String,
    /// The weft implementation.
    pub weft: String,
    /// The peer.
    pub peer: String,
    /// How many times better weft is (>1 is better, whatever the unit).
    pub ratio: f64,
}

fn is_weft(imp: &str) -> bool {
    imp.starts_with("weft")
}

/// How many times better `a` is than `b` (same unit).
pub fn better(a: &Row, b: &Row) -> f64 {
    if a.unit.higher_is_better() {
        a.value / b.value
    } else {
        b.value / a.value
    }
}

/// Every weft row paired with every peer row of the same case.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for w in rows.iter().filter(|r| is_weft(&r.imp)) {
        for p in rows
            .iter()
            .filter(|r| r.case == w.case && !is_weft(&r.imp) && r.unit == w.unit)
        {
            out.push(Ratio {
                case: w.case.clone(),
                weft: w.imp.clone(),
                peer: p.imp.clone(),
                ratio: better(w, p),
            });
        }
    }
    out
}

/// Reads back the rows that [`rows_tsv`] printed (other lines are skipped).
pub fn parse_rows(tsv: &str) -> Vec<Row> {
    tsv.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [case, imp, value, unit] = cols[..] else {
                return None;
            };
            Some(Row::new(
                case,
                imp,
                value.parse().ok()?,
                Unit::from_label(unit)?,
            ))
        })
        .collect()
}

/// One row per case and implementation: the median of its values over
/// several runs (in the order rows first appear).
pub fn median_rows(runs: &[Vec<Row>]) -> Vec<Row> {
    let mut out: Vec<(Row, Vec<f64>)> = Vec::new();
    for row in runs.iter().flatten() {
        match out
            .iter_mut()
            .find(|(r, _)| r.case == row.case && r.imp == row.imp && r.unit == row.unit)
        {
            Some((_, values)) => values.push(row.value),
            None => out.push((row.clone(), vec![row.value])),
        }
    }
    out.into_iter()
        .map(|(mut row, mut values)| {
            values.sort_by(f64::total_cmp);
            row.value = values[values.len() / 2];
            row
        })
        .collect()
}

/// A line per row, `CASE<TAB>IMPL<TAB>VALUE<TAB>UNIT`.
pub fn rows_tsv(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(
            s,
            "{}\t{}\t{:.1}\t{}",
            r.case,
            r.imp,
            r.value,
            r.unit.label()
        );
    }
    s
}

/// The ratio table as aligned text.
pub fn ratio_table(ratios: &[Ratio]) -> String {
    let mut s = String::new();
    if ratios.is_empty() {
        s.push_str("(no weft rows in this run: nothing to compare)\n");
        return s;
    }
    let _ = writeln!(
        s,
        "{:<32} {:<28} {:<28} {:>8}",
        "case", "weft", "peer", "ratio"
    );
    for r in ratios {
        let _ = writeln!(
            s,
            "{:<32} {:<28} {:<28} {:>7.2}x",
            r.case, r.weft, r.peer, r.ratio
        );
    }
    s
}

/// The targets of the groups, checked against this run's rows (targets
/// whose rows were not measured in this run are left out). A target may
/// compare two weft implementations (for example batched against
/// unbatched), so it is computed from the rows, not from [`ratios`].
pub fn target_table(groups: &[Group], rows: &[Row]) -> String {
    let mut s = String::new();
    let find = |case: &str, imp: &str| rows.iter().find(|r| r.case == case && r.imp == imp);
    for g in groups {
        for t in g.targets {
            if let (Some(w), Some(p)) = (find(t.case, t.weft), find(t.case, t.peer)) {
                let ratio = better(w, p);
                let verdict = if ratio >= t.at_least { "met" } else { "MISSED" };
                let _ = writeln!(
                    s,
                    "{:<10} {:<28} {} vs {}: {:.2}x (target >= {:.2}x) {}",
                    g.name, t.case, t.weft, t.peer, ratio, t.at_least, verdict
                );
            }
        }
        for t in g.overheads {
            if let (Some(w), Some(p)) = (find(t.case, t.weft), find(t.case, t.peer)) {
                if w.unit != Unit::NsPerCall || p.unit != Unit::NsPerCall {
                    continue;
                }
                let added = w.value - p.value;
                let verdict = if added <= t.at_most_ns {
                    "met"
                } else {
                    "MISSED"
                };
                let _ = writeln!(
                    s,
                    "{:<10} {:<28} {} vs {}: {:+.1} ns/call (target <= {:+.1} ns) {}",
                    g.name, t.case, t.weft, t.peer, added, t.at_most_ns, verdict
                );
            }
        }
    }
    s
}

/// Describes the machine a run was made on.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "{} logical cores ({cpu}), {} {}",
        crate::workload::workers(),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Writes docs/benchmarks.md and docs/benchmarks.svg from one run.
pub fn write_docs(
    dir: &Path,
    command: &str,
    groups: &[Group],
    rows: &[Row],
) -> std::io::Result<()> {
    let ratios = ratios(rows);
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Generated by `compare --write-docs` from one run; every figure below comes from \
         that run. The machine is shared and noisy, so read the ratios, not the absolute \
         values: implementations compared on one case are measured in the same rounds, \
         taking turns. Each value is the median of its samples; with `--processes N` it is \
         the median, across N fresh processes of `compare`, of each process's median (on \
         this VM a whole process can land in a slow spell, where everything that uses \
         both cores runs at about half speed).\n\n",
    );
    let _ = writeln!(md, "- Command: `{command}`");
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(
        md,
        "- Reference workload (DESIGN.md): {} jobs, job `i` = `iters` rounds of xorshift64 \
         from `i`, workers = available parallelism, queue capacity {}, every result summed.\n",
        crate::workload::JOBS,
        crate::workload::QUEUE
    );
    md.push_str(
        "![ratios](benchmarks.svg)\n\n## Ratios (weft / peer, >1 means weft is better)\n\n",
    );
    md.push_str("| case | weft | peer | ratio |\n|---|---|---|---|\n");
    for r in &ratios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2}x |",
            r.case, r.weft, r.peer, r.ratio
        );
    }
    let targets = target_table(groups, rows);
    if !targets.is_empty() {
        md.push_str("\n## Targets set by the issues\n\n```\n");
        md.push_str(&targets);
        md.push_str("```\n");
    }
    md.push_str("\n## Rows\n\n| case | implementation | value | unit |\n|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {} |",
            r.case,
            r.imp,
            r.value,
            r.unit.label()
        );
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("benchmarks.md"), md)?;
    chart(&dir.join("benchmarks.svg"), rows).map_err(std::io::Error::other)
}

/// A bar per row: its value relative to the best implementation of its case
/// (1.0 = the best), so cases with different units share one axis.
fn chart(path: &Path, rows: &[Row]) -> Result<(), String> {
    let bars: Vec<(String, f64, bool)> = rows
        .iter()
        .map(|r| {
            let best = rows
                .iter()
                .filter(|o| o.case == r.case && o.unit == r.unit)
                .map(|o| better(o, r))
                .fold(1.0_f64, f64::max);
            (
                format!("{} · {}", r.case, r.imp),
                1.0 / best,
                is_weft(&r.imp),
            )
        })
        .collect();
    let height = 80 + 22 * bars.len().max(1) as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = bars.len().max(1) as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Relative performance per case (1.0 = best in case; weft in blue)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0.0..1.05_f64, (0..n).into_segmented())
        .map_err(|e| e.to_string())?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("relative to the best implementation of the case")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            Histogram::horizontal(&chart)
                .margin(3)
                .style_func(|y, _| {
                    let weft = match y {
                        SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => {
                            bars.get(*i as usize).is_some_and(|b| b.2)
                        }
                        SegmentValue::Last => false,
                    };
                    if weft {
                        BLUE.mix(0.8).filled()
                    } else {
                        BLACK.mix(0.35).filled()
                    }
                })
                .data(bars.iter().enumerate().map(|(i, b)| (i as i32, b.1))),
        )
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

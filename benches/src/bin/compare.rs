//! Runs weft and its peers side by side and prints
//! `CASE<TAB>IMPL<TAB>VALUE<TAB>UNIT` lines, then a table of ratios.
//!
//! ```text
//! cargo run --release -p weft-benches --bin compare -- [--quick] [--processes N] [--write-docs] [CASE-FILTER...]
//! ```
//!
//! `--quick` takes fewer samples per measurement (under 60 s on 2 cores).
//! Filters keep the cases whose name contains any of them (`jobs`,
//! `breaker`, ...). `--processes N` runs the whole comparison in N fresh
//! processes, one after the other, and reports each row's median across
//! them: on a shared VM a whole process can land in a slow spell, and the
//! median of several processes is steadier than any one. `--write-docs`
//! refreshes docs/benchmarks.md and docs/benchmarks.svg from this run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use weft_benches::{Ctx, groups, report};

fn main() {
    let mut quick = false;
    let mut write_docs = false;
    let mut processes = 1usize;
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--write-docs" => write_docs = true,
            "--processes" => {
                processes = match args.next().and_then(|n| n.parse().ok()) {
                    Some(n) if n >= 1 => n,
                    _ => {
                        eprintln!(
                            "compare: --processes takes a count of at least 1, e.g. --processes 3"
                        );
                        std::process::exit(2);
                    }
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: compare [--quick] [--processes N] [--write-docs] [CASE-FILTER...]\n\
                     groups: {}",
                    groups()
                        .iter()
                        .map(|g| g.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return;
            }
            f if f.starts_with("--") => {
                eprintln!("compare: unknown flag {f}; see --help");
                std::process::exit(2);
            }
            f => filters.push(f.to_owned()),
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("compare: this is a debug build; run with --release for meaningful figures");
    }
    let ctx = Ctx { quick, filters };
    let groups = groups();
    let started = Instant::now();
    let rows = if processes > 1 {
        in_processes(processes, &ctx)
    } else {
        let mut rows = Vec::new();
        run_groups(&ctx, &groups, &mut rows);
        rows
    };
    print_summary(&groups, &rows, started);
    if write_docs {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let mut command = String::from("cargo run --release -p weft-benches --bin compare --");
        for a in std::env::args().skip(1) {
            command.push(' ');
            command.push_str(&a);
        }
        match report::write_docs(&docs, &command, &groups, &rows) {
            Ok(()) => println!("wrote docs/benchmarks.md and docs/benchmarks.svg"),
            Err(e) => {
                eprintln!("compare: could not write docs: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Runs every group in this process, printing each group's rows as it ends.
fn run_groups(ctx: &Ctx, groups: &[weft_benches::Group], rows: &mut Vec<weft_benches::Row>) {
    let stdout = std::io::stdout();
    for g in groups {
        let before = rows.len();
        let group_started = Instant::now();
        (g.run)(ctx, rows);
        eprintln!(
            "# group {} took {:.1}s",
            g.name,
            group_started.elapsed().as_secs_f64()
        );
        let mut out = stdout.lock();
        let _ = out.write_all(report::rows_tsv(&rows[before..]).as_bytes());
        let _ = out.flush();
    }
}

/// Runs this comparison in `n` child processes, one after the other, and
/// returns each row's median across them (printed as they are).
fn in_processes(n: usize, ctx: &Ctx) -> Vec<weft_benches::Row> {
    let exe = std::env::current_exe().expect("the compare executable's path");
    let mut runs = Vec::with_capacity(n);
    for i in 1..=n {
        let mut cmd = std::process::Command::new(&exe);
        if ctx.quick {
            cmd.arg("--quick");
        }
        cmd.args(&ctx.filters);
        cmd.stderr(std::process::Stdio::inherit());
        let out = cmd.output().expect("run a compare child process");
        if !out.status.success() {
            eprintln!("compare: child process {i} of {n} failed ({})", out.status);
            std::process::exit(1);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.contains("(target ")) {
            eprintln!("# process {i}/{n}: {}", line.trim());
        }
        runs.push(report::parse_rows(&text));
    }
    let rows = report::median_rows(&runs);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report::rows_tsv(&rows).as_bytes());
    rows
}

/// The ratio table, the targets and the run's size and machine.
fn print_summary(groups: &[weft_benches::Group], rows: &[weft_benches::Row], started: Instant) {
    let ratios = report::ratios(rows);
    println!("\n# ratios (weft / peer; >1 means weft is better)");
    print!("{}", report::ratio_table(&ratios));
    let targets = report::target_table(groups, rows);
    if !targets.is_empty() {
        println!("\n# targets");
        print!("{targets}");
    }
    println!(
        "\n# {} rows in {:.1}s on {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        report::machine()
    );
}

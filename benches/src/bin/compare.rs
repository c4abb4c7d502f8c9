//! Runs weft and its peers side by side and prints
//! `CASE<TAB>IMPL<TAB>VALUE<TAB>UNIT` lines, then a table of ratios.
//!
//! ```text
//! cargo run --release -p weft-benches --bin compare -- [--quick] [--write-docs] [CASE-FILTER...]
//! ```
//!
//! `--quick` takes 3 samples per measurement (under 60 s on 2 cores);
//! otherwise 9. Filters keep the cases whose name contains any of them
//! (`jobs`, `breaker`, ...). `--write-docs` refreshes docs/benchmarks.md and
//! docs/benchmarks.svg from this run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use weft_benches::{Ctx, groups, report};

fn main() {
    let mut quick = false;
    let mut write_docs = false;
    let mut filters = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--write-docs" => write_docs = true,
            "-h" | "--help" => {
                println!(
                    "usage: compare [--quick] [--write-docs] [CASE-FILTER...]\n\
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
    let mut rows = Vec::new();
    let stdout = std::io::stdout();
    for g in &groups {
        let before = rows.len();
        let group_started = Instant::now();
        (g.run)(&ctx, &mut rows);
        eprintln!(
            "# group {} took {:.1}s",
            g.name,
            group_started.elapsed().as_secs_f64()
        );
        let mut out = stdout.lock();
        let _ = out.write_all(report::rows_tsv(&rows[before..]).as_bytes());
        let _ = out.flush();
    }
    let ratios = report::ratios(&rows);
    println!("\n# ratios (weft / peer; >1 means weft is better)");
    print!("{}", report::ratio_table(&ratios));
    let targets = report::target_table(&groups, &rows);
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

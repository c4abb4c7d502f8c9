//! A typed pipeline over a CSV-like stream, with every weft-pipeline idea in
//! one place:
//!
//! - **parse** (2 workers, ordered): malformed rows go to a dead-letter
//!   file with the row and the error, and the pipeline goes on;
//! - **enrich** (8 workers, per-key ordered): a slow async lookup per row;
//!   rows of one account stay in order, different accounts run in parallel;
//! - **batch**: up to 100 rows, or 20 ms after the first row of a batch;
//! - **check-order** (1 worker): checks each account's rows are still in
//!   id order;
//! - **write** (2 workers): one slow async "database write" per batch;
//! - then the per-stage report, which names the bottleneck.
//!
//! Finally it shows the lesson of docs/pipeline.md: for cheap work, a
//! pipeline is slower than a loop, and the report says so.
//!
//! Run: `cargo run --example pipeline`
//!
//! Look for: `rows in = written + dead-lettered` adding up, the dead-letter
//! file's path and line count, `per-account order kept: true`, the report
//! table (enrich is the busiest stage), and the loop-vs-pipeline timing.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_pipeline::{Batch, Pipeline, Stage};

const ROWS: u64 = 2_000;

/// One parsed row.
#[derive(Debug, Clone)]
struct Txn {
    id: u64,
    account: String,
    amount_cents: i64,
}

/// A row after the lookup.
#[derive(Debug)]
struct Enriched {
    txn: Txn,
    region: &'static str,
}

/// The generated input (a stream in the example; a file or a socket in a
/// service): `id,account,amount`, with a malformed row now and
/// then (a missing field, or an amount that is not a number).
fn csv_lines() -> impl Iterator<Item = String> {
    (0..ROWS).map(|id| match id % 97 {
        13 => format!("{id},acct-{}", id % 12),
        41 => format!("{id},acct-{},12.x4", id % 12),
        _ => format!("{id},acct-{},{}.{:02}", id % 12, id % 500, id % 100),
    })
}

fn parse(line: String) -> Result<Txn, String> {
    let mut fields = line.split(',');
    let (Some(id), Some(account), Some(amount), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("expected 3 fields in {line:?}"));
    };
    let id = id.parse().map_err(|e| format!("bad id: {e}"))?;
    let (units, cents) = amount.split_once('.').unwrap_or((amount, "0"));
    let units: i64 = units.parse().map_err(|e| format!("bad amount: {e}"))?;
    let cents: i64 = cents.parse().map_err(|e| format!("bad amount: {e}"))?;
    Ok(Txn {
        id,
        account: account.to_owned(),
        amount_cents: units * 100 + cents,
    })
}

/// A slow lookup (think: an HTTP call to an account service).
async fn lookup(txn: Txn) -> Enriched {
    tokio::time::sleep(Duration::from_millis(2)).await;
    let region = if txn.account.ends_with(['0', '2', '4', '6', '8']) {
        "eu"
    } else {
        "us"
    };
    Enriched { txn, region }
}

#[tokio::main]
async fn main() {
    weft_examples::init_tracing();

    let dead_path = std::env::temp_dir().join("weft-pipeline-dead-letters.txt");
    let dead_file = Arc::new(Mutex::new(std::io::BufWriter::new(
        std::fs::File::create(&dead_path).expect("create the dead-letter file"),
    )));
    let written = Arc::new(AtomicU64::new(0));
    let order_kept = Arc::new(Mutex::new((HashMap::<String, u64>::new(), true)));

    let dead = dead_file.clone();
    let (w, order) = (written.clone(), order_kept.clone());
    let result = Pipeline::from_stream(futures::stream::iter(csv_lines()))
        .named("transactions")
        .try_map(
            Stage::new("parse").workers(2).dead_letter(move |letter| {
                let mut f = dead.lock().unwrap();
                let _ = writeln!(f, "{}\t{}\t{}", letter.stage, letter.item, letter.error);
            }),
            parse,
        )
        .then_by_key("enrich", 8, |t: &Txn| t.account.clone(), lookup)
        .batch("batch", Batch::size(100).max_age(Duration::from_millis(20)))
        // One sequential look at the batches as they leave the batch stage:
        // each account's rows must still be in id order.
        .inspect("check-order", move |rows: &Vec<Enriched>| {
            let mut order = order.lock().unwrap();
            let (last, kept) = &mut *order;
            for r in rows {
                if let Some(prev) = last.insert(r.txn.account.clone(), r.txn.id) {
                    *kept &= prev < r.txn.id;
                }
            }
        })
        .then(
            Stage::new("write").workers(2),
            move |rows: Vec<Enriched>| {
                let w = w.clone();
                async move {
                    // One round trip per batch, not per row.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    w.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    let eu = rows.iter().filter(|r| r.region == "eu").count();
                    let cents: i64 = rows.iter().map(|r| r.txn.amount_cents).sum();
                    (rows.len(), eu, cents)
                }
            },
        )
        .collect()
        .run()
        .await;
    dead_file
        .lock()
        .unwrap()
        .flush()
        .expect("flush dead letters");

    let (batches, report) = match result {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("pipeline failed: {e}");
            std::process::exit(1);
        }
    };
    let written = written.load(Ordering::Relaxed);
    let dead_lines = std::fs::read_to_string(&dead_path)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let eu: usize = batches.iter().map(|b| b.1).sum();
    println!(
        "rows in {} = written {} + dead-lettered {}: {}",
        report.items_in,
        written,
        report.dead_lettered,
        report.items_in == written + report.dead_lettered
    );
    println!(
        "{} write batches ({} rows in the eu region)",
        batches.len(),
        eu
    );
    println!(
        "dead letters: {} lines in {}",
        dead_lines,
        dead_path.display()
    );
    println!("per-account order kept: {}", order_kept.lock().unwrap().1);
    println!("\n{report}");
    if let Some(b) = report.bottleneck() {
        println!(
            "bottleneck: {:?} ({:.0}% busy) -> give it more workers, or make it cheaper\n",
            b.name,
            b.utilisation() * 100.0
        );
    }

    // The lesson: a pipeline for cheap work is slower than a loop.
    let items: Vec<u64> = (0..1_000_000).collect();
    let start = std::time::Instant::now();
    let looped: u64 = items.iter().map(|x| x * 3 + 1).sum();
    let loop_time = start.elapsed();
    let start = std::time::Instant::now();
    let (piped, cheap) = Pipeline::from_iter(items)
        .named("cheap")
        .map(Stage::new("x*3+1").workers(2), |x| x * 3 + 1)
        .collect()
        .run()
        .await
        .expect("cheap pipeline");
    let pipe_time = start.elapsed();
    assert_eq!(looped, piped.iter().sum::<u64>());
    println!(
        "cheap work, 1,000,000 items: loop {:.2} ms, pipeline {:.2} ms",
        loop_time.as_secs_f64() * 1e3,
        pipe_time.as_secs_f64() * 1e3
    );
    let stage = &cheap.stages[1];
    println!(
        "  the report shows why: {:?} was busy {:.0}% of its time; the rest is hand-offs",
        stage.name,
        stage.utilisation() * 100.0
    );
}

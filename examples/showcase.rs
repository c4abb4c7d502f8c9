//! The showcase: an event-processing service built from weft's crates.
//!
//! What it shows: a generator feeds 1,000,000 events (accounts, amounts,
//! about 1% malformed) into a weft-pipeline: `parse` (malformed rows go to a
//! dead-letter file), `enrich` (per account, in order, through a tower stack
//! of a weft-pool running the calls, a weft-breaker guarding the dependency
//! and a weft-exec rate limit), `batch` and a file sink. The simulated
//! dependency goes healthy, failing, slow, then recovers, so the breaker
//! visibly trips and closes again. weft-shutdown stops it all on Ctrl-C,
//! `--stop-after SECS`, or the end of the input: the source stops, the
//! pipeline drains, the pool drains, and the report accounts for every event.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example showcase
//! cargo run --release --example showcase -- --events 200000 --rate 50000 --stop-after 2
//! cargo run --release --example showcase -- --help
//! ```
//!
//! What to look for: breaker transitions printed as they happen; a final
//! report with throughput, p50/p99 latency, the per-stage table (the
//! bottleneck stage is the busiest), the shutdown report, and the line
//! `accepted = written + dead-lettered + failed + returned [balanced]`. The
//! example exits non-zero if the counts do not add up.

#[tokio::main]
async fn main() {
    weft_examples::init_tracing_with("error");
    let cfg = match weft_examples::showcase::Config::from_args(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    println!(
        "showcase: {} events, output in {}",
        cfg.events,
        cfg.out_dir.display()
    );
    match weft_examples::showcase::run(cfg).await {
        Ok(summary) => {
            println!("{summary}");
            if !summary.is_balanced() {
                eprintln!("showcase: the counts do not add up");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("showcase failed: {e}");
            std::process::exit(1);
        }
    }
}

//! Runs one implementation of the reference workload, alone, for a
//! profiler: `perf record`, or `valgrind --tool=callgrind` for instruction
//! counts that do not depend on the machine's noise.
//!
//! ```text
//! cargo build --release -p weft-benches --bin profile
//! valgrind --tool=callgrind target/release/profile weft-exec-spawn 0 200000 --current-thread
//! perf record -g target/release/profile semaphore-spawn 0
//! ```
//!
//! Arguments: `IMPL [ITERS [JOBS]] [--current-thread]`; IMPL is a name from
//! the `jobs/iters=N` rows (`weft-exec-spawn`, `semaphore-spawn`,
//! `weft-pool-submit`, `joinset-semaphore`, ...). It prints the sum (checked)
//! and the throughput.

use std::time::Instant;

use weft_benches::cases::reference;
use weft_benches::workload;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let current_thread = args.iter().any(|a| a == "--current-thread");
    args.retain(|a| a != "--current-thread");
    let usage = || {
        eprintln!(
            "usage: profile IMPL [ITERS [JOBS]] [--current-thread]\nIMPL: {}",
            reference::implementation_names().join(", ")
        );
        std::process::exit(2);
    };
    let Some(name) = args.first() else { usage() };
    let Some(imp) = reference::implementation(name) else {
        usage()
    };
    let number = |i: usize, default: u64| match args.get(i).map(|s| s.parse::<u64>()) {
        None => default,
        Some(Ok(n)) => n,
        Some(Err(_)) => usage(),
    };
    let iters = u32::try_from(number(1, 0)).unwrap_or_else(|_| usage());
    let jobs = number(2, workload::JOBS / 2);
    let rt = if current_thread {
        workload::current_thread()
    } else {
        workload::runtime()
    };
    let start = Instant::now();
    let sum = rt.block_on(imp(jobs, iters));
    let took = start.elapsed();
    assert_eq!(
        sum,
        workload::expected_sum(jobs, iters),
        "{name}: wrong sum"
    );
    println!(
        "{name}\titers={iters}\tjobs={jobs}\t{:.0} jobs/s\t{}",
        jobs as f64 / took.as_secs_f64(),
        if current_thread {
            "current-thread"
        } else {
            "multi-thread"
        }
    );
}

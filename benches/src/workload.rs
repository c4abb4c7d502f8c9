//! The reference workload of DESIGN.md, used wherever a pool or an executor
//! is compared: 1,000,000 jobs; job `i` runs `iters` rounds of xorshift64
//! starting from `x = i`; workers = available parallelism; queue capacity
//! 10,000; the caller sums every result.

/// Jobs per run.
pub const JOBS: u64 = 1_000_000;

/// Queue capacity (and in-flight bound for the spawn-per-job peers).
pub const QUEUE: usize = 10_000;

/// The `iters` values every pool and executor case is measured at.
pub const ITERS: [u32; 2] = [0, 100];

/// Job `i`: `iters` rounds of xorshift64 from `x = i`.
#[inline]
pub fn job(i: u64, iters: u32) -> u64 {
    let mut x = i;
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

/// The sum every implementation must produce, for checking.
pub fn expected_sum(jobs: u64, iters: u32) -> u64 {
    (0..jobs).fold(0u64, |acc, i| acc.wrapping_add(job(i, iters)))
}

/// Workers: the machine's available parallelism.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A multi-thread runtime with [`workers`] worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .expect("build tokio runtime")
}

/// A current-thread runtime.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
}

/// The case name for the reference workload at `iters`: `jobs/iters=N`.
pub fn case(iters: u32) -> String {
    format!("jobs/iters={iters}")
}

/// Resident memory of this process in bytes, from the `VmRSS` line (in kB)
/// of `/proc/self/status`, whatever the page size; `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// A monotonically increasing counter that does not bounce one cache line
/// between cores.
///
/// Each thread adds to its own cache-padded cell (chosen once per thread);
/// [`get`](Counter::get) sums the cells. Adding is one relaxed atomic add on a
/// line that, with as many cells as cores, is rarely shared. Reading is a
/// snapshot: exact once writers are quiet, a lower bound while they run.
///
/// ```
/// use weft_core::Counter;
///
/// let c = Counter::new();
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| for _ in 0..1000 { c.incr() });
///     }
/// });
/// assert_eq!(c.get(), 4000);
/// ```
pub struct Counter {
    cells: Box<[CachePadded<AtomicU64>]>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Counter {
    /// A counter with four cells per core (rounded up to a power of two,
    /// between 8 and 64), so that a runtime's workers, its blocking threads
    /// and the caller's threads rarely share a cell.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let n = (cores * 4).next_power_of_two().clamp(8, 64);
        Counter {
            cells: (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        let i = THREAD_INDEX.with(|i| *i) & (self.cells.len() - 1);
        self.cells[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// The sum of all cells.
    pub fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_threads() {
        let c = Counter::new();
        std::thread::scope(|s| {
            for t in 0..8 {
                let c = &c;
                s.spawn(move || {
                    for _ in 0..10_000 {
                        c.add(t + 1);
                    }
                });
            }
        });
        assert_eq!(c.get(), 10_000 * (1..=8).sum::<u64>());
        assert_eq!(format!("{c:?}"), format!("Counter({})", c.get()));
    }
}

//! `par_map`: a parallel map over slices and iterators with a sequential
//! fast path.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use weft_core::Panicked;

/// How [`par_map`] decides between a plain loop and parallel workers.
///
/// It starts as a plain loop over the first items, timing itself (a few
/// clock reads, doubling the step each time). Once it has timed at least
/// `probe`, it estimates the cost of the rest; if that is below
/// `inline_below` it finishes as a plain loop (the sequential path costs
/// nothing extra but those clock reads), otherwise it spawns `workers - 1`
/// scoped threads and works alongside them. Workers claim blocks of indices
/// from one atomic counter (no task per item) and the results are put back
/// in input order.
///
/// Under paused tokio time (tests), the clock does not move, so `par_map`
/// always takes the sequential path; [`always_parallel`](ParMap::always_parallel)
/// forces the parallel one.
///
/// ```
/// use weft_pipeline::ParMap;
///
/// let squares = ParMap::new().workers(2).map(&[1u64, 2, 3], |x| x * x);
/// assert_eq!(squares, vec![1, 4, 9]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ParMap {
    workers: usize,
    inline_below: Duration,
    probe: Duration,
}

impl Default for ParMap {
    fn default() -> Self {
        ParMap::new()
    }
}

/// Below this estimated cost, spawning threads cannot pay for itself.
const INLINE_BELOW: Duration = Duration::from_micros(200);
/// Time the sequential probe for at least this long before estimating.
const PROBE: Duration = Duration::from_micros(20);
/// Aim for blocks this long, so claiming costs little and the tail is short.
const BLOCK_TIME: Duration = Duration::from_micros(50);

struct Part<U> {
    start: usize,
    items: Vec<U>,
}

impl ParMap {
    /// Workers = available parallelism; inline below 200 µs of estimated
    /// work (a thread spawn costs tens of µs).
    pub fn new() -> Self {
        ParMap {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            inline_below: INLINE_BELOW,
            probe: PROBE,
        }
    }

    /// Threads working in parallel, the caller's included (default: available
    /// parallelism). 1 means always sequential.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Run sequentially when the estimated remaining work is below `d`
    /// (default 200 µs).
    pub fn inline_below(mut self, d: Duration) -> Self {
        self.inline_below = d;
        self
    }

    /// Skip the estimate: go parallel after the first 64 items (for tests,
    /// or work known to be expensive).
    pub fn always_parallel(mut self) -> Self {
        self.inline_below = Duration::ZERO;
        self.probe = Duration::ZERO;
        self
    }

    /// Maps `f` over `items`, results in order. A panic in `f` is raised
    /// again in the caller (after every worker stopped), as a loop would.
    pub fn map<T, U, F>(&self, items: &[T], f: F) -> Vec<U>
    where
        T: Sync,
        U: Send,
        F: Fn(&T) -> U + Sync,
    {
        self.try_map(items, f).unwrap_or_else(|p| panic!("{p}"))
    }

    /// Like [`map`](ParMap::map), but a panic in `f` becomes a [`Panicked`]
    /// error.
    pub fn try_map<T, U, F>(&self, items: &[T], f: F) -> Result<Vec<U>, Panicked>
    where
        T: Sync,
        U: Send,
        F: Fn(&T) -> U + Sync,
    {
        let n = items.len();
        let mut out: Vec<U> = Vec::with_capacity(n);
        let f = &f;
        let run = |out: &mut Vec<U>, range: std::ops::Range<usize>| {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                out.extend(items[range].iter().map(f));
            }))
            .map_err(|p| Panicked::from_payload(p.as_ref()))
        };
        if self.workers <= 1 || n < 2 {
            run(&mut out, 0..n)?;
            return Ok(out);
        }
        let (done, per_item) = match self.probe(n, |range| run(&mut out, range))? {
            Probed::Finished => return Ok(out),
            Probed::Sequential(done) => {
                run(&mut out, done..n)?;
                return Ok(out);
            }
            Probed::Parallel { done, per_item } => (done, per_item),
        };
        let remaining = n - done;
        let threads = self.workers.min(remaining);
        let block = block_len(per_item, remaining, threads);
        let next = AtomicUsize::new(done);
        let stop = AtomicBool::new(false);
        let work = || -> Result<Vec<Part<U>>, Panicked> {
            let mut parts = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let start = next.fetch_add(block, Ordering::Relaxed);
                if start >= n {
                    break;
                }
                let end = (start + block).min(n);
                let mut v = Vec::with_capacity(end - start);
                if let Err(p) = run(&mut v, start..end) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(p);
                }
                parts.push(Part { start, items: v });
            }
            Ok(parts)
        };
        let parts = scoped(threads, &work)?;
        assemble(out, parts)
    }

    /// Maps `f` over an iterator's items in parallel, results in order.
    /// Workers take blocks of items from the iterator under a lock, so the
    /// iterator itself is read by one thread at a time.
    pub fn map_iter<I, U, F>(&self, iter: I, f: F) -> Vec<U>
    where
        I: Iterator + Send,
        I::Item: Send,
        U: Send,
        F: Fn(I::Item) -> U + Sync,
    {
        self.try_map_iter(iter, f).unwrap_or_else(|p| panic!("{p}"))
    }

    /// Like [`map_iter`](ParMap::map_iter), but a panic in `f` becomes a
    /// [`Panicked`] error.
    pub fn try_map_iter<I, U, F>(&self, mut iter: I, f: F) -> Result<Vec<U>, Panicked>
    where
        I: Iterator + Send,
        I::Item: Send,
        U: Send,
        F: Fn(I::Item) -> U + Sync,
    {
        let f = &f;
        let mut out: Vec<U> = Vec::with_capacity(iter.size_hint().0);
        let mut exhausted = false;
        let run = |out: &mut Vec<U>, iter: &mut I, k: usize| {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let before = out.len();
                out.extend(iter.by_ref().take(k).map(f));
                out.len() - before
            }))
            .map_err(|p| Panicked::from_payload(p.as_ref()))
        };
        if self.workers <= 1 {
            run(&mut out, &mut iter, usize::MAX)?;
            return Ok(out);
        }
        let start = Instant::now();
        let mut step = 64;
        let per_item = loop {
            let got = run(&mut out, &mut iter, step)?;
            if got < step {
                exhausted = true;
                break Duration::ZERO;
            }
            let el = start.elapsed();
            if el >= self.probe {
                let per_item = per(el, out.len());
                // What may be left: the upper bound if known (a filter's length is
                // unknown but bounded), otherwise assume it is long.
                let hint = iter.size_hint().1.unwrap_or(usize::MAX);
                if times(per_item, hint) < self.inline_below && self.inline_below > Duration::ZERO {
                    run(&mut out, &mut iter, usize::MAX)?;
                    exhausted = true;
                }
                break per_item;
            }
            step *= 2;
        };
        if exhausted {
            return Ok(out);
        }
        let block = block_len(per_item, usize::MAX / 2, self.workers).min(4096);
        let done = out.len();
        let source = Mutex::new((iter, done));
        let stop = AtomicBool::new(false);
        let work = || -> Result<Vec<Part<U>>, Panicked> {
            let mut parts = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (taken, start) = {
                    let mut g = source.lock().unwrap_or_else(|p| p.into_inner());
                    let taken: Vec<I::Item> = g.0.by_ref().take(block).collect();
                    let start = g.1;
                    g.1 += taken.len();
                    (taken, start)
                };
                if taken.is_empty() {
                    break;
                }
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    taken.into_iter().map(f).collect::<Vec<U>>()
                }));
                match r {
                    Ok(items) => parts.push(Part { start, items }),
                    Err(p) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(Panicked::from_payload(p.as_ref()));
                    }
                }
            }
            Ok(parts)
        };
        let parts = scoped(self.workers, &work)?;
        assemble(out, parts)
    }

    fn probe(
        &self,
        n: usize,
        mut run: impl FnMut(std::ops::Range<usize>) -> Result<(), Panicked>,
    ) -> Result<Probed, Panicked> {
        let start = Instant::now();
        let mut done = 0;
        let mut step = 64;
        loop {
            let end = (done + step).min(n);
            run(done..end)?;
            done = end;
            if done == n {
                return Ok(Probed::Finished);
            }
            let el = start.elapsed();
            if el >= self.probe {
                let per_item = per(el, done);
                let estimate = times(per_item, n - done);
                if estimate < self.inline_below {
                    return Ok(Probed::Sequential(done));
                }
                return Ok(Probed::Parallel { done, per_item });
            }
            step *= 2;
        }
    }
}

/// `total / n`, for any `n`.
fn per(total: Duration, n: usize) -> Duration {
    Duration::from_nanos((total.as_nanos() / n.max(1) as u128).min(u64::MAX as u128) as u64)
}

/// `d * n`, saturating.
fn times(d: Duration, n: usize) -> Duration {
    Duration::from_nanos((d.as_nanos() * n as u128).min(u64::MAX as u128) as u64)
}

enum Probed {
    Finished,
    Sequential(usize),
    Parallel { done: usize, per_item: Duration },
}

fn block_len(per_item: Duration, remaining: usize, threads: usize) -> usize {
    let by_time = if per_item.is_zero() {
        4096
    } else {
        (BLOCK_TIME.as_nanos() / per_item.as_nanos().max(1)) as usize
    };
    // At least 4 blocks per thread, so a slow block does not leave the
    // others idle for long.
    let by_balance = remaining / (threads * 4).max(1);
    by_time.min(by_balance).max(1)
}

/// Runs `work` on the caller and `threads - 1` scoped threads.
fn scoped<U: Send>(
    threads: usize,
    work: &(dyn Fn() -> Result<Vec<Part<U>>, Panicked> + Sync),
) -> Result<Vec<Part<U>>, Panicked> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|p| Err(Panicked::from_payload(p.as_ref())));
            match (&mut all, r) {
                (Ok(a), Ok(mut b)) => a.append(&mut b),
                (Ok(_), Err(e)) => all = Err(e),
                (Err(_), _) => {}
            }
        }
        all
    })
}

fn assemble<U>(mut out: Vec<U>, mut parts: Vec<Part<U>>) -> Result<Vec<U>, Panicked> {
    parts.sort_unstable_by_key(|p| p.start);
    for p in parts {
        debug_assert_eq!(p.start, out.len());
        out.extend(p.items);
    }
    Ok(out)
}

/// Maps `f` over `items` in parallel with the default [`ParMap`], results in
/// input order; small or cheap inputs run as a plain loop.
///
/// ```
/// let doubled = weft_pipeline::par_map(&[1, 2, 3], |x| x * 2);
/// assert_eq!(doubled, vec![2, 4, 6]);
/// ```
pub fn par_map<T, U, F>(items: &[T], f: F) -> Vec<U>
where
    T: Sync,
    U: Send,
    F: Fn(&T) -> U + Sync,
{
    ParMap::new().map(items, f)
}

/// Like [`par_map`], but a panic in `f` becomes a [`Panicked`] error.
pub fn try_par_map<T, U, F>(items: &[T], f: F) -> Result<Vec<U>, Panicked>
where
    T: Sync,
    U: Send,
    F: Fn(&T) -> U + Sync,
{
    ParMap::new().try_map(items, f)
}

/// Maps `f` over an iterator in parallel with the default [`ParMap`],
/// results in order.
///
/// ```
/// let lens = weft_pipeline::par_map_iter(["a", "bb"].into_iter(), str::len);
/// assert_eq!(lens, vec![1, 2]);
/// ```
pub fn par_map_iter<I, U, F>(iter: I, f: F) -> Vec<U>
where
    I: Iterator + Send,
    I::Item: Send,
    U: Send,
    F: Fn(I::Item) -> U + Sync,
{
    ParMap::new().map_iter(iter, f)
}

//! Shared test helpers.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Installs a tracing subscriber once (RUST_LOG to see events).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Counts how many guards were dropped and how many completed.
#[derive(Clone, Default, Debug)]
pub struct Tracker {
    pub started: Arc<AtomicUsize>,
    pub dropped: Arc<AtomicUsize>,
    pub completed: Arc<AtomicUsize>,
}

impl Tracker {
    pub fn guard(&self) -> Guard {
        self.started.fetch_add(1, Ordering::SeqCst);
        Guard {
            t: self.clone(),
            done: false,
        }
    }
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }
    /// Started but neither completed nor dropped.
    pub fn live(&self) -> usize {
        self.started() - self.dropped()
    }
}

/// Dropped = cancelled unless `done()` was called first.
#[derive(Debug)]
pub struct Guard {
    t: Tracker,
    done: bool,
}

impl Guard {
    pub fn done(mut self) {
        self.done = true;
        self.t.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.t.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (bounded: at most ~2 s of 1 ms naps) until the runtime's live task
/// count is `baseline`; returns the count seen last. Aborted tasks are
/// reaped by the runtime's workers, so a multi-thread runtime needs a moment.
pub async fn settle_tasks(baseline: usize) -> usize {
    let handle = tokio::runtime::Handle::current();
    let mut alive = handle.metrics().num_alive_tasks();
    for _ in 0..2000 {
        if alive == baseline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        alive = handle.metrics().num_alive_tasks();
    }
    alive
}

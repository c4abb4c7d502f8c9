//! Tracked tasks: spawned through the coordinator, cancelled then aborted at
//! the end of the shutdown, and named in the report when they had to be
//! aborted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::SpawnError;
use crate::report::TaskReport;

#[derive(Debug, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    live: Mutex<HashMap<u64, (String, Option<AbortHandle>)>>,
    next_id: AtomicU64,
    spawned: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    panicked: AtomicU64,
    finished: AtomicBool,
}

impl Tasks {
    pub(crate) fn spawn_arc<F, Fut>(
        this: &std::sync::Arc<Self>,
        name: String,
        f: F,
    ) -> Result<(), SpawnError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if this.finished.load(Ordering::SeqCst) {
            return Err(SpawnError);
        }
        let id = this.next_id.fetch_add(1, Ordering::Relaxed);
        this.spawned.fetch_add(1, Ordering::Relaxed);
        lock(&this.live).insert(id, (name.clone(), None));
        let token = this.cancel.clone();
        let fut = f(token.clone());
        let me = this.clone();
        let handle = this.tracker.spawn(async move {
            let _done = Done { tasks: &me, id };
            let result = weft_core::catch_unwind(fut).await;
            match result {
                Ok(()) if token.is_cancelled() => me.cancelled.fetch_add(1, Ordering::Relaxed),
                Ok(()) => me.completed.fetch_add(1, Ordering::Relaxed),
                Err(p) => {
                    tracing::error!(task = %name, panic = %p.message(), "tracked task panicked");
                    me.panicked.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
        if let Some(entry) = lock(&this.live).get_mut(&id) {
            entry.1 = Some(handle.abort_handle());
        }
        Ok(())
    }

    /// Cancels the tasks, waits up to `grace`, aborts the rest.
    pub(crate) async fn finish(&self, grace: Duration) -> TaskReport {
        self.finished.store(true, Ordering::SeqCst);
        self.tracker.close();
        self.cancel.cancel();
        let mut aborted = Vec::new();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let live: Vec<(String, Option<AbortHandle>)> =
                lock(&self.live).drain().map(|(_, v)| v).collect();
            for (name, handle) in live {
                if let Some(h) = handle {
                    h.abort();
                }
                tracing::warn!(task = %name, "tracked task still running after the grace period; aborted");
                aborted.push(name);
            }
            aborted.sort();
            self.tracker.wait().await;
        }
        TaskReport {
            spawned: self.spawned.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            aborted,
        }
    }
}

struct Done<'a> {
    tasks: &'a Tasks,
    id: u64,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        lock(&self.tasks.live).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

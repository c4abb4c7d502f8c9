//! Tracked tasks: spawned through the coordinator, cancelled then aborted at
//! the end of the shutdown, and named in the report when they had to be
//! aborted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::error::SpawnError;
use crate::report::TaskReport;

#[derive(Debug, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// The running tasks. `spawn` registers a task (with its abort handle,
    /// made before the task exists) and `finish` closes the set under this
    /// one lock, so a task is either refused or tracked and abortable.
    live: Mutex<Live>,
    next_id: AtomicU64,
    spawned: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    panicked: AtomicU64,
    /// Tasks whose future was dropped before it returned: the only source of
    /// `TaskReport::aborted`, so a task that wins the race against its abort
    /// is counted once, as what it did.
    aborted: Mutex<Vec<String>>,
    /// A lock-free early refusal once `finish` has started.
    finished: AtomicBool,
}

#[derive(Debug, Default)]
struct Live {
    finished: bool,
    tasks: HashMap<u64, (String, AbortHandle)>,
}

impl Tasks {
    pub(crate) fn spawn_arc<F, Fut>(this: &Arc<Self>, name: String, f: F) -> Result<(), SpawnError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if this.finished.load(Ordering::SeqCst) {
            return Err(SpawnError::Finished);
        }
        // Before anything is counted or registered: a task that cannot be
        // spawned must not show up in the report.
        let handle = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
        let token = this.cancel.clone();
        // User code runs outside the lock (it may spawn tracked tasks itself).
        let fut = f(token.clone());
        let id = this.next_id.fetch_add(1, Ordering::Relaxed);
        let (abort, registration) = AbortHandle::new_pair();
        let task_name = name.clone();
        let mut done = {
            let mut live = lock(&this.live);
            if live.finished {
                return Err(SpawnError::Finished);
            }
            live.tasks.insert(id, (name, abort));
            this.spawned.fetch_add(1, Ordering::Relaxed);
            Done {
                tasks: this.clone(),
                id,
                returned: false,
                // Taken before `finish` can see the set closed, so its
                // `wait` cannot return before this task has ended.
                _tracked: this.tracker.token(),
            }
        };
        // `done` moves into the task: dropping the task, even unpolled,
        // accounts for it.
        handle.spawn(async move {
            let Ok(result) = Abortable::new(weft_core::catch_unwind(fut), registration).await
            else {
                return; // aborted: `done` records it
            };
            done.returned();
            let tasks = &done.tasks;
            match result {
                Ok(()) if token.is_cancelled() => tasks.cancelled.fetch_add(1, Ordering::Relaxed),
                Ok(()) => tasks.completed.fetch_add(1, Ordering::Relaxed),
                Err(p) => {
                    tracing::error!(task = %task_name, panic = %p.message(), "tracked task panicked");
                    tasks.panicked.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
        Ok(())
    }

    /// Cancels the tasks, waits up to `grace` (less if `forced` fires),
    /// aborts the rest.
    pub(crate) async fn finish(&self, grace: Duration, forced: &CancellationToken) -> TaskReport {
        self.finished.store(true, Ordering::SeqCst);
        lock(&self.live).finished = true;
        self.tracker.close();
        self.cancel.cancel();
        let all_done = tokio::select! {
            biased;
            () = self.tracker.wait() => true,
            () = forced.cancelled() => false,
            () = tokio::time::sleep(grace) => false,
        };
        if !all_done {
            for (_, abort) in lock(&self.live).tasks.values() {
                abort.abort();
            }
            self.tracker.wait().await;
        }
        let mut aborted = std::mem::take(&mut *lock(&self.aborted));
        aborted.sort();
        TaskReport {
            spawned: self.spawned.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            aborted,
        }
    }
}

impl Tasks {
    /// What `finish` does, without waiting: for a shutdown that cannot await
    /// any more (its runtime is dropping it). Cancels the tasks, aborts the
    /// ones still running and names them as aborted (the runtime drops them
    /// anyway). Best effort: a task ending during this call may be missed.
    pub(crate) fn abandon(&self) -> TaskReport {
        self.finished.store(true, Ordering::SeqCst);
        self.tracker.close();
        self.cancel.cancel();
        let mut live = lock(&self.live);
        live.finished = true;
        let mut aborted = std::mem::take(&mut *lock(&self.aborted));
        for (name, abort) in live.tasks.values() {
            abort.abort();
            aborted.push(name.clone());
        }
        drop(live);
        aborted.sort();
        TaskReport {
            spawned: self.spawned.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            aborted,
        }
    }
}

/// Owned by a tracked task: unregisters it, records it as aborted if its
/// future was dropped before returning, and then (dropping `_tracked`) lets
/// `finish` see it gone.
struct Done {
    tasks: Arc<Tasks>,
    id: u64,
    returned: bool,
    _tracked: TaskTrackerToken,
}

impl Done {
    /// The task's future returned (with a value or a contained panic).
    fn returned(&mut self) {
        self.returned = true;
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        let entry = lock(&self.tasks.live).tasks.remove(&self.id);
        if !self.returned {
            if let Some((name, _)) = entry {
                tracing::warn!(task = %name, "tracked task aborted (still running after the grace period, or the shutdown was forced)");
                lock(&self.tasks.aborted).push(name);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

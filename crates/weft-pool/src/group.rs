//! [`TaskGroup`]: structured concurrency, the errgroup of weft.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use weft_core::{Panicked, catch_unwind};

/// What a group does when a task fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// The first failure (error or panic) cancels the group's token, so the
    /// other tasks can stop early; tasks not yet started are skipped
    /// (reported as [`TaskError::Cancelled`]). The default, like Go's errgroup.
    #[default]
    FirstError,
    /// Every task runs to the end; all results are collected.
    CollectAll,
}

/// In which order [`TaskGroup::join_all`] returns results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Order {
    /// The order the tasks were spawned in. The default.
    #[default]
    Submission,
    /// The order the tasks finished in.
    Completion,
}

/// Why a task of a group has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError<E> {
    /// The task returned an error.
    #[error("task failed: {0}")]
    Failed(E),
    /// The task panicked.
    #[error(transparent)]
    Panicked(Panicked),
    /// The task never started: the group was cancelled first.
    #[error("task was cancelled before it started")]
    Cancelled,
    /// The task was dropped before it finished: its runtime shut down while
    /// it was waiting or running.
    #[error("task was aborted before it finished: its runtime shut down")]
    Aborted,
}

/// A finished task: its spawn index and result.
type Done<T, E> = (usize, Result<T, TaskError<E>>);

/// The results not yet returned by a join.
struct Inbox<T, E> {
    rx: mpsc::UnboundedReceiver<Done<T, E>>,
    /// Results received so far (every task sends exactly one).
    received: usize,
    /// Received but not yet returned (a join dropped half-way keeps them
    /// here for the next).
    got: Vec<Done<T, E>>,
}

/// Sends a task's result exactly once: if the task is dropped before it has
/// one (its runtime shut down, or the group was dropped), it sends
/// [`TaskError::Aborted`], so a join never waits for a result that cannot
/// come.
struct Report<T, E> {
    tx: Option<mpsc::UnboundedSender<Done<T, E>>>,
    index: usize,
}

impl<T, E> Report<T, E> {
    fn send(mut self, res: Result<T, TaskError<E>>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.index, res));
        }
    }
}

impl<T, E> Drop for Report<T, E> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.index, Err(TaskError::Aborted)));
        }
    }
}

struct Shared {
    token: CancellationToken,
    limit: Option<Arc<Semaphore>>,
    aborts: Mutex<Vec<AbortHandle>>,
    spawned: AtomicUsize,
}

/// A set of related tasks that are spawned together, observed together and
/// cancelled together.
///
/// - [`spawn`](TaskGroup::spawn) takes `&self`, so the group can be shared
///   (by reference or in an `Arc`) and tasks can spawn siblings.
/// - An optional concurrency limit ([`TaskGroup::with_limit`]): tasks beyond
///   it wait for a slot (spawning never waits).
/// - [`ErrorPolicy`]: first error cancels the rest through a
///   [`CancellationToken`] every task receives, or collect all.
/// - Panics are caught and reported as [`TaskError::Panicked`], never lost:
///   in the task's future, and in the closure that builds it.
/// - Each [`join`](TaskGroup::join) (or [`join_all`](TaskGroup::join_all))
///   returns the tasks spawned since the previous one: a group can be
///   joined, reused and joined again. Under `FirstError`, a group whose
///   token was cancelled by a failure stays cancelled: tasks spawned after
///   that come back `Cancelled` without running (use a new group, or
///   `CollectAll`).
/// - **Dropping the group cancels its token and aborts every task still
///   running.** Await [`join`](TaskGroup::join) or
///   [`join_all`](TaskGroup::join_all) to let them finish.
///
/// ```
/// use weft_pool::group::{TaskGroup, TaskError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let group = TaskGroup::<u32, String>::new();
/// for i in 0..5 {
///     group.spawn(move |_cancel| async move { Ok(i * 10) });
/// }
/// assert_eq!(group.join().await, Ok(vec![0, 10, 20, 30, 40]));
///
/// let group = TaskGroup::<u32, String>::new();
/// group.spawn(|_| async { Err("bad shard".to_string()) });
/// group.spawn(|cancel| async move {
///     cancel.cancelled().await; // stops when a sibling fails
///     Ok(1)
/// });
/// assert_eq!(group.join().await, Err(TaskError::Failed("bad shard".to_string())));
/// # }
/// ```
///
/// # Comparison to `JoinSet`
///
/// tokio's `JoinSet` also aborts its tasks on drop; `TaskGroup` adds the
/// error policy and its cancellation token, a concurrency limit, results in
/// submission order, panics as values, and spawning through `&self`.
pub struct TaskGroup<T, E> {
    shared: Arc<Shared>,
    policy: ErrorPolicy,
    order: Order,
    tx: mpsc::UnboundedSender<Done<T, E>>,
    inbox: tokio::sync::Mutex<Inbox<T, E>>,
}

impl<T, E> std::fmt::Debug for TaskGroup<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskGroup")
            .field("policy", &self.policy)
            .field("order", &self.order)
            .field("spawned", &self.shared.spawned.load(Ordering::Relaxed))
            .field("cancelled", &self.shared.token.is_cancelled())
            .finish()
    }
}

impl<T: Send + 'static, E: Send + 'static> Default for TaskGroup<T, E> {
    fn default() -> Self {
        TaskGroup::new()
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskGroup<T, E> {
    /// A group without a limit, with [`ErrorPolicy::FirstError`] and results
    /// in submission order.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        TaskGroup {
            shared: Arc::new(Shared {
                token: CancellationToken::new(),
                limit: None,
                aborts: Mutex::new(Vec::new()),
                spawned: AtomicUsize::new(0),
            }),
            policy: ErrorPolicy::default(),
            order: Order::default(),
            tx,
            inbox: tokio::sync::Mutex::new(Inbox {
                rx,
                received: 0,
                got: Vec::new(),
            }),
        }
    }

    /// At most `n` tasks run at once.
    ///
    /// # Panics
    ///
    /// If `n` is 0 (a group that could never run a task: pass at least 1,
    /// or no limit at all), or if a task was already spawned.
    pub fn with_limit(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "TaskGroup::with_limit(0) would never run a task: pass a limit of at least 1 (or set none)"
        );
        Arc::get_mut(&mut self.shared)
            .expect("set the limit before spawning")
            .limit = Some(Arc::new(Semaphore::new(n)));
        self
    }

    /// Sets the error policy.
    pub fn with_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the result order of [`join_all`](TaskGroup::join_all).
    pub fn with_order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// The group's token: cancelled on the first failure (under
    /// `FirstError`), by [`cancel`](TaskGroup::cancel), or when the group is
    /// dropped.
    pub fn token(&self) -> CancellationToken {
        self.shared.token.clone()
    }

    /// Cancels the group's token: tasks watching it stop, tasks not started
    /// are skipped.
    pub fn cancel(&self) {
        self.shared.token.cancel();
    }

    /// Spawns a task on the current tokio runtime. `f` receives the group's
    /// cancellation token; it is called on the task, inside the task's panic
    /// boundary. Never waits: under a limit the task waits for a slot
    /// inside.
    pub fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let index = self.shared.spawned.fetch_add(1, Ordering::AcqRel);
        let shared = self.shared.clone();
        let report = Report {
            tx: Some(self.tx.clone()),
            index,
        };
        let first_error = self.policy == ErrorPolicy::FirstError;
        let task = tokio::spawn(async move {
            let _permit = match &shared.limit {
                Some(sem) => tokio::select! {
                    biased;
                    _ = shared.token.cancelled(), if first_error => None,
                    p = sem.clone().acquire_owned() => p.ok(),
                },
                None => None,
            };
            let res = if first_error && shared.token.is_cancelled() {
                Err(TaskError::Cancelled)
            } else {
                let token = shared.token.clone();
                // `f` runs inside the boundary: a panic while it builds the
                // future is the task's panic too.
                match catch_unwind(async move { f(token).await }).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(TaskError::Failed(e)),
                    Err(p) => {
                        tracing::error!(panic = p.message(), "task group task panicked");
                        Err(TaskError::Panicked(p))
                    }
                }
            };
            if first_error && matches!(res, Err(TaskError::Failed(_) | TaskError::Panicked(_))) {
                shared.token.cancel();
            }
            report.send(res);
        });
        let mut aborts = self.shared.aborts.lock().unwrap_or_else(|p| p.into_inner());
        aborts.retain(|a| !a.is_finished());
        aborts.push(task.abort_handle());
    }

    /// Tasks spawned so far (joined or not).
    pub fn len(&self) -> usize {
        self.shared.spawned.load(Ordering::Acquire)
    }

    /// Whether no task was spawned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The results of every task not yet joined, in completion order, with
    /// their spawn indexes. Cancel-safe: results received by a join that is
    /// dropped half-way are kept for the next.
    async fn collect(&self) -> Vec<(usize, Result<T, TaskError<E>>)> {
        let mut inbox = self.inbox.lock().await;
        while inbox.received < self.len() {
            match inbox.rx.recv().await {
                Some(r) => {
                    inbox.received += 1;
                    inbox.got.push(r);
                }
                None => break,
            }
        }
        std::mem::take(&mut inbox.got)
    }

    /// Waits for every task spawned since the previous join (including
    /// tasks they spawn meanwhile) and returns their results, in the group's
    /// [`Order`]. Each task's result is returned by exactly one join; with
    /// nothing spawned since the last, the result is empty.
    pub async fn join_all(&self) -> Vec<Result<T, TaskError<E>>> {
        let mut got = self.collect().await;
        if self.order == Order::Submission {
            got.sort_by_key(|(i, _)| *i);
        }
        got.into_iter().map(|(_, r)| r).collect()
    }

    /// Waits for every task spawned since the previous join (as
    /// [`join_all`](TaskGroup::join_all)); their values in the group's
    /// [`Order`], or the first failure by completion (a
    /// [`TaskError::Cancelled`] only if no task actually failed).
    ///
    /// ```
    /// use weft_pool::group::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let group = TaskGroup::<u32, ()>::new();
    /// group.spawn(|_| async { Ok(1) });
    /// assert_eq!(group.join().await, Ok(vec![1]));
    /// group.spawn(|_| async { Ok(2) });
    /// assert_eq!(group.join().await, Ok(vec![2])); // only what is new
    /// # }
    /// ```
    pub async fn join(&self) -> Result<Vec<T>, TaskError<E>> {
        let mut got = self.collect().await;
        let mut first: Option<TaskError<E>> = None;
        let mut values = Vec::with_capacity(got.len());
        if self.order == Order::Submission {
            // Stable: keep completion order to pick the first failure below.
            let mut by_completion: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
            got.sort_by_key(|(i, _)| *i);
            let mut errs: Vec<(usize, TaskError<E>)> = Vec::new();
            for (i, r) in got {
                match r {
                    Ok(v) => values.push(v),
                    Err(e) => errs.push((i, e)),
                }
            }
            by_completion.retain(|i| errs.iter().any(|(j, _)| j == i));
            for i in by_completion {
                let pos = errs
                    .iter()
                    .position(|(j, _)| *j == i)
                    .expect("error present");
                let (_, e) = errs.swap_remove(pos);
                if first.is_none()
                    || (matches!(first, Some(TaskError::Cancelled))
                        && !matches!(e, TaskError::Cancelled))
                {
                    first = Some(e);
                }
            }
        } else {
            for (_, r) in got {
                match r {
                    Ok(v) => values.push(v),
                    Err(e) => {
                        if first.is_none()
                            || (matches!(first, Some(TaskError::Cancelled))
                                && !matches!(e, TaskError::Cancelled))
                        {
                            first = Some(e);
                        }
                    }
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(values),
        }
    }
}

impl<T, E> Drop for TaskGroup<T, E> {
    fn drop(&mut self) {
        self.shared.token.cancel();
        for a in self
            .shared
            .aborts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            a.abort();
        }
    }
}

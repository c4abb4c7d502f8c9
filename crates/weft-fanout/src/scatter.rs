//! Scatter-gather: run a function over many items with a concurrency limit.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use weft_core::Panicked;

/// Starts a scatter of `f` over `items`, with at most `concurrency` items in
/// flight. Nothing runs until a gathering method is awaited:
///
/// - [`try_collect`](Scatter::try_collect): every `Ok`, or the first error,
///   which cancels the items still running;
/// - [`collect_all`](Scatter::collect_all): runs every item, then every `Ok`
///   or every error (with the successes);
/// - [`results`](Scatter::results): each item's own result.
///
/// Results come in input order (the default) or, after
/// [`completion_order`](Scatter::completion_order), as they finish. By default
/// the items run concurrently inside the awaiting task (right for I/O);
/// [`spawned`](Scatter::spawned) runs each on its own tokio task, in parallel
/// across the runtime's workers (right for CPU-bound work). Either way a
/// panic in one item becomes that item's [`ItemError::Panicked`], and
/// nothing is left running once the gathering future returns or is dropped.
///
/// ```
/// use std::time::Duration;
/// use weft_fanout::{ItemError, scatter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), weft_fanout::ScatterError> {
/// // Five 50 ms calls take 50 ms, not 250 ms.
/// let start = tokio::time::Instant::now();
/// let pages = scatter(1..=5, 10, |id: u32| async move {
///     tokio::time::sleep(Duration::from_millis(50)).await;
///     Ok::<_, std::io::Error>(format!("page {id}"))
/// })?
/// .try_collect()
/// .await
/// .unwrap();
/// assert_eq!(pages[4], "page 5");
/// assert_eq!(start.elapsed(), Duration::from_millis(50));
///
/// // The first error wins and cancels the rest.
/// let err = scatter(0..100, 4, |i: u32| async move {
///     if i == 3 { Err("bad item") } else { Ok(i) }
/// })?
/// .try_collect()
/// .await
/// .unwrap_err();
/// assert_eq!(err.index(), 3);
/// assert!(matches!(err, ItemError::Failed { error: "bad item", .. }));
/// # Ok::<_, weft_fanout::ScatterError>(())
/// # }
/// ```
///
/// # Errors
///
/// [`ScatterError::ZeroConcurrency`] if `concurrency` is 0: nothing could
/// ever run. Pass 1 to run the items one at a time. The check is made here,
/// when the scatter is built, so the gathering methods keep the error types
/// of their policies.
///
/// ```
/// use weft_fanout::{ScatterError, scatter};
///
/// let err = scatter(0..3, 0, |i: u32| async move { Ok::<_, ()>(i) }).unwrap_err();
/// assert_eq!(err, ScatterError::ZeroConcurrency);
/// assert_eq!(
///     err.to_string(),
///     "scatter concurrency must be at least 1; pass 1 to run the items one at a time"
/// );
/// ```
pub fn scatter<I, F, Fut, T, E>(
    items: I,
    concurrency: usize,
    f: F,
) -> Result<Scatter<I::IntoIter, F>, ScatterError>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if concurrency == 0 {
        return Err(ScatterError::ZeroConcurrency);
    }
    Ok(Scatter {
        items: items.into_iter(),
        f,
        concurrency,
        order: Order::Input,
        name: "scatter",
        _mode: PhantomData,
    })
}

/// A scatter that cannot be built; see [`scatter`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScatterError {
    /// The concurrency limit is 0, so no item could ever start; pass at
    /// least 1 (1 runs the items one at a time).
    #[error("scatter concurrency must be at least 1; pass 1 to run the items one at a time")]
    ZeroConcurrency,
}

/// The order in which gathered results are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Result `i` belongs to item `i` (the default).
    Input,
    /// Results in the order the items finished.
    Completion,
}

/// A configured scatter; see [`scatter`].
#[must_use = "a scatter does nothing until a gathering method is awaited"]
pub struct Scatter<I, F, M = InTask> {
    items: I,
    f: F,
    concurrency: usize,
    order: Order,
    name: &'static str,
    _mode: PhantomData<M>,
}

impl<I, F, M> fmt::Debug for Scatter<I, F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scatter")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("order", &self.order)
            .field("mode", &std::any::type_name::<M>())
            .finish_non_exhaustive()
    }
}

/// An item's failure in a scatter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError<E> {
    /// The item's future returned `Err`.
    #[error("item {index} failed: {error}")]
    Failed {
        /// The item's position in the input.
        index: usize,
        /// Its error.
        error: E,
    },
    /// The item's future panicked.
    #[error("item {index} panicked: {panic}")]
    Panicked {
        /// The item's position in the input.
        index: usize,
        /// The panic.
        panic: Panicked,
    },
    /// The item's task was cancelled from outside (the runtime is shutting
    /// down).
    #[error("item {index} was cancelled")]
    Cancelled {
        /// The item's position in the input.
        index: usize,
    },
}

impl<E> ItemError<E> {
    /// The failed item's position in the input.
    pub fn index(&self) -> usize {
        match self {
            ItemError::Failed { index, .. }
            | ItemError::Panicked { index, .. }
            | ItemError::Cancelled { index } => *index,
        }
    }

    /// The item's own error, if it returned one (rather than panicking).
    pub fn into_inner(self) -> Option<E> {
        match self {
            ItemError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What [`Scatter::collect_all`] returns when at least one item failed: every
/// error, and the successes (so no completed work is lost).
#[non_exhaustive]
pub struct Failures<T, E> {
    /// The items that succeeded, as `(input index, value)`, in the scatter's
    /// [`Order`].
    pub succeeded: Vec<(usize, T)>,
    /// The items that failed, in the scatter's [`Order`].
    pub failed: Vec<ItemError<E>>,
}

impl<T, E: fmt::Debug> fmt::Debug for Failures<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failures")
            .field("succeeded", &self.succeeded.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<T, E: fmt::Display> fmt::Display for Failures<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} items failed",
            self.failed.len(),
            self.failed.len() + self.succeeded.len()
        )?;
        if let Some(first) = self.failed.first() {
            write!(f, "; first: {first}")?;
        }
        Ok(())
    }
}

impl<T, E: fmt::Debug + fmt::Display> std::error::Error for Failures<T, E> {}

/// Mode marker: items run concurrently inside the awaiting task.
#[derive(Debug, Clone, Copy)]
pub struct InTask;

/// Mode marker: each item runs on its own tokio task.
#[derive(Debug, Clone, Copy)]
pub struct Spawned;

/// How a scatter runs its items: [`InTask`] or [`Spawned`].
pub trait Mode<Fut: Future>: sealed::Sealed {
    #[doc(hidden)]
    type Task: Future<Output = Result<Fut::Output, Lost>>;
    #[doc(hidden)]
    const AWAIT_CANCELLED: bool;
    #[doc(hidden)]
    fn start(fut: Fut) -> Self::Task;
    #[doc(hidden)]
    fn cancel(task: Pin<&mut Self::Task>);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::InTask {}
    impl Sealed for super::Spawned {}
}

/// Why an item produced no output.
#[doc(hidden)]
#[derive(Debug)]
pub enum Lost {
    Panicked(Panicked),
    Cancelled,
}

pin_project! {
    /// An in-task item inside its panic boundary. The item's future is
    /// dropped inside the boundary too: as soon as it finishes (a panic in
    /// that drop is the item's panic) and when the item is cancelled (a
    /// panic there is ignored after the panic hook printed it), so a user
    /// `Drop` that panics never unwinds into whoever awaits the scatter.
    #[doc(hidden)]
    #[derive(Debug)]
    pub struct CatchTask<F> {
        #[pin]
        inner: Option<F>,
    }
    impl<F> PinnedDrop for CatchTask<F> {
        fn drop(this: Pin<&mut Self>) {
            weft_core::drop_contained(this.project().inner);
        }
    }
}

impl<F: Future> Future for CatchTask<F> {
    type Output = Result<F::Output, Lost>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = ready!(weft_core::poll_contained(self.project().inner, cx));
        Poll::Ready(out.map_err(Lost::Panicked))
    }
}

impl<Fut: Future> Mode<Fut> for InTask {
    type Task = CatchTask<Fut>;
    const AWAIT_CANCELLED: bool = false;

    fn start(fut: Fut) -> Self::Task {
        CatchTask { inner: Some(fut) }
    }

    fn cancel(_task: Pin<&mut Self::Task>) {}
}

/// A spawned item: aborted when dropped.
#[doc(hidden)]
#[derive(Debug)]
pub struct SpawnedTask<T>(JoinHandle<T>);

impl<T> Drop for SpawnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for SpawnedTask<T> {
    type Output = Result<T, Lost>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = ready!(Pin::new(&mut self.0).poll(cx));
        Poll::Ready(out.map_err(|e| match e.try_into_panic() {
            Ok(payload) => Lost::Panicked(Panicked::from_payload(payload.as_ref())),
            Err(_) => Lost::Cancelled,
        }))
    }
}

impl<Fut> Mode<Fut> for Spawned
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Task = SpawnedTask<Fut::Output>;
    const AWAIT_CANCELLED: bool = true;

    fn start(fut: Fut) -> Self::Task {
        let deadline = crate::deadline::current();
        SpawnedTask(tokio::spawn(crate::deadline::inherit(deadline, fut)))
    }

    fn cancel(task: Pin<&mut Self::Task>) {
        task.0.abort();
    }
}

impl<I, F, M> Scatter<I, F, M> {
    /// Returns results in the order the items finish rather than in input
    /// order.
    pub fn completion_order(mut self) -> Self {
        self.order = Order::Completion;
        self
    }

    /// Sets the result order (default [`Order::Input`]).
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Names the scatter in traces and metrics (default `"scatter"`).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Runs each item on its own tokio task, so CPU-bound items run in
    /// parallel on a multi-thread runtime. The items' futures must be
    /// `Send + 'static`. Cancelled items are aborted, and the gathering future
    /// waits for them to be gone before it returns. The current
    /// [deadline](crate::deadline) is carried into each task.
    pub fn spawned(self) -> Scatter<I, F, Spawned> {
        Scatter {
            items: self.items,
            f: self.f,
            concurrency: self.concurrency,
            order: self.order,
            name: self.name,
            _mode: PhantomData,
        }
    }

    /// Runs the items concurrently inside the awaiting task (the default).
    pub fn in_task(self) -> Scatter<I, F, InTask> {
        Scatter {
            items: self.items,
            f: self.f,
            concurrency: self.concurrency,
            order: self.order,
            name: self.name,
            _mode: PhantomData,
        }
    }
}

/// Collects values by index or by completion.
struct Slots<T> {
    order: Order,
    slots: Vec<Option<T>>,
}

impl<T> Slots<T> {
    fn new(order: Order) -> Self {
        Slots {
            order,
            slots: Vec::new(),
        }
    }

    fn put(&mut self, index: usize, value: T) {
        match self.order {
            Order::Completion => self.slots.push(Some(value)),
            Order::Input => {
                if index >= self.slots.len() {
                    self.slots.resize_with(index + 1, || None);
                }
                self.slots[index] = Some(value);
            }
        }
    }

    fn into_vec(self) -> Vec<T> {
        self.slots.into_iter().flatten().collect()
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    panicked: u64,
    cancelled: u64,
}

impl Tally {
    fn count<T, E>(&mut self, r: &Result<T, ItemError<E>>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(ItemError::Failed { .. }) => self.failed += 1,
            Err(ItemError::Panicked { .. }) => self.panicked += 1,
            Err(ItemError::Cancelled { .. }) => self.cancelled += 1,
        }
    }

    fn report(&self, name: &'static str, aborted: u64) {
        tracing::debug!(
            scatter = name,
            ok = self.ok,
            failed = self.failed,
            panicked = self.panicked,
            cancelled = self.cancelled + aborted,
            "scatter finished"
        );
        #[cfg(feature = "metrics")]
        {
            for (outcome, n) in [
                ("ok", self.ok),
                ("failed", self.failed),
                ("panicked", self.panicked),
                ("cancelled", self.cancelled + aborted),
            ] {
                if n > 0 {
                    metrics::counter!("weft_fanout_scatter_items_total", "name" => name, "outcome" => outcome)
                        .increment(n);
                }
            }
        }
    }
}

pin_project! {
    struct Indexed<F> {
        index: usize,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Indexed<F> {
    type Output = (usize, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.fut.poll(cx));
        Poll::Ready((*this.index, out))
    }
}

impl<I, F, Fut, T, E, M> Scatter<I, F, M>
where
    I: Iterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    M: Mode<Fut>,
{
    /// Runs the items, handing each result to `sink`; stops (cancelling what
    /// runs) when `sink` breaks. Returns the tally.
    async fn drive(self, mut sink: impl FnMut(usize, Result<T, ItemError<E>>) -> ControlFlow<()>) {
        let Scatter {
            mut items,
            mut f,
            concurrency,
            name,
            ..
        } = self;
        let mut running = FuturesUnordered::new();
        let mut next = 0usize;
        let mut exhausted = false;
        let mut tally = Tally::default();
        loop {
            let mut stop = false;
            while !stop && !exhausted && running.len() < concurrency {
                let Some(item) = items.next() else {
                    exhausted = true;
                    break;
                };
                let index = next;
                next += 1;
                // `f` itself may panic while making the future: that is the
                // item's panic too.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item))) {
                    Ok(fut) => running.push(Indexed {
                        index,
                        fut: M::start(fut),
                    }),
                    Err(payload) => {
                        let panic = Panicked::from_payload(payload.as_ref());
                        tracing::error!(scatter = name, index, %panic, "scatter item panicked");
                        let result = Err(ItemError::Panicked { index, panic });
                        tally.count(&result);
                        stop = sink(index, result).is_break();
                    }
                }
            }
            if !stop {
                let Some((index, out)) = running.next().await else {
                    break;
                };
                let result = match out {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(error)) => Err(ItemError::Failed { index, error }),
                    Err(Lost::Panicked(panic)) => {
                        tracing::error!(scatter = name, index, %panic, "scatter item panicked");
                        Err(ItemError::Panicked { index, panic })
                    }
                    Err(Lost::Cancelled) => Err(ItemError::Cancelled { index }),
                };
                tally.count(&result);
                stop = sink(index, result).is_break();
            }
            if stop {
                let aborted = running.len() as u64;
                for task in Pin::new(&mut running).iter_pin_mut() {
                    M::cancel(task.project().fut);
                }
                if M::AWAIT_CANCELLED {
                    // Wait until the aborted tasks are gone, so none outlives
                    // the scatter.
                    while running.next().await.is_some() {}
                }
                drop(running);
                tally.report(name, aborted);
                return;
            }
        }
        tally.report(name, 0);
    }

    /// Every item's value, or the first error; the first error cancels the
    /// items still running and stops starting new ones.
    pub async fn try_collect(self) -> Result<Vec<T>, ItemError<E>> {
        let mut slots = Slots::new(self.order);
        let mut first_err = None;
        self.drive(|index, r| match r {
            Ok(v) => {
                slots.put(index, v);
                ControlFlow::Continue(())
            }
            Err(e) => {
                first_err = Some(e);
                ControlFlow::Break(())
            }
        })
        .await;
        match first_err {
            Some(e) => Err(e),
            None => Ok(slots.into_vec()),
        }
    }

    /// Runs every item to the end; every value if all succeeded, otherwise
    /// every error together with the successes, both in the scatter's
    /// [`Order`] (by input index by default, as they finished after
    /// [`completion_order`](Scatter::completion_order)).
    pub async fn collect_all(self) -> Result<Vec<T>, Failures<T, E>> {
        let mut slots = Slots::new(self.order);
        // Failures are slotted like successes, so both come in the
        // scatter's `Order` (by index under `Order::Input`).
        let mut failed = Slots::new(self.order);
        let mut any_failed = false;
        self.drive(|index, r| {
            match r {
                Ok(v) => slots.put(index, (index, v)),
                Err(e) => {
                    any_failed = true;
                    failed.put(index, e);
                }
            }
            ControlFlow::Continue(())
        })
        .await;
        let succeeded = slots.into_vec();
        if any_failed {
            Err(Failures {
                succeeded,
                failed: failed.into_vec(),
            })
        } else {
            Ok(succeeded.into_iter().map(|(_, v)| v).collect())
        }
    }

    /// Every item's own result, in the scatter's [`Order`]. Runs every item.
    pub async fn results(self) -> Vec<Result<T, ItemError<E>>> {
        let mut slots = Slots::new(self.order);
        self.drive(|index, r| {
            slots.put(index, r);
            ControlFlow::Continue(())
        })
        .await;
        slots.into_vec()
    }
}

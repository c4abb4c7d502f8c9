//! `ActorRef`: the address of an actor.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use weft_core::queue::{Admitted, PushError};
use weft_core::{BoxError, Drain, ShutdownReport};

use crate::actor::{Actor, AskFor, Exit};
use crate::error::{AskError, SendError};
use crate::mailbox::{ActorStats, Mailbox, SIG_STOP};
use crate::reply::{Reply, ReplyRx};

/// The address of an actor: cheap to clone (one `Arc`), and valid across
/// restarts, because it points at the mailbox, which outlives every
/// incarnation.
///
/// - [`tell`](ActorRef::tell) sends and waits for mailbox room under the
///   mailbox's [`Overflow`](weft_core::Overflow) policy;
///   [`try_tell`](ActorRef::try_tell) never waits and hands the message back.
/// - [`ask`](ActorRef::ask) / [`ask_with`](ActorRef::ask_with) send a message
///   carrying a [`Reply`] and wait for the answer, within the ask timeout.
/// - `ActorRef<A>` is a tower [`Service<R>`](tower_service::Service) for
///   every request `R` with [`AskFor<R>`], so timeouts, load shedding, rate
///   limits and retries come from tower layers.
/// - [`stop`](ActorRef::stop) drains gracefully until a deadline, then
///   kills; the actor also implements [`Drain`].
pub struct ActorRef<A: Actor> {
    mb: Arc<Mailbox<A::Msg>>,
    /// Used only through the tower `Service`: a mailbox slot taken by
    /// `poll_ready` and not yet used by `call`.
    reserved: bool,
    /// `poll_ready`'s wait for a slot, while the mailbox is full. Behind a
    /// `Mutex` only so that `ActorRef` stays `Sync`; it is reached through
    /// `&mut self` (`get_mut`), never locked.
    waiting: Mutex<Option<Reserving>>,
    _actor: PhantomData<fn() -> A>,
}

type Reserving = Pin<Box<dyn Future<Output = bool> + Send>>;

/// A clone starts unreserved: a slot reserved by `poll_ready` belongs to the
/// service it was reserved on.
impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef::from_mailbox(self.mb.clone())
    }
}

/// A reference dropped between a ready `poll_ready` and `call` gives its
/// slot back.
impl<A: Actor> Drop for ActorRef<A> {
    fn drop(&mut self) {
        if self.reserved {
            self.mb.release(1);
        }
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("name", &self.name())
            .field("queued", &self.mb.queue.len())
            .field("terminated", &self.mb.is_terminated())
            .finish()
    }
}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn from_mailbox(mb: Arc<Mailbox<A::Msg>>) -> Self {
        ActorRef {
            mb,
            reserved: false,
            waiting: Mutex::new(None),
            _actor: PhantomData,
        }
    }

    pub(crate) fn mailbox(&self) -> &Arc<Mailbox<A::Msg>> {
        &self.mb
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.mb.name
    }

    /// Whether two references address the same actor.
    pub fn same_actor(&self, other: &ActorRef<A>) -> bool {
        Arc::ptr_eq(&self.mb, &other.mb)
    }

    /// Whether the actor has not terminated for good. (An actor being
    /// restarted by its supervisor is alive.)
    pub fn is_alive(&self) -> bool {
        !self.mb.is_terminated()
    }

    /// Messages waiting in the mailbox now.
    pub fn queued(&self) -> usize {
        self.mb.queue.len()
    }

    /// A snapshot of the actor's counters.
    pub fn stats(&self) -> ActorStats {
        self.mb.stats()
    }

    /// Sends a message, applying the mailbox's overflow policy when it is
    /// full (`Block` waits for room). The message rides inside the error when
    /// it is not delivered.
    pub async fn tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        // Fast path: room in the mailbox, no future to build.
        let pushed = match self.mb.try_admit(msg) {
            Err(PushError::Full(msg)) if self.mb.overflow.waits() => {
                self.mb.admit_waiting(msg).await
            }
            other => other,
        };
        self.admitted(pushed)
    }

    /// Sends a message without waiting: when the mailbox is full, `Block`
    /// and `WaitTimeout` act as `Reject`.
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        let pushed = self.mb.try_admit(msg);
        self.admitted(pushed)
    }

    #[inline]
    fn admitted(
        &self,
        pushed: Result<Admitted<A::Msg>, PushError<A::Msg>>,
    ) -> Result<(), SendError<A::Msg>> {
        match pushed {
            Ok(admitted) => {
                self.mb.wake();
                if let Admitted::Evicted(old) = admitted {
                    self.mb.give_back(old);
                }
                Ok(())
            }
            Err(e) => {
                self.mb.stats.send.rejected.fetch_add(1, Ordering::Relaxed);
                if e.is_closed() {
                    self.mb
                        .stats
                        .send
                        .rejected_after_close
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(actor = %self.mb.name, error = %e, "message refused");
                #[cfg(feature = "metrics")]
                metrics::counter!("weft_actor_rejected_total", "name" => self.mb.name.to_string())
                    .increment(1);
                Err(SendError::from_push(e))
            }
        }
    }

    /// Asks with a request value, for actors with [`AskFor<R>`]; waits for
    /// the answer within the actor's ask timeout.
    pub async fn ask<R>(&self, req: R) -> Result<A::Reply, AskError<A::Msg>>
    where
        A: AskFor<R>,
    {
        self.ask_inner(|reply| A::wrap(req, reply), self.mb.ask_timeout)
            .await
    }

    /// Asks with a message built around a fresh [`Reply`] (often just the
    /// enum variant: `actor.ask_with(Msg::Get)`); waits for the answer within
    /// the actor's ask timeout.
    pub async fn ask_with<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> A::Msg,
    ) -> Result<T, AskError<A::Msg>> {
        self.ask_inner(make, self.mb.ask_timeout).await
    }

    /// [`ask_with`](ActorRef::ask_with) with its own timeout (`None`: wait
    /// forever).
    pub async fn ask_timeout<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> A::Msg,
        timeout: Option<Duration>,
    ) -> Result<T, AskError<A::Msg>> {
        self.ask_inner(make, timeout).await
    }

    async fn ask_inner<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> A::Msg,
        timeout: Option<Duration>,
    ) -> Result<T, AskError<A::Msg>> {
        let mut wait = ReplyWait::new(timeout, &self.mb.flavor);
        let (reply, rx) = Reply::pair();
        let msg = make(reply);
        // Send: the fast path needs no timer and no clock; waiting for room
        // is bounded by the deadline, which then also bounds the reply.
        let pushed = match self.mb.try_admit(msg) {
            Err(PushError::Full(msg)) if self.mb.overflow.waits() => match wait.deadline() {
                None => self.mb.admit_waiting(msg).await,
                Some(d) => self.mb.admit_waiting_until(msg, d).await,
            },
            other => other,
        };
        self.admitted(pushed).map_err(AskError::Send)?;
        wait_reply(rx, wait).await
    }

    /// Stops the actor after the current message, without handling what is
    /// queued (the control lane overtakes the queue). Admission is closed and
    /// the queued messages go to the undelivered hook. Returns at once; see
    /// [`wait`](ActorRef::wait).
    pub fn stop_now(&self) {
        self.mb.close_admission();
        self.mb.signal(SIG_STOP);
        self.mb.notify_supervisor();
    }

    /// Kills the actor: its current handler is cut off at its next await
    /// point and no hook runs. Under a supervisor this counts as an abnormal
    /// exit (the child may be restarted), unless the mailbox was closed.
    pub fn kill(&self) {
        self.mb.kill();
    }

    /// Waits until the actor has terminated for good, and returns why.
    pub async fn wait(&self) -> Exit {
        self.mb.terminated().await
    }

    /// Graceful stop: closes admission (new messages are refused with
    /// [`SendError::Stopped`]), lets the actor handle what is queued, and
    /// waits for it to stop until `deadline`; then kills it, and hands what
    /// is still queued to the undelivered hook. Returns the actor's report.
    pub async fn stop(&self, deadline: Instant) -> ShutdownReport {
        let start = Instant::now();
        self.mb.close();
        let finished = tokio::time::timeout_at(deadline, self.mb.terminated())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(actor = %self.mb.name, "actor did not stop by its deadline; killing it");
            self.mb.kill();
            self.mb.terminated().await;
        }
        let mut report = self.mb.report();
        report.elapsed = start.elapsed();
        report
    }
}

impl<A: Actor> Drain for ActorRef<A> {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(self.stop(deadline))
    }
}

/// `ActorRef<A>` as a tower service: `call(req)` is
/// [`ask(req)`](ActorRef::ask), with the actor's ask timeout.
///
/// Admission is decided in `poll_ready`: it reserves a slot in the mailbox
/// (the same bound `tell` and `try_tell` use), and is `Pending` while the
/// mailbox is full, whatever its overflow policy (load shedding comes from
/// tower's `LoadShed` layer). `call` then queues the message into the
/// reserved slot, which cannot fail for lack of room. A reference dropped
/// (or cloned: a clone starts unreserved) after a ready `poll_ready` and
/// before `call` gives the slot back. `call` without a ready `poll_ready`
/// panics.
///
/// `poll_ready` fails once the actor is stopped. Errors are [`AskError<()>`]
/// boxed into [`BoxError`]; find them with `downcast_ref`.
impl<A, R> tower_service::Service<R> for ActorRef<A>
where
    A: AskFor<R>,
    R: Send + 'static,
{
    type Response = A::Reply;
    type Error = BoxError;
    type Future = ResponseFuture<A::Reply>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        if self.reserved {
            return Poll::Ready(Ok(()));
        }
        let waiting = self.waiting.get_mut().unwrap_or_else(|p| p.into_inner());
        let reserved = match waiting {
            Some(fut) => match fut.as_mut().poll(cx) {
                Poll::Ready(r) => {
                    *waiting = None;
                    r
                }
                Poll::Pending => return Poll::Pending,
            },
            None => match self.mb.try_reserve() {
                Ok(()) => true,
                Err(tokio::sync::TryAcquireError::Closed) => false,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    let mb = self.mb.clone();
                    let mut fut: Reserving = Box::pin(async move { mb.reserve().await });
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            *waiting = Some(fut);
                            return Poll::Pending;
                        }
                    }
                }
            },
        };
        if reserved {
            self.reserved = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(Box::new(AskError::<()>::Send(SendError::Stopped(())))))
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        assert!(
            std::mem::take(&mut self.reserved),
            "ActorRef::call without a reserved mailbox slot: call poll_ready (until ready) before every call"
        );
        let mut wait = ReplyWait::new(self.mb.ask_timeout, &self.mb.flavor);
        // The response may be awaited long after `call` (a tower caller is
        // free to); the timeout counts from the send, so fix it now (a clock
        // read, no timer).
        let _ = wait.deadline();
        let (reply, rx) = Reply::pair();
        let pushed = self.mb.push_reserved(A::wrap(req, reply));
        let sent = self.admitted(pushed);
        ResponseFuture {
            inner: Box::pin(async move {
                sent.map_err(|e| Box::new(AskError::Send(e).without_message()) as BoxError)?;
                wait_reply::<A::Reply, A::Msg>(rx, wait)
                    .await
                    .map_err(|e| Box::new(e.without_message()) as BoxError)
            }),
        }
    }
}

/// How long an ask waits for its reply, and how it waits.
struct ReplyWait {
    timeout: Option<Duration>,
    /// Read from the clock only when first needed.
    deadline: Option<Instant>,
    /// Whether the actor runs on a current-thread runtime (cached in its
    /// mailbox after the first ask).
    single: bool,
}

impl ReplyWait {
    fn new(timeout: Option<Duration>, flavor: &AtomicU8) -> Self {
        ReplyWait {
            timeout,
            deadline: None,
            single: current_thread(flavor),
        }
    }

    /// The ask's deadline, fixed on the first call.
    fn deadline(&mut self) -> Option<Instant> {
        if self.deadline.is_none() {
            // A timeout too long for the clock (`Duration::MAX`) is none.
            self.deadline = self.timeout.and_then(|d| Instant::now().checked_add(d));
        }
        self.deadline
    }
}

/// Whether this ask runs on a current-thread runtime; looked up once per
/// mailbox (`0`: not yet, `1`: current-thread, `2`: multi-thread or none),
/// since looking up the runtime clones a handle. An actor is asked from
/// its own runtime in all but odd cases, and a wrong guess only costs one
/// extra poll.
fn current_thread(flavor: &AtomicU8) -> bool {
    match flavor.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let single = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
            flavor.store(if single { 1 } else { 2 }, Ordering::Relaxed);
            single
        }
    }
}

/// Waits for an ask's reply, within its deadline.
///
/// A quick ask reads no clock and arms no timer: the first time the reply
/// is not there, the asker yields once (the actor usually answers
/// meanwhile), and only if it is still not there does it read the clock
/// (unless sending already fixed the deadline) and register a timer.
/// Registering and removing a timer costs more than the whole round trip
/// when asker and actor share a worker. So the timeout of an ask that was
/// sent at once counts from the asker's next turn on the scheduler: later
/// by one scheduling delay, never shorter.
async fn wait_reply<T: Send + 'static, M>(
    mut rx: ReplyRx<T>,
    mut wait: ReplyWait,
) -> Result<T, AskError<M>> {
    let mut yielded = false;
    let mut yield_mt = std::pin::pin!(tokio::task::yield_now());
    let mut sleep = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut rx).poll(cx) {
            return Poll::Ready(match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(p)) => Err(AskError::Panicked(p)),
                Err(_) => Err(AskError::NoReply),
            });
        }
        if wait.timeout.is_none() {
            return Poll::Pending;
        }
        if !yielded {
            if wait.single {
                // On a current-thread runtime the actor runs before this
                // task is polled again.
                yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // On a multi-thread runtime, tokio's `yield_now` defers this
            // task behind the ones just woken: an actor woken by this
            // ask's send, on this worker, runs (and answers) first.
            // Outside a runtime it is a plain re-poll.
            if yield_mt.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            yielded = true;
        }
        let Some(deadline) = wait.deadline() else {
            return Poll::Pending;
        };
        if sleep.is_none() {
            sleep.set(Some(tokio::time::sleep_until(deadline)));
        }
        let expired = sleep
            .as_mut()
            .as_pin_mut()
            .is_some_and(|s| s.poll(cx).is_ready());
        if expired {
            Poll::Ready(Err(AskError::Timeout))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The future returned by the [`Service`](tower_service::Service) impl of
/// [`ActorRef`].
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

//! Spawning actors, and the loop every incarnation runs.

use std::borrow::Cow;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Semaphore;
use weft_core::{Overflow, OverflowError, Panicked, catch_unwind};

use crate::actor::{Actor, Context, Exit};
use crate::actor_ref::ActorRef;
use crate::error::BuildError;
use crate::mailbox::{LazyQueue, Mailbox, RunStats, SIG_STOP, UndeliveredHook};
use crate::reply;

/// The default mailbox capacity: deep enough to absorb bursts, small enough
/// that an actor stays cheap (the queue's slots are allocated at its first
/// message).
pub const DEFAULT_CAPACITY: usize = 64;

/// The default ask timeout: 5 s, the default of Erlang's `gen_server:call`.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Spawns an actor with the default mailbox ([`DEFAULT_CAPACITY`],
/// `Overflow::Block`) and ask timeout ([`DEFAULT_ASK_TIMEOUT`]).
///
/// The actor runs until it stops itself, is stopped through a reference, or
/// panics; it is not restarted (put it under a
/// [`Supervisor`](crate::Supervisor) for that). Must be called within a
/// tokio runtime.
pub fn spawn<A: Actor>(actor: A) -> ActorRef<A> {
    Builder::new()
        .spawn(actor)
        .expect("the default configuration is valid")
}

/// Configures an actor's mailbox and spawns it.
///
/// ```
/// use std::time::Duration;
/// use weft_actor::{Actor, Builder, Context};
/// use weft_core::Overflow;
///
/// struct Sink;
/// impl Actor for Sink {
///     type Msg = u32;
///     async fn handle(&mut self, _: u32, _: &mut Context<Self>) {}
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = Builder::new()
///     .name("sink")
///     .capacity(1_000)
///     .overflow(Overflow::Reject)
///     .ask_timeout(Some(Duration::from_millis(200)))
///     .on_undelivered(|m: u32| eprintln!("undelivered {m}"))
///     .spawn(Sink)
///     .unwrap();
/// sink.tell(1).await.unwrap();
/// # }
/// ```
pub struct Builder<M> {
    name: Cow<'static, str>,
    capacity: Option<usize>,
    overflow: Overflow,
    ask_timeout: Option<Duration>,
    hook: Option<UndeliveredHook<M>>,
}

impl<M: Send + 'static> Default for Builder<M> {
    fn default() -> Self {
        Builder::new()
    }
}

impl<M: Send + 'static> Builder<M> {
    /// The defaults: name `"actor"`, capacity [`DEFAULT_CAPACITY`],
    /// `Overflow::Block`, ask timeout [`DEFAULT_ASK_TIMEOUT`], and undelivered
    /// messages logged (warn) and dropped.
    pub fn new() -> Self {
        Builder {
            name: Cow::Borrowed("actor"),
            capacity: Some(DEFAULT_CAPACITY),
            overflow: Overflow::Block,
            ask_timeout: Some(DEFAULT_ASK_TIMEOUT),
            hook: None,
        }
    }

    /// The name used in logs, metrics and reports.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Mailbox capacity. Default [`DEFAULT_CAPACITY`]; 0 is refused.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// An unbounded mailbox, asked for by name. Memory then grows with the
    /// backlog; prefer a bound.
    pub fn unbounded(mut self) -> Self {
        self.capacity = None;
        self
    }

    /// What `tell` does when the mailbox is full. Default `Overflow::Block`
    /// (backpressure).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// How long `ask` waits (for mailbox room and for the reply) before
    /// giving up: with [`AskError::Timeout`](crate::AskError::Timeout) once
    /// the message was delivered, or with the message handed back in
    /// `AskError::Send(SendError::Timeout(msg))` if the mailbox stayed full.
    /// `None` waits forever. Default [`DEFAULT_ASK_TIMEOUT`].
    ///
    /// The clock is read only when needed: for an ask sent at once, the
    /// timeout counts from the asker's first turn on the scheduler after
    /// the reply was found missing (a quick ask reads no clock and arms no
    /// timer); for an ask that waits for room, from when it starts waiting;
    /// through the tower `Service`, from `call`.
    pub fn ask_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// Where messages go that were accepted but will never be handled (left
    /// queued at a final stop, or evicted by `Overflow::DropOldest`). An
    /// `ask` whose message is handed here without being answered gets
    /// [`AskError::NoReply`](crate::AskError::NoReply) when the hook drops it.
    ///
    /// The hook runs on whichever task hands the message back (the
    /// terminating actor, or a sender whose message evicted it). A panic in
    /// it is caught and logged per message: the other messages are still
    /// handed over, the actor still terminates, and the message still
    /// counts as `returned`.
    pub fn on_undelivered(mut self, hook: impl Fn(M) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    pub(crate) fn mailbox(&self) -> Result<Arc<Mailbox<M>>, BuildError> {
        // A bounded mailbox's bound is the semaphore, shared by every way
        // in (including the tower `Service`'s reservations); the queue under
        // it has as many slots, so a message holding a permit always fits,
        // and is made at the first message, so that spawning allocates no
        // slots and an actor that never receives a message stays small.
        let room = match self.capacity {
            Some(cap) => {
                OverflowError::check(cap, self.overflow)?;
                Some(Semaphore::new(cap.min(Semaphore::MAX_PERMITS)))
            }
            None => {
                if matches!(self.overflow, Overflow::DropOldest | Overflow::DropNewest) {
                    return Err(OverflowError::UnboundedWithDrop.into());
                }
                None
            }
        };
        let queue = LazyQueue::new(self.capacity);
        Ok(Arc::new(Mailbox::new(
            queue,
            room,
            self.overflow,
            self.name.clone(),
            self.ask_timeout,
            self.hook.clone(),
        )))
    }

    /// Spawns `actor` on the current tokio runtime.
    pub fn spawn<A: Actor<Msg = M>>(self, actor: A) -> Result<ActorRef<A>, BuildError> {
        let mb = self.mailbox()?;
        let myself = ActorRef::from_mailbox(mb);
        spawn_standalone(actor, myself.clone());
        Ok(myself)
    }
}

impl<M> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("ask_timeout", &self.ask_timeout)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

fn spawn_standalone<A: Actor>(actor: A, myself: ActorRef<A>) {
    let mb = myself.mailbox().clone();
    mb.begin();
    // The guard is made here, so that it runs even if the task is dropped
    // before its first poll.
    let guard = Incarnation {
        mb: mb.clone(),
        exit: None,
        standalone: true,
    };
    let handle = tokio::spawn(async move {
        let mut guard = guard;
        guard.exit = Some(run(actor, myself, 0).await);
    });
    mb.register(handle.abort_handle());
}

/// Spawns one supervised incarnation; the task's output is its exit.
pub(crate) fn spawn_incarnation<A: Actor>(
    actor: A,
    myself: ActorRef<A>,
    incarnation: u64,
) -> tokio::task::JoinHandle<Exit> {
    let mb = myself.mailbox().clone();
    mb.begin();
    let guard = Incarnation {
        mb: mb.clone(),
        exit: None,
        standalone: false,
    };
    let handle = tokio::spawn(async move {
        let mut guard = guard;
        let exit = run(actor, myself, incarnation).await;
        guard.exit = Some(exit.clone());
        exit
    });
    mb.register(handle.abort_handle());
    handle
}

/// Runs when an incarnation's task ends, whether it returned or was aborted.
struct Incarnation<M> {
    mb: Arc<Mailbox<M>>,
    exit: Option<Exit>,
    standalone: bool,
}

impl<M> Drop for Incarnation<M> {
    fn drop(&mut self) {
        // Whatever happens below, the incarnation is marked ended, so that a
        // restart or a stop waiting for it is not left waiting.
        struct End<'a, M>(&'a Mailbox<M>);
        impl<M> Drop for End<'_, M> {
            fn drop(&mut self) {
                self.0.end();
            }
        }
        let _end = End(&self.mb);
        let exit = self.exit.take().unwrap_or(Exit::Killed);
        if exit == Exit::Killed {
            if self.mb.stats.run.in_flight.swap(false, Ordering::Relaxed) {
                self.mb.stats.run.aborted.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(actor = %self.mb.name, "actor killed");
        }
        if self.standalone {
            self.mb.finish(exit);
        }
    }
}

async fn run<A: Actor>(mut actor: A, myself: ActorRef<A>, incarnation: u64) -> Exit {
    let mb = myself.mailbox().clone();
    let mut ctx = Context::new(myself, incarnation);
    match catch_unwind(actor.started(&mut ctx)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(actor = %mb.name, error = %e, "actor failed to start");
            return Exit::StartFailed(e.to_string());
        }
        Err(p) => {
            tracing::error!(actor = %mb.name, panic = %p, "actor panicked in started");
            return Exit::Panicked(p);
        }
    }
    let exit = loop {
        if mb.signals.load(Ordering::Acquire) & SIG_STOP != 0 {
            mb.signals.fetch_and(!SIG_STOP, Ordering::AcqRel);
            break Exit::Stopped;
        }
        let msg = match mb.try_pop() {
            Some(msg) => msg,
            None => {
                // Wait: register, then look once more (a sender queues, then
                // wakes, so nothing slips between the two).
                let next = mb
                    .parker
                    .wait_for(|| {
                        if let Some(msg) = mb.try_pop() {
                            Some(Next::Msg(msg))
                        } else if mb.signals.load(Ordering::Acquire) != 0 {
                            Some(Next::Signal)
                        } else if mb.queue.is_closed() && mb.queue.is_empty() {
                            Some(Next::Closed)
                        } else {
                            None
                        }
                    })
                    .await;
                match next {
                    Next::Msg(msg) => msg,
                    Next::Signal => continue,
                    Next::Closed => break Exit::Stopped,
                }
            }
        };
        let run = &mb.stats.run;
        run.in_flight.store(true, Ordering::Relaxed);
        let result = handle_one(&mut actor, msg, &mut ctx).await;
        run.in_flight.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => RunStats::bump(&run.completed),
            Err(p) => {
                RunStats::bump(&run.failed);
                tracing::error!(actor = %mb.name, panic = %p, "actor handler panicked");
                #[cfg(feature = "metrics")]
                metrics::counter!("weft_actor_panics_total", "name" => mb.name.to_string())
                    .increment(1);
                break Exit::Panicked(p);
            }
        }
        if ctx.stop_requested() {
            break Exit::Normal;
        }
        // Let other tasks run when the mailbox never empties.
        tokio::task::consume_budget().await;
    };
    if let Err(p) = catch_unwind(actor.stopping(&mut ctx)).await {
        tracing::error!(actor = %mb.name, panic = %p, "actor panicked in stopping");
    }
    if let Err(p) = catch_unwind(actor.stopped(&exit)).await {
        tracing::error!(actor = %mb.name, panic = %p, "actor panicked in stopped");
    }
    exit
}

enum Next<M> {
    Msg(M),
    Signal,
    Closed,
}

/// Handles one message; on a panic, a [`Reply`](crate::Reply) dropped with
/// the handler's future answers `Panicked`.
///
/// The actor's own panic boundary rather than `weft_core::catch_unwind`:
/// the panic must be recorded (`set_panic`) before the handler's future is
/// dropped, so that a reply held in it (by a combinator or a hand-written
/// future, which keep their state across the unwind) answers `Panicked`
/// rather than `NoReply`.
async fn handle_one<A: Actor>(
    actor: &mut A,
    msg: A::Msg,
    ctx: &mut Context<A>,
) -> Result<(), Panicked> {
    let mut fut = std::pin::pin!(Some(actor.handle(msg, ctx)));
    std::future::poll_fn(|cx| {
        let polled = {
            let _in_handler = reply::HandlerPoll::enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let inner = fut
                    .as_mut()
                    .as_pin_mut()
                    .expect("a handler is not polled after it returned");
                let p = inner.poll(cx);
                if p.is_ready() {
                    // Dropped inside the boundary: a panic in its drop is
                    // the handler's panic.
                    fut.set(None);
                }
                p
            }))
        };
        match polled {
            Ok(p) => {
                reply::after_handler_poll();
                p.map(Ok)
            }
            Err(payload) => {
                let p = Panicked::from_payload(payload.as_ref());
                reply::set_panic(Some(p.clone()));
                // The future, and with it the message and any unanswered
                // reply, is dropped here, on this thread, while the panic
                // is recorded (a second panic in that drop is contained).
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| fut.set(None)));
                reply::set_panic(None);
                Poll::Ready(Err(p))
            }
        }
    })
    .await
}

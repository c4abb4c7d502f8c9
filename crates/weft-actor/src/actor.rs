//! The `Actor` trait, its context, and why an incarnation ended.

use std::fmt;
use std::future::Future;

use weft_core::{BoxError, Panicked};

use crate::actor_ref::ActorRef;
use crate::reply::Reply;

/// A task that owns its state and handles one message at a time, with
/// `&mut self`.
///
/// An actor handles **one message type**, [`Actor::Msg`], usually an enum
/// with one variant per request. Messages travel through the mailbox as
/// that type, unboxed: no allocation and no dynamic dispatch per message
/// (see the crate docs for why this design was chosen over a `Handler<M>`
/// trait per message type). A variant that wants an answer carries a
/// [`Reply<R>`](crate::Reply); [`ActorRef::ask_with`] builds it for you, and
/// [`AskFor`] lets `ask(request)` and the tower `Service` do so from a
/// request value.
///
/// Lifecycle, per incarnation: [`started`](Actor::started) → any number of
/// [`handle`](Actor::handle) calls → [`stopping`](Actor::stopping) →
/// [`stopped`](Actor::stopped). A panic anywhere is caught; a panic in
/// `handle` ends the incarnation with [`Exit::Panicked`] (the supervisor, if
/// any, decides whether to start a new one from its factory).
///
/// ```
/// use weft_actor::{Actor, Context, Reply};
///
/// struct Counter { n: u64 }
///
/// enum Msg { Add(u64), Get(Reply<u64>) }
///
/// impl Actor for Counter {
///     type Msg = Msg;
///     async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Self>) {
///         match msg {
///             Msg::Add(k) => self.n += k,
///             Msg::Get(reply) => { let _ = reply.send(self.n); }
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let counter = weft_actor::spawn(Counter { n: 0 });
/// counter.tell(Msg::Add(2)).await.unwrap();
/// counter.tell(Msg::Add(3)).await.unwrap();
/// assert_eq!(counter.ask_with(Msg::Get).await.unwrap(), 5);
/// # }
/// ```
pub trait Actor: Send + Sized + 'static {
    /// The one message type this actor handles.
    type Msg: Send + 'static;

    /// Called once per incarnation before the first message. An error ends
    /// the incarnation with [`Exit::StartFailed`].
    fn started(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send;

    /// Called when the incarnation is about to end (after the last message,
    /// or after a panic), unless it was killed.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Called last, with the reason the incarnation ended, unless it was
    /// killed.
    fn stopped(&mut self, exit: &Exit) -> impl Future<Output = ()> + Send {
        let _ = exit;
        async {}
    }
}

/// Lets `ask(request)` and the tower [`Service`](tower_service::Service) build
/// the message for a request value and its [`Reply`].
///
/// ```
/// use weft_actor::{Actor, AskFor, Context, Reply};
///
/// struct Echo;
/// struct Ping(u32);
/// enum Msg { Ping(Ping, Reply<u32>) }
///
/// impl Actor for Echo {
///     type Msg = Msg;
///     async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
///         let Msg::Ping(Ping(n), reply) = msg;
///         let _ = reply.send(n + 1);
///     }
/// }
///
/// impl AskFor<Ping> for Echo {
///     type Reply = u32;
///     fn wrap(req: Ping, reply: Reply<u32>) -> Msg { Msg::Ping(req, reply) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let echo = weft_actor::spawn(Echo);
/// assert_eq!(echo.ask(Ping(41)).await.unwrap(), 42);
/// # }
/// ```
pub trait AskFor<Req>: Actor {
    /// The answer to `Req`.
    type Reply: Send + 'static;
    /// Builds the message that carries `req` and its reply.
    fn wrap(req: Req, reply: Reply<Self::Reply>) -> Self::Msg;
}

/// What a handler can do besides changing its own state.
pub struct Context<A: Actor> {
    myself: ActorRef<A>,
    stop: bool,
    incarnation: u64,
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(myself: ActorRef<A>, incarnation: u64) -> Self {
        Context {
            myself,
            stop: false,
            incarnation,
        }
    }

    /// A reference to this actor (valid across restarts).
    pub fn myself(&self) -> &ActorRef<A> {
        &self.myself
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        self.myself.name()
    }

    /// Ends this incarnation after the current message, with
    /// [`Exit::Normal`]. Queued messages stay in the mailbox: a supervisor
    /// that restarts the actor (a `Permanent` child) delivers them to the
    /// next incarnation; otherwise they go to the undelivered hook.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop
    }

    /// Which incarnation this is: 0 for the first, +1 per restart.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}

impl<A: Actor> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name())
            .field("incarnation", &self.incarnation)
            .field("stop", &self.stop)
            .finish()
    }
}

/// Why an incarnation of an actor (or a supervisor) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The actor called [`Context::stop`], or its supervisor stopped it to
    /// restart it.
    Normal,
    /// Its mailbox was closed and drained ([`ActorRef::stop`]), or it was
    /// told to stop now ([`ActorRef::stop_now`]).
    Stopped,
    /// A handler or hook panicked.
    Panicked(Panicked),
    /// [`Actor::started`] returned an error.
    StartFailed(String),
    /// It was killed (aborted) at a deadline or by [`ActorRef::kill`].
    Killed,
    /// A supervisor gave up: its restart intensity was exceeded.
    Escalated(String),
}

impl Exit {
    /// Whether the exit counts as a failure (restarts `Transient` children).
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Exit::Normal | Exit::Stopped)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Normal => f.write_str("normal"),
            Exit::Stopped => f.write_str("stopped"),
            Exit::Panicked(p) => write!(f, "{p}"),
            Exit::StartFailed(e) => write!(f, "start failed: {e}"),
            Exit::Killed => f.write_str("killed"),
            Exit::Escalated(e) => write!(f, "escalated: {e}"),
        }
    }
}

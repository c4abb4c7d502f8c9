//! Actors for tokio services: bounded mailboxes, typed asks, panics
//! contained, supervision trees in the style of Erlang/OTP, a registry and
//! pools — and `ActorRef` as a tower `Service`.
//!
//! An [`Actor`] owns its state and handles one message at a time with
//! `&mut self`. Its [`ActorRef`] is a cheap, cloneable address that stays
//! valid across restarts.
//!
//! ```
//! use weft_actor::{Actor, Context, Reply};
//!
//! struct Account { balance: i64 }
//!
//! enum Msg {
//!     Deposit(i64),
//!     Balance(Reply<i64>),
//! }
//!
//! impl Actor for Account {
//!     type Msg = Msg;
//!     async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Self>) {
//!         match msg {
//!             Msg::Deposit(n) => self.balance += n,
//!             Msg::Balance(reply) => { let _ = reply.send(self.balance); }
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let account = weft_actor::spawn(Account { balance: 0 });
//! account.tell(Msg::Deposit(70)).await.unwrap();
//! account.try_tell(Msg::Deposit(30)).unwrap();
//! assert_eq!(account.ask_with(Msg::Balance).await.unwrap(), 100);
//!
//! // Graceful stop: refuse new messages, handle what is queued, report.
//! let report = account
//!     .stop(tokio::time::Instant::now() + std::time::Duration::from_secs(1))
//!     .await;
//! assert_eq!(report.completed, 3);
//! assert!(report.is_clean());
//! # }
//! ```
//!
//! # One message type per actor (why not `Handler<M>`)
//!
//! An actor declares one message type, [`Actor::Msg`], usually an enum. The
//! mailbox is a bounded queue of exactly that type, so a message is moved
//! into the queue as it is: **no box and no virtual call per message**. Crates
//! with a `Handler<M>` trait per message type (kameo, actix) must erase the
//! message type to put different messages in one queue, which costs a heap
//! allocation and a dynamic call per message. A typed answer rides inside
//! the message as a [`Reply<R>`]; [`ActorRef::ask_with`] creates it
//! (`actor.ask_with(Msg::Balance)`), and [`AskFor<R>`] maps a request type to
//! its variant so that `actor.ask(request)` and the tower `Service<R>` impl
//! work with plain request values.
//!
//! # Mailbox and control lane
//!
//! The ordinary lane is bounded by default ([`DEFAULT_CAPACITY`]) and
//! governed by [`weft_core::Overflow`] like every weft queue. The bound is a
//! semaphore shared by every way in (`tell`, `try_tell`, `ask`, and the tower
//! `Service`, which reserves its slot in `poll_ready`); under it, a lock-free
//! MPMC queue (`concurrent-queue`, the queue under weft-core's own `Queue`)
//! made at the actor's first message. Stop and supervision signals travel on
//! a separate control lane (a flag checked before every message), so they
//! overtake queued messages.
//!
//! # Failure
//!
//! A panic in a handler is caught: the message counts as failed, an `ask`
//! waiting on it gets [`AskError::Panicked`], the incarnation ends with
//! [`Exit::Panicked`], and its supervisor (if any) decides what happens.
//! A standalone actor (from [`spawn`]) stops for good; queued messages go to
//! the undelivered hook.
//!
//! # Shutdown
//!
//! [`ActorRef::stop`] closes admission, lets the actor handle what is queued
//! until a deadline, then kills it; messages never handled go to the
//! undelivered hook ([`Builder::on_undelivered`]) and are counted. The
//! returned [`weft_core::ShutdownReport`] balances:
//! `accepted = completed + failed + aborted + returned`. `ActorRef` (and
//! [`Supervisor`]) implement [`weft_core::Drain`].
//!
//! # Feature flags
//!
//! - `metrics`: emit the metrics listed in docs/metrics.md.
#![forbid(unsafe_code)]

mod actor;
mod actor_ref;
mod error;
mod mailbox;
mod park;
pub mod pool;
mod registry;
mod reply;
mod spawn;
pub mod supervisor;

pub use actor::{Actor, AskFor, Context, Exit};
pub use actor_ref::{ActorRef, ResponseFuture};
pub use error::{AskError, BuildError, RegistryError, SendError};
pub use mailbox::{ActorStats, UndeliveredHook};
pub use pool::{Pool, Routing};
pub use registry::Registry;
pub use reply::Reply;
pub use spawn::{Builder, DEFAULT_ASK_TIMEOUT, DEFAULT_CAPACITY, spawn};
pub use supervisor::{Supervisor, SupervisorBuilder};

/// Calls a factory, turning a panic into [`weft_core::Panicked`].
pub(crate) fn catch_unwind_sync<T>(
    f: &mut (dyn FnMut() -> T + Send),
) -> Result<T, weft_core::Panicked> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| weft_core::Panicked::from_payload(payload.as_ref()))
}

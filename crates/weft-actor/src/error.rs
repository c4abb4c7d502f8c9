//! Errors of weft-actor.

use std::fmt;

use weft_core::Panicked;
use weft_core::queue::PushError;

/// A message was not delivered to the mailbox; it rides inside the error.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SendError<M> {
    /// The mailbox is full (policy `Reject`, or a `try_tell` found it full).
    #[error("mailbox is full: retry later, or spawn with Overflow::Block for backpressure")]
    Full(M),
    /// The mailbox is full and its policy is `DropNewest`: the message was shed.
    #[error("mailbox is full: message dropped (Overflow::DropNewest)")]
    Dropped(M),
    /// The mailbox stayed full for the whole `WaitTimeout` (or, for an
    /// `ask`, until its ask timeout ran out).
    #[error("mailbox stayed full for the whole wait timeout")]
    Timeout(M),
    /// The actor is stopping or stopped; its mailbox accepts nothing more.
    #[error("actor is stopped: its mailbox is closed")]
    Stopped(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m)
            | SendError::Dropped(m)
            | SendError::Timeout(m)
            | SendError::Stopped(m) => m,
        }
    }

    /// Whether the actor was stopped (as opposed to its mailbox being full).
    pub fn is_stopped(&self) -> bool {
        matches!(self, SendError::Stopped(_))
    }

    pub(crate) fn from_push(e: PushError<M>) -> Self {
        match e {
            PushError::Full(m) => SendError::Full(m),
            PushError::Dropped(m) => SendError::Dropped(m),
            PushError::Timeout(m) => SendError::Timeout(m),
            PushError::Closed(m) => SendError::Stopped(m),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SendError::Full(_) => "Full",
            SendError::Dropped(_) => "Dropped",
            SendError::Timeout(_) => "Timeout",
            SendError::Stopped(_) => "Stopped",
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(..)", self.name())
    }
}

/// An `ask` did not produce a reply.
///
/// When the request never reached the mailbox, the message built for it rides
/// inside [`AskError::Send`]; take it back with [`into_inner`](AskError::into_inner).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum AskError<M> {
    /// The message was not delivered (mailbox full or actor stopped).
    #[error(transparent)]
    Send(SendError<M>),
    /// No reply arrived within the ask timeout (the message was delivered;
    /// an ask that timed out before its message got into a full mailbox is
    /// `Send(SendError::Timeout(msg))` instead, with the message).
    #[error("no reply within the ask timeout")]
    Timeout,
    /// The handler panicked while handling this message.
    #[error(transparent)]
    Panicked(Panicked),
    /// The actor dropped the reply without answering (it stopped, was
    /// killed, or its handler chose not to reply).
    #[error("actor dropped the reply without answering")]
    NoReply,
}

impl<M> AskError<M> {
    /// The message, if it never reached the mailbox.
    pub fn into_inner(self) -> Option<M> {
        match self {
            AskError::Send(e) => Some(e.into_inner()),
            _ => None,
        }
    }

    /// The same error without the message: what the tower `Service`
    /// returns (boxed), since a boxed error must be `Send + Sync`.
    pub fn without_message(self) -> AskError<()> {
        match self {
            AskError::Send(SendError::Full(_)) => AskError::Send(SendError::Full(())),
            AskError::Send(SendError::Dropped(_)) => AskError::Send(SendError::Dropped(())),
            AskError::Send(SendError::Timeout(_)) => AskError::Send(SendError::Timeout(())),
            AskError::Send(SendError::Stopped(_)) => AskError::Send(SendError::Stopped(())),
            AskError::Timeout => AskError::Timeout,
            AskError::Panicked(p) => AskError::Panicked(p),
            AskError::NoReply => AskError::NoReply,
        }
    }

    /// Whether the handler panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, AskError::Panicked(_))
    }

    /// Whether the ask timed out: waiting for the reply
    /// ([`Timeout`](AskError::Timeout)), or waiting for room in a full
    /// mailbox (`Send(SendError::Timeout(msg))`, the message handed back).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            AskError::Timeout | AskError::Send(SendError::Timeout(_))
        )
    }
}

impl<M> fmt::Debug for AskError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Send(e) => f.debug_tuple("Send").field(e).finish(),
            AskError::Timeout => f.write_str("Timeout"),
            AskError::Panicked(p) => f.debug_tuple("Panicked").field(p).finish(),
            AskError::NoReply => f.write_str("NoReply"),
        }
    }
}

/// An actor, supervisor or pool could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The mailbox capacity or overflow policy is invalid.
    #[error(transparent)]
    Overflow(#[from] weft_core::OverflowError),
    /// A pool needs at least one actor.
    #[error("a pool needs at least 1 actor (got 0): pass the number of actors to run")]
    EmptyPool,
    /// A restart intensity of 0 restarts in a zero period makes no sense.
    #[error("restart period must be non-zero: pass e.g. Duration::from_secs(5)")]
    ZeroPeriod,
    /// Two children of one supervisor have the same id.
    #[error("duplicate child id {0:?}: every child of a supervisor needs its own id")]
    DuplicateChild(String),
}

/// A name is already taken in a [`Registry`](crate::Registry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another live actor holds this name.
    #[error("name {0:?} is already registered to a live actor: unregister it or pick another name")]
    Taken(String),
}

//! The reply half of an `ask`.

use std::cell::{Cell, RefCell};
use std::fmt;

use tokio::sync::oneshot;
use weft_core::Panicked;

type Pending = Box<dyn FnOnce(Panicked)>;

thread_local! {
    /// Set while the future of a handler that panicked is being dropped, so
    /// that a [`Reply`] dropped with it answers `Panicked` instead of `NoReply`.
    static PANIC: RefCell<Option<Panicked>> = const { RefCell::new(None) };
    /// Replies dropped while the thread unwinds (a reply held on the
    /// handler's stack): answered with the panic once it is caught.
    static UNWOUND: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    /// Handler polls in progress on this thread: only a panic unwinding
    /// inside one is caught by the actor (and answers `UNWOUND`).
    static IN_HANDLER: Cell<u32> = const { Cell::new(0) };
    /// How many replies wait in `UNWOUND`: checked after every handler
    /// poll instead of `UNWOUND` itself (a `Cell` with no destructor is
    /// the cheapest thread-local there is; `UNWOUND` has one).
    static UNWOUND_LEN: Cell<u32> = const { Cell::new(0) };
}

/// Takes the replies waiting in `UNWOUND`.
fn take_unwound() -> Vec<Pending> {
    UNWOUND_LEN.with(|n| n.set(0));
    UNWOUND
        .try_with(|u| std::mem::take(&mut *u.borrow_mut()))
        .unwrap_or_default()
}

/// The message given to an ask whose reply was dropped by a panic that the
/// actor did not catch itself: the holder's own task panicked (a helper the
/// reply was handed to), or the handler caught the panic.
const HOLDER_PANICKED: &str = "the reply was dropped by a panic in the code holding it";

/// Marks one poll of a handler's future on this thread (see
/// [`after_handler_poll`]).
pub(crate) struct HandlerPoll(());

impl HandlerPoll {
    #[inline]
    pub(crate) fn enter() -> Self {
        IN_HANDLER.with(|n| n.set(n.get() + 1));
        HandlerPoll(())
    }
}

impl Drop for HandlerPoll {
    #[inline]
    fn drop(&mut self) {
        IN_HANDLER.with(|n| n.set(n.get() - 1));
    }
}

/// After a handler poll that did not end in a panic caught by the actor:
/// replies dropped while a panic unwound inside that poll were dropped by a
/// panic the handler caught itself, so nobody else will answer them.
#[inline]
pub(crate) fn after_handler_poll() {
    if UNWOUND_LEN.with(Cell::get) == 0 {
        return;
    }
    for answer in take_unwound() {
        answer(Panicked::new(HOLDER_PANICKED));
    }
}

pub(crate) fn set_panic(p: Option<Panicked>) {
    if let Some(p) = &p {
        for answer in take_unwound() {
            answer(p.clone());
        }
    }
    PANIC.with(|slot| *slot.borrow_mut() = p);
}

/// Where an actor sends the answer to an `ask`.
///
/// A message that expects an answer carries a `Reply<R>`; the handler calls
/// [`send`](Reply::send). If the handler panics while it holds the reply, the
/// asker gets [`AskError::Panicked`](crate::AskError::Panicked); if the reply
/// is dropped unanswered otherwise, the asker gets
/// [`AskError::NoReply`](crate::AskError::NoReply). A reply may be kept and
/// answered later (from another task, or a later message).
pub struct Reply<R: Send + 'static> {
    tx: Option<oneshot::Sender<Result<R, Panicked>>>,
}

pub(crate) type ReplyRx<R> = oneshot::Receiver<Result<R, Panicked>>;

impl<R: Send + 'static> Reply<R> {
    pub(crate) fn pair() -> (Reply<R>, ReplyRx<R>) {
        let (tx, rx) = oneshot::channel();
        (Reply { tx: Some(tx) }, rx)
    }

    /// A reply nobody waits for: for sending an ask-shaped message with
    /// `tell` when the answer is not wanted.
    pub fn detached() -> Reply<R> {
        Reply { tx: None }
    }

    /// Answers the ask. Hands the value back if the asker stopped waiting
    /// (it timed out or was dropped).
    pub fn send(mut self, value: R) -> Result<(), R> {
        match self.tx.take() {
            Some(tx) => tx.send(Ok(value)).map_err(|r| match r {
                Ok(v) => v,
                Err(_) => unreachable!("only Ok values are sent here"),
            }),
            None => Err(value),
        }
    }

    /// Whether the asker stopped waiting, so the answer would be wasted.
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }
}

impl<R: Send + 'static> Drop for Reply<R> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            if std::thread::panicking() {
                if IN_HANDLER.try_with(Cell::get).unwrap_or(0) == 0 {
                    // Not inside a handler's poll: the actor will not catch
                    // this panic, so answer now (the message is unknown).
                    let _ = tx.send(Err(Panicked::new(HOLDER_PANICKED)));
                    return;
                }
                let answer: Pending = Box::new(move |p| {
                    let _ = tx.send(Err(p));
                });
                if UNWOUND.try_with(|u| u.borrow_mut().push(answer)).is_ok() {
                    UNWOUND_LEN.with(|n| n.set(n.get() + 1));
                }
            } else if let Some(p) = PANIC.with(|slot| slot.borrow().clone()) {
                let _ = tx.send(Err(p));
            }
        }
    }
}

impl<R: Send + 'static> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("closed", &self.is_closed())
            .finish()
    }
}

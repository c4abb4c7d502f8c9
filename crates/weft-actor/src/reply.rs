//! The reply half of an `ask`.

use std::cell::RefCell;
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
}

pub(crate) fn set_panic(p: Option<Panicked>) {
    if let Some(p) = &p {
        let pending = UNWOUND.with(|u| std::mem::take(&mut *u.borrow_mut()));
        for answer in pending {
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
                let answer: Pending = Box::new(move |p| {
                    let _ = tx.send(Err(p));
                });
                let _ = UNWOUND.try_with(|u| u.borrow_mut().push(answer));
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

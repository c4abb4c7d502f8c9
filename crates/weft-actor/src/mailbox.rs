//! The mailbox shared by an actor's references and its incarnations.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use concurrent_queue::ConcurrentQueue;
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;
use weft_core::Overflow;
use weft_core::queue::{Admitted, PushError};

use crate::actor::Exit;
use crate::park::Parker;

/// What happens to a message that was accepted but never handled: the actor
/// stopped (or was killed) with it still queued, or it was evicted under
/// `Overflow::DropOldest`.
pub type UndeliveredHook<M> = Arc<dyn Fn(M) + Send + Sync>;

/// Control-lane signal: stop after the current message, leaving the queue.
pub(crate) const SIG_STOP: u8 = 1;

/// The mailbox outlives every incarnation of its actor: references point at
/// it, so they stay valid across restarts.
pub(crate) struct Mailbox<M> {
    /// The ordinary lane, made at the first message (an actor that never
    /// receives one allocates no slots); admission is decided by `room`
    /// first, so its own bound is never reached.
    pub(crate) queue: LazyQueue<M>,
    /// The mailbox's bound, shared by every path in (`tell`, `try_tell`,
    /// `ask`, and the tower `Service`'s reservations): one permit per queued
    /// message or reserved slot, forgotten when taken and given back when the
    /// actor takes the message out (or it is handed back). `None`: unbounded.
    pub(crate) room: Option<Semaphore>,
    /// What a sender does when `room` has no permit left.
    pub(crate) overflow: Overflow,
    /// The control lane: signals checked before every message, so they
    /// overtake whatever is queued.
    pub(crate) signals: AtomicU8,
    /// Parks an idle incarnation; senders and signals wake it.
    pub(crate) parker: Parker,
    pub(crate) name: Cow<'static, str>,
    pub(crate) ask_timeout: Option<Duration>,
    /// The flavor of the runtime this mailbox's first asker ran on, once
    /// known (see `actor_ref::current_thread`).
    pub(crate) flavor: AtomicU8,
    pub(crate) hook: Option<UndeliveredHook<M>>,
    pub(crate) stats: Stats,
    pub(crate) life: Mutex<Life>,
    /// Set once, when the actor terminates for good.
    pub(crate) exit: OnceLock<Exit>,
    pub(crate) done: Notify,
}

/// The ordinary lane's storage: a lock-free MPMC queue (`concurrent-queue`,
/// the queue under `async-channel` and so under `weft_core::queue::Queue`),
/// made on first use, with `capacity` slots or unbounded.
///
/// Not `weft_core::queue::Queue` itself: the mailbox already has its own
/// bound (the semaphore, which applies the `Overflow` policy) and its own
/// wake-up (the parker), and `Queue`'s channel would add three event
/// notifications per message, each a `SeqCst` fence and a mutex
/// lock/unlock in `event-listener` 5 (about a fifth of the time of a
/// current-thread `tell` in a profile). Refusals still use weft-core's
/// [`PushError`]/[`Admitted`].
pub(crate) struct LazyQueue<M> {
    /// Boxed: the queue is cache-padded (aligned to 128 bytes), and an
    /// over-aligned mailbox would need an aligned allocation at every spawn.
    cell: OnceLock<Box<ConcurrentQueue<M>>>,
    capacity: Option<usize>,
}

impl<M> LazyQueue<M> {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        LazyQueue {
            cell: OnceLock::new(),
            capacity,
        }
    }

    #[inline]
    fn made(&self) -> &ConcurrentQueue<M> {
        self.cell.get_or_init(|| {
            Box::new(match self.capacity {
                Some(cap) => ConcurrentQueue::bounded(cap),
                None => ConcurrentQueue::unbounded(),
            })
        })
    }

    /// Queues a message (never full for a holder of a slot of the mailbox's
    /// bound); refused once closed.
    #[inline]
    pub(crate) fn try_push(&self, msg: M) -> Result<Admitted<M>, PushError<M>> {
        match self.made().push(msg) {
            Ok(()) => Ok(Admitted::Queued),
            Err(concurrent_queue::PushError::Full(m)) => Err(PushError::Full(m)),
            Err(concurrent_queue::PushError::Closed(m)) => Err(PushError::Closed(m)),
        }
    }

    #[inline]
    pub(crate) fn try_pop(&self) -> Option<M> {
        let q = self.cell.get()?;
        // `is_empty` only loads the two indices, where `pop` on an empty
        // bounded queue also pays a fence and its stamp checks; an idle
        // actor looks at an empty queue twice per message (before and after
        // registering to wait).
        if q.is_empty() {
            return None;
        }
        q.pop().ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.cell.get().map_or(0, |q| q.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cell.get().is_none_or(|q| q.is_empty())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.cell.get().is_some_and(|q| q.is_closed())
    }

    /// Closes admission (queued messages stay); `false` if already closed.
    pub(crate) fn close(&self) -> bool {
        self.made().close()
    }

    /// Takes everything queued now, oldest first.
    pub(crate) fn drain_now(&self) -> Vec<M> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(m) = self.try_pop() {
            out.push(m);
        }
        out
    }
}

/// Counters, split so that senders and the actor do not share a cache line.
/// Padding rather than `CachePadded`: an over-aligned mailbox would need an
/// aligned allocation, which costs more at every spawn than it saves.
pub(crate) struct Stats {
    pub(crate) send: SendStats,
    _pad: [u8; 128],
    pub(crate) run: RunStats,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            send: SendStats::default(),
            _pad: [0; 128],
            run: RunStats::default(),
        }
    }
}

/// Written by senders. Acceptances are not counted here: a sender's count
/// after its push could land after the actor handled the message (and even
/// after a stop report was read), so a message is counted where it leaves
/// the queue instead (`RunStats::popped`, and `returned` for messages handed
/// back), and `accepted` is what left plus what is still queued.
#[derive(Default)]
pub(crate) struct SendStats {
    pub(crate) rejected: AtomicU64,
    pub(crate) rejected_after_close: AtomicU64,
}

/// Written by the running incarnation (`completed`, `failed`, `in_flight`:
/// one writer at a time) and by whoever hands messages back.
#[derive(Default)]
pub(crate) struct RunStats {
    /// Messages the actor took from its queue (each then ends completed,
    /// failed or aborted).
    pub(crate) popped: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) returned: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) in_flight: AtomicBool,
}

impl RunStats {
    /// Adds one to a counter that only the running incarnation writes.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct Life {
    /// An incarnation's task exists (spawned and not yet ended).
    pub(crate) running: bool,
    /// The running incarnation, if any.
    pub(crate) abort: Option<AbortHandle>,
    /// A kill arrived while no incarnation was registered.
    pub(crate) kill_pending: bool,
    /// Set by a supervisor: tells it that a stop or kill was asked for.
    pub(crate) on_stop: Option<Box<dyn Fn() + Send + Sync>>,
}

/// A snapshot of one actor's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActorStats {
    /// Messages accepted into the mailbox.
    pub accepted: u64,
    /// Messages handled to completion.
    pub completed: u64,
    /// Messages whose handler panicked.
    pub failed: u64,
    /// Messages cut off by a kill.
    pub aborted: u64,
    /// Messages handed to the undelivered hook (left queued at a final stop,
    /// or evicted by `DropOldest`).
    pub returned: u64,
    /// Messages refused (full, dropped, timed out, or stopped).
    pub rejected: u64,
    /// Of `rejected`, those refused because the actor was stopped.
    pub rejected_after_close: u64,
    /// Incarnations started after the first (restarts by a supervisor).
    pub restarts: u64,
    /// Messages waiting in the mailbox now.
    pub queued: usize,
    /// Whether the actor has terminated for good.
    pub terminated: bool,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(
        queue: LazyQueue<M>,
        room: Option<Semaphore>,
        overflow: Overflow,
        name: Cow<'static, str>,
        ask_timeout: Option<Duration>,
        hook: Option<UndeliveredHook<M>>,
    ) -> Self {
        Mailbox {
            queue,
            room,
            overflow,
            signals: AtomicU8::new(0),
            parker: Parker::new(),
            name,
            ask_timeout,
            flavor: AtomicU8::new(0),
            hook,
            stats: Stats::default(),
            life: Mutex::new(Life::default()),
            exit: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// Takes a slot without waiting; `Full` when there is none, `Closed`
    /// once admission is closed.
    #[inline]
    pub(crate) fn try_reserve(&self) -> Result<(), TryAcquireError> {
        match &self.room {
            Some(room) => room.try_acquire().map(|p| p.forget()),
            None if self.queue.is_closed() => Err(TryAcquireError::Closed),
            None => Ok(()),
        }
    }

    /// Waits for a slot; `false` once admission is closed.
    pub(crate) async fn reserve(&self) -> bool {
        match &self.room {
            Some(room) => room.acquire().await.map(|p| p.forget()).is_ok(),
            None => !self.queue.is_closed(),
        }
    }

    /// Gives back `n` slots.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        if let (Some(room), true) = (&self.room, n > 0) {
            room.add_permits(n);
        }
    }

    /// Queues a message for which a slot is held (the slot goes with it).
    /// Only fails once admission is closed; the slot is then given back.
    #[inline]
    pub(crate) fn push_reserved(&self, msg: M) -> Result<Admitted<M>, PushError<M>> {
        match self.queue.try_push(msg) {
            Ok(a) => Ok(a),
            Err(e) => {
                self.release(1);
                Err(e)
            }
        }
    }

    /// Admits a message without waiting, applying the overflow policy when
    /// no slot is free (`Block` and `WaitTimeout` then act as `Reject`).
    #[inline]
    pub(crate) fn try_admit(&self, msg: M) -> Result<Admitted<M>, PushError<M>> {
        match self.try_reserve() {
            Ok(()) => self.push_reserved(msg),
            Err(TryAcquireError::Closed) => Err(PushError::Closed(msg)),
            Err(TryAcquireError::NoPermits) => match self.overflow {
                Overflow::DropOldest => self.evict_and_push(msg),
                Overflow::DropNewest => Err(PushError::Dropped(msg)),
                _ => Err(PushError::Full(msg)),
            },
        }
    }

    /// Waits for a slot under `Block` (for ever) or `WaitTimeout` (up to its
    /// timeout), then queues the message. Dropping the future drops the
    /// message, never queues it twice.
    pub(crate) async fn admit_waiting(&self, msg: M) -> Result<Admitted<M>, PushError<M>> {
        let reserved = match self.overflow {
            Overflow::WaitTimeout(d) => match tokio::time::timeout(d, self.reserve()).await {
                Ok(r) => r,
                Err(_) => return Err(PushError::Timeout(msg)),
            },
            _ => self.reserve().await,
        };
        if reserved {
            self.push_reserved(msg)
        } else {
            Err(PushError::Closed(msg))
        }
    }

    /// [`admit_waiting`](Self::admit_waiting), giving up at `deadline` too
    /// (an ask's timeout): the message comes back as `Timeout` either way.
    pub(crate) async fn admit_waiting_until(
        &self,
        msg: M,
        deadline: tokio::time::Instant,
    ) -> Result<Admitted<M>, PushError<M>> {
        let deadline = match self.overflow {
            // A wait too long for the clock (`Duration::MAX`) is no limit.
            Overflow::WaitTimeout(d) => tokio::time::Instant::now()
                .checked_add(d)
                .map_or(deadline, |t| deadline.min(t)),
            _ => deadline,
        };
        // Waiting for a slot holds no message, so giving up hands it back.
        match tokio::time::timeout_at(deadline, self.reserve()).await {
            Ok(true) => self.push_reserved(msg),
            Ok(false) => Err(PushError::Closed(msg)),
            Err(_) => Err(PushError::Timeout(msg)),
        }
    }

    /// `DropOldest` with no slot free: the oldest message is evicted and its
    /// slot goes to the new one.
    fn evict_and_push(&self, msg: M) -> Result<Admitted<M>, PushError<M>> {
        let mut spins = 0u32;
        loop {
            if self.queue.is_closed() {
                return Err(PushError::Closed(msg));
            }
            if let Some(old) = self.queue.try_pop() {
                return match self.push_reserved(msg) {
                    Ok(_) => Ok(Admitted::Evicted(vec![old])),
                    Err(e) => {
                        self.give_back(vec![old]);
                        Err(e)
                    }
                };
            }
            // The queue emptied between the two looks: the actor took the
            // messages and is giving their slots back.
            match self.try_reserve() {
                Ok(()) => return self.push_reserved(msg),
                Err(TryAcquireError::Closed) => return Err(PushError::Closed(msg)),
                Err(TryAcquireError::NoPermits) => {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }

    /// Takes the next message, giving its slot back (the running
    /// incarnation only: it is `popped`'s one writer).
    #[inline]
    pub(crate) fn try_pop(&self) -> Option<M> {
        let msg = self.queue.try_pop()?;
        RunStats::bump(&self.stats.run.popped);
        self.release(1);
        Some(msg)
    }

    /// Closes admission on both the queue and the bound (waiting senders
    /// wake up refused). Returns `false` if already closed.
    pub(crate) fn close_admission(&self) -> bool {
        let first = self.queue.close();
        if let Some(room) = &self.room {
            room.close();
        }
        first
    }

    /// Takes everything queued now, giving the slots back.
    pub(crate) fn drain_now(&self) -> Vec<M> {
        let msgs = self.queue.drain_now();
        self.release(msgs.len());
        msgs
    }

    #[inline]
    pub(crate) fn wake(&self) {
        self.parker.wake();
    }

    pub(crate) fn life(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a control-lane signal and wakes the incarnation.
    pub(crate) fn signal(&self, sig: u8) {
        self.signals.fetch_or(sig, Ordering::AcqRel);
        self.wake();
    }

    /// Closes admission (queued messages stay, for a graceful drain).
    pub(crate) fn close(&self) {
        if self.close_admission() {
            tracing::debug!(actor = %self.name, "mailbox closed");
        }
        self.wake();
        self.notify_supervisor();
    }

    pub(crate) fn notify_supervisor(&self) {
        if let Some(f) = self.life().on_stop.as_ref() {
            f();
        }
    }

    /// Aborts the running incarnation (or the next one to register).
    pub(crate) fn kill(&self) {
        let mut life = self.life();
        match life.abort.as_ref() {
            Some(h) => h.abort(),
            None => life.kill_pending = true,
        }
        if let Some(f) = life.on_stop.as_ref() {
            f();
        }
    }

    /// Marks an incarnation as about to be spawned.
    pub(crate) fn begin(&self) {
        self.life().running = true;
    }

    /// Registers a freshly spawned incarnation so that it can be killed
    /// (unless it already ended).
    pub(crate) fn register(&self, handle: AbortHandle) {
        let mut life = self.life();
        if !life.running {
            return;
        }
        if std::mem::take(&mut life.kill_pending) {
            handle.abort();
        }
        life.abort = Some(handle);
    }

    /// The incarnation's task ended (returned or aborted).
    pub(crate) fn end(&self) {
        {
            let mut life = self.life();
            life.running = false;
            life.abort = None;
        }
        self.done.notify_waiters();
    }

    /// Waits until no incarnation's task exists.
    pub(crate) async fn incarnation_ended(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.life().running {
                return;
            }
            notified.await;
        }
    }

    /// The actor's report, from its counters.
    pub(crate) fn report(&self) -> weft_core::ShutdownReport {
        let s = self.stats();
        let mut report = weft_core::ShutdownReport::new(self.name.to_string());
        report.accepted = s.accepted;
        report.completed = s.completed;
        report.failed = s.failed;
        report.aborted = s.aborted;
        report.returned = s.returned;
        report.rejected_after_close = s.rejected_after_close;
        if s.aborted > 0 {
            report.unfinished.push(self.name.to_string());
        }
        report
    }

    /// Hands messages that will never be handled to the hook, counting them.
    pub(crate) fn give_back(&self, msgs: Vec<M>) {
        if msgs.is_empty() {
            return;
        }
        self.stats
            .run
            .returned
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        match &self.hook {
            // The hook is user code run by whoever hands messages back (the
            // terminating actor, or an evicting sender): a panic is
            // contained per message, so the rest are still handed over and
            // the actor still terminates.
            Some(hook) => {
                for m in msgs {
                    if let Err(p) =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(m)))
                    {
                        let p = weft_core::Panicked::from_payload(p.as_ref());
                        tracing::error!(
                            actor = %self.name,
                            panic = p.message(),
                            "undelivered hook panicked; the message is counted as returned"
                        );
                    }
                }
            }
            None => tracing::warn!(
                actor = %self.name,
                count = msgs.len(),
                "undelivered messages dropped (no undelivered hook set)"
            ),
        }
    }

    /// The final stop: close, hand back what is queued, mark terminated.
    pub(crate) fn finish(&self, exit: Exit) {
        self.close_admission();
        self.give_back(self.drain_now());
        self.life().on_stop = None;
        tracing::debug!(actor = %self.name, %exit, "actor terminated");
        #[cfg(feature = "metrics")]
        metrics::counter!("weft_actor_terminated_total", "name" => self.name.to_string(), "exit" => exit_label(&exit)).increment(1);
        let _ = self.exit.set(exit);
        self.done.notify_waiters();
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.exit.get().is_some()
    }

    /// Waits until the actor has terminated for good.
    pub(crate) async fn terminated(&self) -> Exit {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(exit) = self.exit.get() {
                return exit.clone();
            }
            notified.await;
        }
    }

    pub(crate) fn stats(&self) -> ActorStats {
        let (s, r) = (&self.stats.send, &self.stats.run);
        // Every accepted message is still queued, or has left the queue
        // once: taken by the actor, or handed back (`returned`).
        let queued = self.queue.len();
        let returned = r.returned.load(Ordering::Relaxed);
        ActorStats {
            accepted: r.popped.load(Ordering::Relaxed) + returned + queued as u64,
            completed: r.completed.load(Ordering::Relaxed),
            failed: r.failed.load(Ordering::Relaxed),
            aborted: r.aborted.load(Ordering::Relaxed),
            returned,
            rejected: s.rejected.load(Ordering::Relaxed),
            rejected_after_close: s.rejected_after_close.load(Ordering::Relaxed),
            restarts: r.restarts.load(Ordering::Relaxed),
            queued,
            terminated: self.is_terminated(),
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) fn exit_label(exit: &Exit) -> &'static str {
    match exit {
        Exit::Normal => "normal",
        Exit::Stopped => "stopped",
        Exit::Panicked(_) => "panicked",
        Exit::StartFailed(_) => "start_failed",
        Exit::Killed => "killed",
        Exit::Escalated(_) => "escalated",
    }
}

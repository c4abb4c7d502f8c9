//! Children of a supervisor: specs and the object-safe handle the
//! supervisor drives.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use weft_core::ShutdownReport;

use crate::actor::{Actor, Exit};
use crate::actor_ref::ActorRef;
use crate::error::BuildError;
use crate::mailbox::SIG_STOP;
use crate::spawn::{Builder, spawn_incarnation};
use crate::supervisor::policy::Restart;

/// The default time a child gets to stop before it is killed: 5 s, OTP's
/// default shutdown for workers.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to build and run one supervised actor.
///
/// The actor is built by a **factory**, called for every incarnation, so a
/// restart never needs the original arguments to be `Clone`: the factory
/// owns whatever it needs.
///
/// ```
/// use std::time::Duration;
/// use weft_actor::{Actor, Builder, Context};
/// use weft_actor::supervisor::{ChildSpec, Restart};
///
/// struct Worker { id: u32 }
/// impl Actor for Worker {
///     type Msg = ();
///     async fn handle(&mut self, _: (), _: &mut Context<Self>) {}
/// }
///
/// let spec = ChildSpec::new("worker-7", || Worker { id: 7 })
///     .restart(Restart::Transient)
///     .stop_timeout(Duration::from_secs(1))
///     .mailbox(Builder::new().capacity(256));
/// ```
pub struct ChildSpec<A: Actor> {
    id: String,
    factory: Box<dyn FnMut() -> A + Send>,
    restart: Restart,
    stop_timeout: Duration,
    mailbox: Builder<A::Msg>,
}

impl<A: Actor> ChildSpec<A> {
    /// A `Permanent` child with the default mailbox and a 5 s stop timeout.
    pub fn new(id: impl Into<String>, factory: impl FnMut() -> A + Send + 'static) -> Self {
        let id = id.into();
        ChildSpec {
            mailbox: Builder::new().name(id.clone()),
            id,
            factory: Box::new(factory),
            restart: Restart::Permanent,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }

    /// The restart type. Default `Permanent`.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long the child gets to stop (before a restart, or at shutdown)
    /// before it is killed. Default [`DEFAULT_STOP_TIMEOUT`].
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The mailbox configuration. Its name defaults to the child's id.
    pub fn mailbox(mut self, builder: Builder<A::Msg>) -> Self {
        self.mailbox = builder;
        self
    }

    pub(crate) fn build(self) -> Result<(ActorRef<A>, Box<dyn Child>), BuildError> {
        let mb = self.mailbox.mailbox()?;
        let myself = ActorRef::from_mailbox(mb);
        let child = ActorChild {
            id: self.id,
            factory: self.factory,
            restart: self.restart,
            stop_timeout: self.stop_timeout,
            myself: myself.clone(),
            incarnations: 0,
        };
        Ok((myself, Box::new(child)))
    }
}

impl<A: Actor> fmt::Debug for ChildSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("stop_timeout", &self.stop_timeout)
            .field("mailbox", &self.mailbox)
            .finish()
    }
}

/// What a supervisor needs from a child, whatever it is (an actor or a
/// supervisor).
pub(crate) trait Child: Send {
    fn id(&self) -> &str;
    fn restart_type(&self) -> Restart;
    fn stop_timeout(&self) -> Duration;
    /// Starts a new incarnation, once the previous one has fully ended.
    fn start(&mut self) -> BoxFuture<'_, JoinHandle<Exit>>;
    /// Asks the running incarnation to stop so it can be restarted (the
    /// mailbox stays open).
    fn stop_for_restart(&self);
    /// Asks for the final, graceful stop (admission closed, queue drained).
    fn stop_final(&self);
    fn kill(&self);
    /// Whether a final stop was asked for (through a reference).
    fn closing(&self) -> bool;
    /// The final stop is over: hand back what is left, mark terminated.
    fn finish(&self, exit: Exit);
    fn report(&self) -> ShutdownReport;
    fn set_on_stop(&self, f: Box<dyn Fn() + Send + Sync>);
}

struct ActorChild<A: Actor> {
    id: String,
    factory: Box<dyn FnMut() -> A + Send>,
    restart: Restart,
    stop_timeout: Duration,
    myself: ActorRef<A>,
    incarnations: u64,
}

impl<A: Actor> Child for ActorChild<A> {
    fn id(&self) -> &str {
        &self.id
    }

    fn restart_type(&self) -> Restart {
        self.restart
    }

    fn stop_timeout(&self) -> Duration {
        self.stop_timeout
    }

    // The future resolves to the handle of the spawned incarnation.
    #[allow(clippy::async_yields_async)]
    fn start(&mut self) -> BoxFuture<'_, JoinHandle<Exit>> {
        Box::pin(async move {
            let mb = self.myself.mailbox().clone();
            // The previous incarnation must have finished stopping.
            mb.incarnation_ended().await;
            mb.signals.fetch_and(!SIG_STOP, Ordering::AcqRel);
            if self.incarnations > 0 {
                mb.stats.run.restarts.fetch_add(1, Ordering::Relaxed);
            }
            let actor = match crate::catch_unwind_sync(&mut self.factory) {
                Ok(actor) => actor,
                Err(p) => {
                    tracing::error!(child = %self.id, panic = %p, "child factory panicked");
                    let exit = Exit::Panicked(p);
                    return tokio::spawn(async move { exit });
                }
            };
            let n = self.incarnations;
            self.incarnations += 1;
            spawn_incarnation(actor, self.myself.clone(), n)
        })
    }

    fn stop_for_restart(&self) {
        self.myself.mailbox().signal(SIG_STOP);
    }

    fn stop_final(&self) {
        self.myself.mailbox().close();
    }

    fn kill(&self) {
        self.myself.mailbox().kill();
    }

    fn closing(&self) -> bool {
        self.myself.mailbox().queue.is_closed()
    }

    fn finish(&self, exit: Exit) {
        self.myself.mailbox().finish(exit);
    }

    fn report(&self) -> ShutdownReport {
        self.myself.mailbox().report()
    }

    fn set_on_stop(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.myself.mailbox().life().on_stop = Some(f);
    }
}

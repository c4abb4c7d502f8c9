//! Pools of identical actors behind one address.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use weft_core::{BoxError, Drain, ShutdownReport};

use crate::actor::{Actor, AskFor};
use crate::actor_ref::{ActorRef, ResponseFuture};
use crate::error::{AskError, BuildError, SendError};
use crate::reply::Reply;
use crate::spawn::Builder;
use crate::supervisor::{Backoff, ChildSpec, Supervisor, SupervisorBuilder};

/// How [`Pool::tell`] and [`Pool::ask`] pick a member. (The `_keyed`
/// methods always route by key.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Routing {
    /// Each message to the next member in turn. The default.
    #[default]
    RoundRobin,
    /// Each message to the member with the fewest queued messages.
    LeastLoaded,
}

/// `size` actors built by one factory, supervised one-for-one, behind one
/// address. Cheap to clone.
///
/// - [`tell`](Pool::tell) / [`ask`](Pool::ask) route by the pool's
///   [`Routing`] (round robin or least loaded);
/// - [`tell_keyed`](Pool::tell_keyed) / [`ask_keyed`](Pool::ask_keyed) are
///   key-sticky: every message with the same key goes to the same member
///   (across restarts too, since member references stay valid), so per-key
///   state and per-key ordering hold;
/// - a pool is a tower [`Service<R>`](tower_service::Service) like an
///   [`ActorRef`].
///
/// ```
/// use weft_actor::{Actor, Context, Reply};
/// use weft_actor::pool::{Pool, Routing};
///
/// struct Sum { total: u64 }
/// enum Msg { Add(u64), Total(Reply<u64>) }
/// impl Actor for Sum {
///     type Msg = Msg;
///     async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) {
///         match msg {
///             Msg::Add(n) => self.total += n,
///             Msg::Total(r) => { let _ = r.send(self.total); }
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let pool = Pool::builder("sums", 4, |_i| Sum { total: 0 })
///     .routing(Routing::RoundRobin)
///     .start()
///     .unwrap();
/// // Key-sticky: all of user 7's messages reach the same member.
/// for n in 1..=10 {
///     pool.tell_keyed(&"user-7", Msg::Add(n)).await.unwrap();
/// }
/// assert_eq!(pool.ask_keyed(&"user-7", Msg::Total).await.unwrap(), 55);
/// let report = pool.shutdown(tokio::time::Instant::now() + std::time::Duration::from_secs(1)).await;
/// assert_eq!(report.completed, 11);
/// # }
/// ```
pub struct Pool<A: Actor> {
    members: Arc<[ActorRef<A>]>,
    next: Arc<AtomicUsize>,
    routing: Routing,
    supervisor: Supervisor,
    /// Used only through the tower `Service`: the member `poll_ready` picked
    /// (and reserved a mailbox slot on, once ready), for the next `call`.
    ready: Option<ActorRef<A>>,
}

/// A clone starts unreserved.
impl<A: Actor> Clone for Pool<A> {
    fn clone(&self) -> Self {
        Pool {
            members: self.members.clone(),
            next: self.next.clone(),
            routing: self.routing,
            supervisor: self.supervisor.clone(),
            ready: None,
        }
    }
}

impl<A: Actor> fmt::Debug for Pool<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.supervisor.name())
            .field("size", &self.members.len())
            .field("routing", &self.routing)
            .finish()
    }
}

/// Configures a [`Pool`].
pub struct PoolBuilder<A: Actor> {
    name: String,
    size: usize,
    factory: Arc<dyn Fn(usize) -> A + Send + Sync>,
    routing: Routing,
    mailbox: Option<Box<dyn Fn() -> Builder<A::Msg>>>,
    supervisor: SupervisorBuilder,
    stop_timeout: Duration,
}

impl<A: Actor> fmt::Debug for PoolBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("routing", &self.routing)
            .finish()
    }
}

impl<A: Actor> Pool<A> {
    /// A pool of `size` actors; member `i` is built by `factory(i)` (again
    /// at each of its restarts).
    pub fn builder(
        name: impl Into<String>,
        size: usize,
        factory: impl Fn(usize) -> A + Send + Sync + 'static,
    ) -> PoolBuilder<A> {
        let name = name.into();
        PoolBuilder {
            supervisor: SupervisorBuilder::new(name.clone()),
            name,
            size,
            factory: Arc::new(factory),
            routing: Routing::default(),
            mailbox: None,
            stop_timeout: crate::supervisor::DEFAULT_STOP_TIMEOUT,
        }
    }
}

impl<A: Actor> PoolBuilder<A> {
    /// How `tell` and `ask` pick a member. Default round robin.
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// Each member's mailbox (called once per member).
    pub fn mailbox(mut self, mailbox: impl Fn() -> Builder<A::Msg> + 'static) -> Self {
        self.mailbox = Some(Box::new(mailbox));
        self
    }

    /// The members' restart intensity (default 3 in 5 s).
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.supervisor = self.supervisor.intensity(max_restarts, period);
        self
    }

    /// The members' restart backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.supervisor = self.supervisor.backoff(backoff);
        self
    }

    /// Each member's stop timeout (default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Starts the members (under a one-for-one supervisor).
    pub fn start(mut self) -> Result<Pool<A>, BuildError> {
        if self.size == 0 {
            return Err(BuildError::EmptyPool);
        }
        let mut members = Vec::with_capacity(self.size);
        for i in 0..self.size {
            let factory = self.factory.clone();
            let id = format!("{}-{i}", self.name);
            let mut spec =
                ChildSpec::new(id.clone(), move || factory(i)).stop_timeout(self.stop_timeout);
            if let Some(mailbox) = &self.mailbox {
                spec = spec.mailbox(mailbox().name(id));
            }
            members.push(self.supervisor.add(spec)?);
        }
        let supervisor = self.supervisor.start()?;
        Ok(Pool {
            members: members.into(),
            next: Arc::new(AtomicUsize::new(0)),
            routing: self.routing,
            supervisor,
            ready: None,
        })
    }
}

fn key_index<K: Hash + ?Sized>(key: &K, n: usize) -> usize {
    // SipHash with fixed keys: the same key maps to the same member in every
    // process, which keeps logs and tests reproducible.
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

impl<A: Actor> Pool<A> {
    /// The members, in order.
    pub fn members(&self) -> &[ActorRef<A>] {
        &self.members
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a pool has at least one member.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The supervisor of the members.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The member the pool's routing picks for the next message.
    pub fn pick(&self) -> &ActorRef<A> {
        let n = self.members.len();
        match self.routing {
            Routing::RoundRobin => &self.members[self.next.fetch_add(1, Ordering::Relaxed) % n],
            Routing::LeastLoaded => {
                // Start the scan at a rotating offset so ties spread out.
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                let mut best = start;
                let mut best_len = usize::MAX;
                for k in 0..n {
                    let i = (start + k) % n;
                    let len = self.members[i].queued();
                    if len < best_len {
                        best = i;
                        best_len = len;
                        if len == 0 {
                            break;
                        }
                    }
                }
                &self.members[best]
            }
        }
    }

    /// The member that every message with `key` goes to.
    pub fn member_for<K: Hash + ?Sized>(&self, key: &K) -> &ActorRef<A> {
        &self.members[key_index(key, self.members.len())]
    }

    /// Sends to the member the routing picks.
    pub async fn tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        self.pick().tell(msg).await
    }

    /// Sends without waiting to the member the routing picks.
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        self.pick().try_tell(msg)
    }

    /// Sends to the member for `key`.
    pub async fn tell_keyed<K: Hash + ?Sized>(
        &self,
        key: &K,
        msg: A::Msg,
    ) -> Result<(), SendError<A::Msg>> {
        self.member_for(key).tell(msg).await
    }

    /// Asks the member the routing picks.
    pub async fn ask<R>(&self, req: R) -> Result<A::Reply, AskError<A::Msg>>
    where
        A: AskFor<R>,
    {
        self.pick().ask(req).await
    }

    /// Asks the member the routing picks, with a message built around a
    /// reply.
    pub async fn ask_with<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> A::Msg,
    ) -> Result<T, AskError<A::Msg>> {
        self.pick().ask_with(make).await
    }

    /// Asks the member for `key`.
    pub async fn ask_keyed<K: Hash + ?Sized, T: Send + 'static>(
        &self,
        key: &K,
        make: impl FnOnce(Reply<T>) -> A::Msg,
    ) -> Result<T, AskError<A::Msg>> {
        self.member_for(key).ask_with(make).await
    }

    /// Stops every member (in reverse order, each draining its mailbox
    /// within its stop timeout and `deadline`) and returns the sum of their
    /// reports.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.supervisor.shutdown(deadline).await
    }
}

impl<A: Actor> Drain for Pool<A> {
    fn drain(&self, deadline: Instant) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(self.shutdown(deadline))
    }
}

/// A pool as a tower service: `call(req)` asks the member the routing picks.
///
/// `poll_ready` picks the member by the routing and reserves a slot in its
/// mailbox (`Pending` while that member's mailbox is full; the pick is kept
/// until it is ready); `call` asks that member. Dropping the pool between
/// the two gives the slot back; a clone starts unreserved; `call` without a
/// ready `poll_ready` panics.
impl<A, R> tower_service::Service<R> for Pool<A>
where
    A: AskFor<R>,
    R: Send + 'static,
{
    type Response = A::Reply;
    type Error = BoxError;
    type Future = ResponseFuture<A::Reply>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_none() {
            self.ready = Some(self.pick().clone());
        }
        let member = self.ready.as_mut().expect("picked above");
        let r = tower_service::Service::<R>::poll_ready(member, cx);
        if let Poll::Ready(Err(_)) = r {
            self.ready = None;
        }
        r
    }

    fn call(&mut self, req: R) -> Self::Future {
        let mut member = self
            .ready
            .take()
            .expect("Pool::call without a reserved mailbox slot: call poll_ready (until ready) before every call");
        tower_service::Service::call(&mut member, req)
    }
}

use std::sync::Arc;

use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::Pool;
use crate::WorkerPool;

/// Wraps a service so that its calls run on a [`WorkerPool`]'s workers, with
/// the pool's queue as backpressure (see [`Pool`]).
///
/// Every service the layer builds (and their clones) shares one pool and one
/// set of queue reservations.
#[derive(Debug, Clone)]
pub struct PoolLayer {
    pool: WorkerPool,
    slots: Arc<Semaphore>,
}

impl PoolLayer {
    /// A layer over `pool`. The pool should be dedicated to the service, so
    /// that a reservation taken in `poll_ready` always finds room.
    pub fn new(pool: WorkerPool) -> Self {
        let slots = Arc::new(Semaphore::new(pool.queue_capacity()));
        PoolLayer { pool, slots }
    }
}

impl<S> Layer<S> for PoolLayer {
    type Service = Pool<S>;

    fn layer(&self, inner: S) -> Pool<S> {
        Pool::from_parts(inner, self.pool.clone(), self.slots.clone())
    }
}

use tower_layer::Layer;

use super::Pool;
use crate::WorkerPool;

/// Wraps a service so that its calls run on a [`WorkerPool`]'s workers, with
/// the pool's queue as backpressure (see [`Pool`]).
///
/// Every service the layer builds (and their clones) shares one pool and,
/// with every other [`Pool`] over that pool, one set of queue reservations.
#[derive(Debug, Clone)]
pub struct PoolLayer {
    pool: WorkerPool,
}

impl PoolLayer {
    /// A layer over `pool`. The pool should be dedicated to its services, so
    /// that a reservation taken in `poll_ready` always finds room.
    pub fn new(pool: WorkerPool) -> Self {
        PoolLayer { pool }
    }
}

impl<S> Layer<S> for PoolLayer {
    type Service = Pool<S>;

    fn layer(&self, inner: S) -> Pool<S> {
        Pool::new(inner, self.pool.clone())
    }
}

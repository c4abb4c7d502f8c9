use weft_core::BoxError;

use super::error::{BuildError, QuorumNotReached};

/// What every gather strategy says about itself, whatever the response
/// type: whether it can ever decide with a given number of replicas.
pub trait Strategy {
    /// Checked once when the broadcast is built (default: always fine).
    fn validate(&self, replicas: usize) -> Result<(), BuildError> {
        let _ = replicas;
        Ok(())
    }
}

impl<R> Strategy for All<R> {}
impl Strategy for FirstSuccess {}
impl<R> Strategy for Quorum<R> {
    fn validate(&self, replicas: usize) -> Result<(), BuildError> {
        if self.needed == 0 {
            return Err(BuildError::ZeroQuorum);
        }
        if self.needed > replicas {
            return Err(BuildError::QuorumTooLarge {
                needed: self.needed,
                services: replicas,
            });
        }
        Ok(())
    }
}

/// How a [`Broadcast`](super::Broadcast) turns the replicas' answers into one
/// result, and when it has seen enough.
///
/// The broadcast clones the strategy for every call, calls
/// [`start`](Gather::start) once, then [`on_result`](Gather::on_result) for
/// each answer as it arrives. As soon as `on_result` returns `Some`, the
/// remaining calls are dropped (cancelled). With `pending == 0` a strategy
/// must decide.
///
/// ```
/// use weft_core::BoxError;
/// use weft_fanout::broadcast::{Gather, Strategy};
///
/// /// Succeeds once any two replicas agree on the answer.
/// #[derive(Clone, Default)]
/// struct TwoAgree(Vec<u32>);
///
/// impl Strategy for TwoAgree {}
/// impl Gather<u32> for TwoAgree {
///     type Output = u32;
///     fn on_result(&mut self, _replica: usize, r: Result<u32, BoxError>, pending: usize)
///         -> Option<Result<u32, BoxError>>
///     {
///         if let Ok(v) = r {
///             if self.0.contains(&v) { return Some(Ok(v)); }
///             self.0.push(v);
///         }
///         (pending == 0).then(|| Err("no two replicas agreed".into()))
///     }
/// }
/// let mut g = TwoAgree::default();
/// assert!(g.on_result(0, Ok(7), 2).is_none());
/// assert_eq!(g.on_result(1, Ok(7), 1).unwrap().unwrap(), 7);
/// ```
pub trait Gather<R>: Strategy {
    /// What the broadcast returns on success.
    type Output;

    /// Called once per call with the number of replicas, before any answer.
    fn start(&mut self, replicas: usize) {
        let _ = replicas;
    }

    /// One replica's answer; `pending` replicas are still running. `Some`
    /// decides the call.
    fn on_result(
        &mut self,
        replica: usize,
        result: Result<R, BoxError>,
        pending: usize,
    ) -> Option<Result<Self::Output, BoxError>>;
}

/// Every replica must succeed: the answers in replica order. The first error
/// decides (and cancels the rest); it is the replica's own error.
#[derive(Debug)]
pub struct All<R> {
    answers: Vec<Option<R>>,
}

impl<R> Default for All<R> {
    fn default() -> Self {
        All {
            answers: Vec::new(),
        }
    }
}

impl<R> Clone for All<R> {
    fn clone(&self) -> Self {
        All::default()
    }
}

impl<R> All<R> {
    /// The `All` strategy.
    pub fn new() -> Self {
        All::default()
    }
}

impl<R> Gather<R> for All<R> {
    type Output = Vec<R>;

    fn start(&mut self, replicas: usize) {
        self.answers = (0..replicas).map(|_| None).collect();
    }

    fn on_result(
        &mut self,
        replica: usize,
        result: Result<R, BoxError>,
        pending: usize,
    ) -> Option<Result<Vec<R>, BoxError>> {
        match result {
            Err(e) => Some(Err(e)),
            Ok(r) => {
                self.answers[replica] = Some(r);
                (pending == 0).then(|| {
                    Ok(std::mem::take(&mut self.answers)
                        .into_iter()
                        .flatten()
                        .collect())
                })
            }
        }
    }
}

/// The first replica to succeed wins and the others are cancelled. An error
/// never beats a later success: errors are held back while any replica is
/// still running, and only when every replica failed is the last error
/// returned.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstSuccess;

impl<R> Gather<R> for FirstSuccess {
    type Output = R;

    fn on_result(
        &mut self,
        _replica: usize,
        result: Result<R, BoxError>,
        pending: usize,
    ) -> Option<Result<R, BoxError>> {
        match result {
            Ok(r) => Some(Ok(r)),
            Err(e) if pending == 0 => Some(Err(e)),
            Err(_) => None,
        }
    }
}

/// `k` replicas must succeed: the first `k` answers, in the order they
/// arrived. Fails with [`QuorumNotReached`] as soon as so many replicas have
/// failed that the rest cannot make up `k`.
#[derive(Debug)]
pub struct Quorum<R> {
    needed: usize,
    answers: Vec<R>,
    failed: usize,
}

impl<R> Clone for Quorum<R> {
    fn clone(&self) -> Self {
        Quorum::new(self.needed)
    }
}

impl<R> Quorum<R> {
    /// A quorum of `k` answers.
    ///
    /// `k` is checked against the replica set when the broadcast is built:
    /// [`Broadcast::new`](super::Broadcast::new) refuses a quorum of 0
    /// ([`BuildError::ZeroQuorum`]; pass 1 for "any one replica") and one
    /// larger than the number of services ([`BuildError::QuorumTooLarge`]),
    /// so the strategy stays a plain value and building needs one `?`.
    ///
    /// ```
    /// use weft_fanout::broadcast::{Broadcast, BuildError, Quorum};
    /// # let replicas = vec![tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }); 3];
    /// let err = Broadcast::new(replicas, Quorum::<u32>::new(0)).unwrap_err();
    /// assert_eq!(err, BuildError::ZeroQuorum);
    /// assert!(err.to_string().contains("pass 1"));
    /// ```
    pub fn new(k: usize) -> Self {
        Quorum {
            needed: k,
            answers: Vec::new(),
            failed: 0,
        }
    }

    /// The number of answers needed.
    pub fn needed(&self) -> usize {
        self.needed
    }
}

impl<R> Gather<R> for Quorum<R> {
    type Output = Vec<R>;

    fn start(&mut self, _replicas: usize) {
        self.answers = Vec::with_capacity(self.needed);
        self.failed = 0;
    }

    fn on_result(
        &mut self,
        _replica: usize,
        result: Result<R, BoxError>,
        pending: usize,
    ) -> Option<Result<Vec<R>, BoxError>> {
        match result {
            Ok(r) => {
                self.answers.push(r);
                (self.answers.len() >= self.needed).then(|| Ok(std::mem::take(&mut self.answers)))
            }
            Err(last) => {
                self.failed += 1;
                (self.answers.len() + pending < self.needed).then(|| {
                    Err(Box::new(QuorumNotReached {
                        needed: self.needed,
                        succeeded: self.answers.len(),
                        failed: self.failed,
                        last,
                    }) as BoxError)
                })
            }
        }
    }
}

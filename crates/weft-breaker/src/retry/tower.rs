//! `tower::retry::Policy` for [`RetryPolicy`].

use tokio::time::{Instant, Sleep, sleep};
use tower::retry::Policy;
use weft_core::{BoxError, Classify, Outcome};

use super::policy::RetryPolicy;
use crate::breaker::Open;

/// For `tower::retry::Retry`. Tower clones the policy for every request, so
/// the attempt count and the deadline are per request while the budget is
/// shared. Errors are the stack's `BoxError`: a boxed [`Open`] from a
/// [`Breaker`](crate::Breaker) below is not retried unless
/// [`retry_on_open`](RetryPolicy::retry_on_open) says so; other results go
/// through the classifier.
///
/// The deadline bounds when a retry may start; to also cut an attempt that
/// runs past it, put a timeout below the retry.
impl<Req, Res, C> Policy<Req, Res, BoxError> for RetryPolicy<C>
where
    Req: Clone,
    C: Classify<Res, BoxError>,
{
    type Future = Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Sleep> {
        let mut at_least = std::time::Duration::ZERO;
        match result {
            Err(e) if e.downcast_ref::<Open>().is_some() => {
                if !self.retry_on_open {
                    return None;
                }
                let open = e.downcast_ref::<Open>().expect("checked above");
                at_least = open.retry_after().unwrap_or_default();
            }
            r => {
                if self.classify.classify(r) != Outcome::Failure {
                    return None;
                }
            }
        }
        let made = self.request.attempts + 1;
        let started = self.request.started.unwrap_or_else(Instant::now);
        let mut previous = self.request.previous;
        let delay = self.plan(made, &mut previous, started, at_least).ok()?;
        self.request.attempts = made;
        self.request.previous = previous;
        Some(sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if self.request.attempts == 0 {
            // A new request (tower asks the service's own copy of the
            // policy, then clones it into the response future).
            self.request.started = Some(Instant::now());
            self.start();
        }
        Some(req.clone())
    }
}

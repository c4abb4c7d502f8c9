//! The keep-alive loop that keeps a session's lease alive, and decides when it is lost.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::error::{CoordError, LostReason};

/// One keep-alive round trip. The real implementation talks to etcd; the
/// tests drive the loop with a scripted fake under paused time.
pub(crate) trait Refresh: Send {
    /// Sends one keep-alive and returns the ttl etcd granted, in seconds
    /// (zero or less: the lease is gone).
    fn refresh(&mut self) -> BoxFuture<'_, Result<i64, CoordError>>;
    /// Forgets the current stream so the next refresh opens a fresh one.
    fn reset(&mut self);
}

/// Refreshes every `interval` until `stop` is cancelled (returns `None`) or
/// the lease is lost (returns why).
///
/// The loop keeps a local, conservative estimate of when etcd will expire
/// the lease: the time the last successful refresh was *sent* plus the ttl
/// etcd granted. etcd's own clock starts later (when the refresh arrives),
/// so the session reports the loss no later than etcd acts on it: a holder
/// is told before anyone else can take what it held.
pub(crate) async fn run<R: Refresh>(
    mut api: R,
    ttl: Duration,
    interval: Duration,
    stop: CancellationToken,
) -> Option<LostReason> {
    let mut deadline = Instant::now() + ttl;
    let retry = (interval / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = sleep_until(deadline) => return Some(LostReason::KeepAliveFailed),
            _ = sleep_until(next) => {}
        }
        let sent = Instant::now();
        // One attempt may take at most one interval (a stuck stream is
        // replaced) and never past the deadline.
        let limit = interval.min(deadline.saturating_duration_since(sent));
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            r = timeout(limit, api.refresh()) => r,
        };
        match outcome {
            Ok(Ok(secs)) if secs <= 0 => return Some(LostReason::LeaseExpired),
            Ok(Ok(secs)) => {
                deadline = sent + Duration::from_secs(secs as u64);
                next = sent + interval;
                tracing::trace!(ttl = secs, "lease refreshed");
            }
            Ok(Err(CoordError::SessionLost(reason))) => return Some(reason),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease keep-alive failed; retrying until the ttl runs out");
                api.reset();
                next = Instant::now() + retry;
            }
            Err(_) => {
                tracing::warn!("lease keep-alive got no answer; retrying until the ttl runs out");
                api.reset();
                next = Instant::now() + retry;
            }
        }
        if Instant::now() >= deadline {
            return Some(LostReason::KeepAliveFailed);
        }
        // Never sleep past the deadline without one more try.
        if next > deadline {
            next = deadline;
        }
    }
}

/// The etcd implementation of [`Refresh`].
pub(crate) struct EtcdRefresh {
    pub(crate) client: etcd_client::LeaseClient,
    pub(crate) lease: i64,
    pub(crate) granted: i64,
    pub(crate) stream: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
}

impl Refresh for EtcdRefresh {
    fn refresh(&mut self) -> BoxFuture<'_, Result<i64, CoordError>> {
        Box::pin(async move {
            match &mut self.stream {
                None => {
                    // Opening the stream sends the first keep-alive and
                    // fails with "lease not found" when the lease is gone.
                    let pair = self
                        .client
                        .keep_alive(self.lease)
                        .await
                        .map_err(|e| CoordError::from_etcd("keep-alive", e))?;
                    self.stream = Some(pair);
                    Ok(self.granted)
                }
                Some((keeper, stream)) => {
                    keeper
                        .keep_alive()
                        .await
                        .map_err(|e| CoordError::from_etcd("keep-alive", e))?;
                    match stream.message().await {
                        Ok(Some(resp)) => Ok(resp.ttl()),
                        Ok(None) => Err(CoordError::from_etcd(
                            "keep-alive",
                            etcd_client::Error::LeaseKeepAliveError(
                                "keep-alive stream closed".into(),
                            ),
                        )),
                        Err(e) => Err(CoordError::from_etcd("keep-alive", e)),
                    }
                }
            }
        })
    }

    fn reset(&mut self) {
        self.stream = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use tokio::time::sleep;

    /// What one scripted refresh does.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Answers with this ttl after this delay (ms).
        Ok(i64, u64),
        /// Fails after this delay (ms).
        Fail(u64),
        /// Never answers.
        Hang,
    }

    struct Fake {
        script: VecDeque<Step>,
        /// When the default (script exhausted) is to keep answering.
        then: Step,
        log: Log,
    }

    type Log = Arc<Mutex<Vec<(Instant, bool)>>>;

    impl Refresh for Fake {
        fn refresh(&mut self) -> BoxFuture<'_, Result<i64, CoordError>> {
            let step = self.script.pop_front().unwrap_or(self.then);
            let log = self.log.clone();
            Box::pin(async move {
                match step {
                    Step::Ok(ttl, ms) => {
                        sleep(Duration::from_millis(ms)).await;
                        log.lock().unwrap().push((Instant::now(), true));
                        Ok(ttl)
                    }
                    Step::Fail(ms) => {
                        sleep(Duration::from_millis(ms)).await;
                        log.lock().unwrap().push((Instant::now(), false));
                        Err(CoordError::Timeout {
                            op: "keep-alive",
                            after: Duration::ZERO,
                        })
                    }
                    Step::Hang => futures::future::pending().await,
                }
            })
        }
        fn reset(&mut self) {}
    }

    fn fake(script: Vec<Step>, then: Step) -> (Fake, Log) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (
            Fake {
                script: script.into(),
                then,
                log: log.clone(),
            },
            log,
        )
    }

    const TTL: Duration = Duration::from_secs(3);
    const EVERY: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn healthy_lease_stays_alive_until_stopped() {
        let (api, log) = fake(vec![], Step::Ok(3, 5));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(api, TTL, EVERY, stop.clone()));
        sleep(Duration::from_secs(60)).await;
        assert!(!task.is_finished());
        stop.cancel();
        assert_eq!(task.await.unwrap(), None);
        let n = log.lock().unwrap().len();
        assert!((58..=61).contains(&n), "{n} refreshes in 60 s");
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_zero_means_expired_at_once() {
        let (api, _) = fake(vec![Step::Ok(3, 1), Step::Ok(0, 1)], Step::Ok(3, 1));
        let start = Instant::now();
        let lost = run(api, TTL, EVERY, CancellationToken::new()).await;
        assert_eq!(lost, Some(LostReason::LeaseExpired));
        assert!(start.elapsed() < Duration::from_millis(2100));
    }

    #[tokio::test(start_paused = true)]
    async fn failing_refreshes_are_lost_when_the_ttl_runs_out() {
        // One good refresh at t = 1 s, then every attempt fails.
        let (api, _) = fake(vec![Step::Ok(3, 0)], Step::Fail(10));
        let start = Instant::now();
        let lost = run(api, TTL, EVERY, CancellationToken::new()).await;
        assert_eq!(lost, Some(LostReason::KeepAliveFailed));
        // Last success sent at 1 s with ttl 3 s: lost at 4 s, not later.
        let at = start.elapsed();
        assert!(at <= Duration::from_secs(4), "{at:?}");
        assert!(at >= Duration::from_millis(3900), "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_stream_is_replaced_and_the_lease_survives() {
        let (api, log) = fake(vec![Step::Hang, Step::Fail(5)], Step::Ok(3, 5));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(api, TTL, EVERY, stop.clone()));
        sleep(Duration::from_secs(20)).await;
        assert!(
            !task.is_finished(),
            "transient failures must not lose the lease"
        );
        stop.cancel();
        assert_eq!(task.await.unwrap(), None);
        assert!(log.lock().unwrap().iter().filter(|(_, ok)| *ok).count() > 10);
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_forever_is_lost_by_the_deadline() {
        let (api, _) = fake(vec![], Step::Hang);
        let start = Instant::now();
        let lost = run(api, TTL, EVERY, CancellationToken::new()).await;
        assert_eq!(lost, Some(LostReason::KeepAliveFailed));
        assert!(start.elapsed() <= TTL, "{:?}", start.elapsed());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0u64..400).prop_map(|ms| Step::Ok(3, ms)),
                2 => (0u64..400).prop_map(Step::Fail),
                1 => Just(Step::Hang),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Whatever the network does, the session declares the lease lost
            /// no later than etcd could expire it (the last successful refresh's
            /// send time + ttl), and never while refreshes keep succeeding in time.
            #[test]
            fn never_later_than_etcd(script in proptest::collection::vec(step(), 1..40)) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let (api, log) = fake(script.clone(), Step::Fail(0));
                    let start = Instant::now();
                    let lost = run(api, TTL, EVERY, CancellationToken::new()).await;
                    let at = Instant::now();
                    assert!(lost.is_some());
                    let log = log.lock().unwrap();
                    // The answer to a successful refresh arrives after it was
                    // sent, so "answer time + ttl" bounds etcd's expiry from above.
                    let last_ok = log.iter().rev().find(|(_, ok)| *ok).map(|(t, _)| *t);
                    let etcd_expiry = last_ok.unwrap_or(start) + TTL;
                    assert!(at <= etcd_expiry, "lost at {:?}, etcd expiry {:?}", at - start, etcd_expiry - start);
                });
            }
        }
    }
}

//! deadline: a child's timeout is min(own, parent's remaining); the layer
//! propagates it; paused time.

use std::time::Duration;

use tokio::time::{Instant, sleep};
use tower::{Service, ServiceExt, service_fn};
use weft_fanout::deadline::{self, DeadlineExceeded, DeadlineLayer};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn no_deadline_outside_a_scope() {
    assert_eq!(deadline::current(), None);
    assert_eq!(deadline::remaining(), None);
    let now = Instant::now();
    assert_eq!(deadline::effective(ms(30)), now + ms(30));
}

#[tokio::test(start_paused = true)]
async fn child_gets_the_smaller_of_its_own_and_the_parents_remaining() {
    let start = Instant::now();
    deadline::within(ms(100), async {
        sleep(ms(40)).await;
        // 60 ms left: a child asking for 1 s gets 60 ms.
        assert_eq!(deadline::effective(Duration::from_secs(1)), start + ms(100));
        deadline::within(Duration::from_secs(1), async {
            assert_eq!(deadline::remaining(), Some(ms(60)));
        })
        .await
        .unwrap();
        // A child asking for less keeps its own.
        deadline::within(ms(10), async {
            assert_eq!(deadline::remaining(), Some(ms(10)));
            // ... and its own children see the tighter one.
            deadline::within(ms(50), async {
                assert_eq!(deadline::remaining(), Some(ms(10)))
            })
            .await
            .unwrap();
        })
        .await
        .unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_parent_deadline_cuts_a_slow_child() {
    let start = Instant::now();
    let out = deadline::within(ms(100), async {
        deadline::within(Duration::from_secs(10), sleep(Duration::from_secs(5))).await
    })
    .await;
    assert_eq!(
        out,
        Ok(Err(DeadlineExceeded::new())),
        "the child's own timeout fired, at the parent's deadline"
    );
    assert_eq!(start.elapsed(), ms(100));
    // An absolute deadline later than the parent's is shortened too.
    let start = Instant::now();
    let out = deadline::within(ms(30), async {
        deadline::at(Instant::now() + ms(500), sleep(ms(200))).await
    })
    .await;
    assert!(matches!(out, Ok(Err(_))));
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(deadline::remaining(), None, "scope ends with the call");
}

#[tokio::test(start_paused = true)]
async fn layer_propagates_the_deadline_to_the_inner_service() {
    let inner = service_fn(|()| async {
        let left = deadline::remaining();
        sleep(ms(5)).await;
        Ok::<_, std::convert::Infallible>(left)
    });
    let mut svc = tower::ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(200)))
        .service(inner);
    // No parent: the layer's own timeout.
    assert_eq!(
        svc.ready().await.unwrap().call(()).await.unwrap(),
        Some(ms(200))
    );
    // A parent with 50 ms left wins.
    let left = deadline::within(ms(50), async {
        svc.ready().await.unwrap().call(()).await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(left, Some(ms(50)));
}

#[tokio::test(start_paused = true)]
async fn layer_times_out_with_a_typed_error() {
    let inner = service_fn(|()| async {
        sleep(Duration::from_secs(1)).await;
        Ok::<_, std::io::Error>(())
    });
    let mut svc = DeadlineLayer::new(ms(20)).layer_fn(inner);
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.downcast_ref::<DeadlineExceeded>().is_some(), "{err}");
    assert_eq!(start.elapsed(), ms(20));
}

trait LayerFn {
    fn layer_fn<S>(self, s: S) -> weft_fanout::deadline::Deadline<S>;
}
impl LayerFn for DeadlineLayer {
    fn layer_fn<S>(self, s: S) -> weft_fanout::deadline::Deadline<S> {
        tower::Layer::layer(&self, s)
    }
}

/// `Duration::MAX` as "no timeout of my own" does not overflow the clock:
/// it is capped far in the future, and a parent's deadline still wins.
#[tokio::test(start_paused = true)]
async fn a_huge_own_timeout_is_capped_not_an_overflow() {
    let start = Instant::now();
    let far = deadline::effective(Duration::MAX);
    assert!(
        far >= start + Duration::from_secs(86_400 * 365 * 29),
        "{far:?}"
    );
    let out = deadline::within(Duration::MAX, async {
        sleep(ms(10)).await;
        7
    })
    .await
    .unwrap();
    assert_eq!(out, 7);
    let inner = deadline::within(ms(100), async {
        assert_eq!(deadline::effective(Duration::MAX), start + ms(10) + ms(100));
        deadline::within(Duration::MAX, sleep(ms(500))).await
    })
    .await;
    // Whichever of the two equal deadlines fires first, the child was cut
    // at the parent's 100 ms, not left to run 500 ms.
    assert!(matches!(inner, Ok(Err(_)) | Err(_)), "{inner:?}");
    assert_eq!(start.elapsed(), ms(110));
}

//! Edge cases at weft-core's boundaries: durations too long for the clock,
//! panics while a wrapped future is dropped, and reports whose counts would
//! overflow.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use weft_core::queue::{PushError, Queue};
use weft_core::{Overflow, ShutdownReport, catch_unwind};

/// `WaitTimeout(Duration::MAX)` ("wait as long as it takes") waits as
/// `Block` does instead of overflowing `Instant + Duration` when the queue
/// is full; a close still ends the wait with the item handed back.
#[tokio::test(start_paused = true)]
async fn a_wait_timeout_too_long_for_the_clock_waits_like_block() {
    let q = Queue::bounded(1, Overflow::WaitTimeout(Duration::MAX)).unwrap();
    q.push(1).await.unwrap();
    let q2 = q.clone();
    let pusher = tokio::spawn(async move { q2.push(2).await });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !pusher.is_finished(),
        "still waiting for room after an hour"
    );
    assert_eq!(q.pop().await, Some(1));
    assert!(
        matches!(pusher.await, Ok(Ok(_))),
        "room made: the push went in"
    );
    let q3 = q.clone();
    let blocked = tokio::spawn(async move { q3.push(3).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.close();
    assert!(matches!(blocked.await, Ok(Err(PushError::Closed(3)))));
}

struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop of user state");
    }
}

/// Ready at once, keeping its state (which panics when dropped) until the
/// future itself is dropped.
struct Done(#[allow(dead_code)] PanicsOnDrop);
impl Future for Done {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
        Poll::Ready(7)
    }
}

/// A wrapped future whose state panics when dropped, after it finished:
/// the panic stays inside the boundary and is reported like any panic of
/// the user's code there.
#[tokio::test]
async fn a_panic_dropping_a_finished_future_stays_inside_the_boundary() {
    let out = tokio::spawn(catch_unwind(Done(PanicsOnDrop))).await;
    let err = out.expect("the drop's panic escaped").unwrap_err();
    assert_eq!(err.message(), "drop of user state");
}

/// A wrapped future dropped before it finished (a cancelled task) whose
/// state panics when dropped: the panic does not escape into whoever drops
/// the boundary.
#[tokio::test(start_paused = true)]
async fn a_panic_dropping_a_cancelled_future_stays_inside_the_boundary() {
    let out = tokio::spawn(async {
        let fut = catch_unwind(async {
            let _state = PanicsOnDrop;
            std::future::pending::<()>().await;
        });
        tokio::time::timeout(Duration::from_millis(1), fut).await
    })
    .await;
    assert!(out.expect("the drop's panic escaped").is_err(), "timed out");
}

/// `is_balanced` cannot overflow: a report with a huge field (a counting
/// bug somewhere) reads as unbalanced instead of panicking or wrapping.
#[test]
fn is_balanced_does_not_overflow() {
    let mut r = ShutdownReport::new("x");
    r.completed = u64::MAX;
    r.failed = 1;
    assert!(!r.is_balanced());
    r.failed = 0;
    r.accepted = u64::MAX;
    assert!(r.is_balanced());
}

//! A spawn that waits for room (`Block`, `WaitTimeout`) and is handed a room
//! permit by tokio's semaphore just before the executor closes gives that
//! permit back without going through the executor (its acquire is dropped,
//! or returns `Closed`): the shutdown and the dispatcher must still hear of
//! it, or the shutdown sleeps to its cancel point and the dispatcher task
//! (with the executor's state) stays parked forever.

use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, sleep};
use weft_core::Overflow;
use weft_exec::{BoundedExecutor, SpawnError};

fn exec(overflow: Overflow) -> BoundedExecutor {
    BoundedExecutor::builder()
        .max_running(1)
        .queue_capacity(1)
        .overflow(overflow)
        .build()
        .unwrap()
}

/// Task A running, task B queued, and a third spawn waiting for room that
/// has been handed B's room permit (woken, not yet polled).
async fn spawn_handed_a_room_permit(
    exec: &BoundedExecutor,
) -> tokio_test::task::Spawn<
    impl std::future::Future<
        Output = Result<
            weft_exec::TaskHandle<()>,
            SpawnError<impl std::future::Future<Output = ()>>,
        >,
    > + '_,
> {
    let a = exec.spawn(sleep(Duration::from_millis(10))).await.unwrap();
    let b = exec.spawn(sleep(Duration::from_millis(10))).await.unwrap();
    let mut c = tokio_test::task::spawn(exec.spawn(async {}));
    assert!(c.poll().is_pending(), "the room is full: the spawn waits");
    a.await.unwrap();
    b.await.unwrap();
    assert!(
        c.is_woken(),
        "B started: its room permit went to the waiting spawn"
    );
    c
}

/// The shutdown closes the executor while the spawn holds the permit; the
/// caller then either gives up on the spawn (a select!, a timeout) or polls
/// it and gets `Closed`. Either way the shutdown returns at once, balanced.
#[tokio::test(start_paused = true)]
async fn a_spawn_holding_a_room_permit_at_the_close_does_not_stall_the_shutdown() {
    for give_up in [true, false] {
        let exec = exec(Overflow::Block);
        let mut c = spawn_handed_a_room_permit(&exec).await;
        let start = Instant::now();
        let exec2 = exec.clone();
        let shutdown = tokio::spawn(async move {
            exec2
                .shutdown(Instant::now() + Duration::from_secs(60))
                .await
        });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!shutdown.is_finished(), "the spawn still holds the permit");
        if !give_up {
            assert!(matches!(c.poll(), Poll::Ready(Err(SpawnError::Closed(_)))));
        }
        drop(c);
        let report = shutdown.await.unwrap();
        assert!(report.is_balanced(), "{report}");
        assert_eq!((report.accepted, report.completed), (2, 2), "{report}");
        assert_eq!(report.rejected_after_close, u64::from(!give_up), "{report}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "give_up {give_up}: the shutdown waited {:?} for a permit that was already back",
            start.elapsed()
        );
    }
}

/// Without a shutdown: the executor closes (its last handle dropped) and
/// its dispatcher, which waits for the last room permit, must exit.
#[tokio::test(start_paused = true)]
async fn the_dispatcher_exits_after_the_permit_comes_back_either_way() {
    let rt = tokio::runtime::Handle::current();
    for (overflow, drop_it) in [
        (Overflow::Block, true),
        (Overflow::WaitTimeout(Duration::from_secs(600)), false),
    ] {
        let base = rt.metrics().num_alive_tasks();
        let exec = exec(overflow);
        let mut c = spawn_handed_a_room_permit(&exec).await;
        exec.close();
        tokio::task::yield_now().await;
        if drop_it {
            drop(c);
        } else {
            assert!(matches!(c.poll(), Poll::Ready(Err(SpawnError::Closed(_)))));
            drop(c);
        }
        drop(exec);
        sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            rt.metrics().num_alive_tasks(),
            base,
            "{overflow:?}: the dispatcher task never exited"
        );
    }
}

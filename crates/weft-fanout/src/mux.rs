//! A priority multiplexer that never drops an item it has received.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

/// A mux that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The per-input buffer is 0; pass at least 1.
    #[error("priority mux buffer must hold at least 1 item per input; pass 1 or more")]
    ZeroBuffer,
    /// The fairness interval is 0; pass at least 1 (1 is plain round robin
    /// over the non-empty buffers).
    #[error("priority mux fairness interval must be at least 1 (1 is plain round robin)")]
    ZeroFairness,
}

struct Lane<S: Stream> {
    stream: Option<S>,
    priority: u32,
    buf: VecDeque<S::Item>,
}

/// Reads every ready item from its inputs into per-input bounded buffers,
/// then emits the highest-priority buffered item first.
///
/// Unlike a `select` loop that receives one item from each input per round
/// and forwards only the most urgent (dropping the rest), an item this mux
/// has received is always emitted: it stops reading an input whose buffer is
/// full (back-pressure) instead of discarding. It ends when every input has
/// ended and every buffer is empty. Equal priorities are served in input
/// order; with [`fairness`](PriorityMux::fairness), every n-th item is
/// taken round robin from the non-empty buffers so low priorities cannot
/// starve.
///
/// ```
/// use futures::{StreamExt, stream};
/// use weft_fanout::mux::PriorityMux;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let events = stream::iter(vec!["e1", "e2", "e3"]);
/// let alarms = stream::iter(vec!["ALARM"]);
/// let mux = PriorityMux::new([(0, events), (10, alarms)], 16).unwrap();
/// let out: Vec<_> = mux.collect().await;
/// // The alarm jumps the queue; nothing is dropped.
/// assert_eq!(out, ["ALARM", "e1", "e2", "e3"]);
/// # }
/// ```
pub struct PriorityMux<S: Stream> {
    lanes: Vec<Lane<S>>,
    cap: usize,
    every: Option<u64>,
    served: u64,
    cursor: usize,
}

impl<S: Stream + Unpin> PriorityMux<S> {
    /// A mux over `(priority, stream)` pairs (higher priority first), each
    /// input buffering up to `buffer` received items.
    pub fn new(
        inputs: impl IntoIterator<Item = (u32, S)>,
        buffer: usize,
    ) -> Result<Self, MuxError> {
        if buffer == 0 {
            return Err(MuxError::ZeroBuffer);
        }
        let mut lanes: Vec<Lane<S>> = inputs
            .into_iter()
            .map(|(priority, stream)| Lane {
                stream: Some(stream),
                priority,
                buf: VecDeque::with_capacity(buffer.min(64)),
            })
            .collect();
        // Stable: equal priorities keep input order.
        lanes.sort_by_key(|l| std::cmp::Reverse(l.priority));
        let cursor = lanes.len().saturating_sub(1);
        Ok(PriorityMux {
            lanes,
            cap: buffer,
            every: None,
            served: 0,
            cursor,
        })
    }
}

impl<S: Stream> PriorityMux<S> {
    /// Takes every `every`-th item round robin from the non-empty buffers
    /// (default: strict priority). Refused if `every` is 0
    /// ([`MuxError::ZeroFairness`]; 1 is plain round robin), like
    /// [`merge_biased`](crate::merge::merge_biased).
    ///
    /// ```
    /// use futures::stream;
    /// use weft_fanout::mux::{MuxError, PriorityMux};
    ///
    /// let mux = PriorityMux::new([(1, stream::iter([1]))], 8).unwrap();
    /// assert_eq!(mux.fairness(0).unwrap_err(), MuxError::ZeroFairness);
    /// ```
    pub fn fairness(mut self, every: u64) -> Result<Self, MuxError> {
        if every == 0 {
            return Err(MuxError::ZeroFairness);
        }
        self.every = Some(every);
        Ok(self)
    }

    /// Items received but not yet emitted.
    pub fn queued(&self) -> usize {
        self.lanes.iter().map(|l| l.buf.len()).sum()
    }
}

// Buffered items are never pinned; the inputs are `Unpin` where polled.
impl<S: Stream + Unpin> Unpin for PriorityMux<S> {}

impl<S: Stream> fmt::Debug for PriorityMux<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityMux")
            .field("inputs", &self.lanes.len())
            .field("buffered", &self.queued())
            .field("emitted", &self.served)
            .finish()
    }
}

impl<S: Stream + Unpin> Stream for PriorityMux<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        // 1. Receive everything that is ready, up to each buffer's capacity.
        let cap = this.cap;
        for lane in &mut this.lanes {
            while lane.buf.len() < cap {
                let Some(stream) = lane.stream.as_mut() else {
                    break;
                };
                match Pin::new(stream).poll_next(cx) {
                    Poll::Ready(Some(item)) => lane.buf.push_back(item),
                    Poll::Ready(None) => lane.stream = None,
                    Poll::Pending => break,
                }
            }
        }
        // 2. Emit one buffered item.
        let n = this.lanes.len();
        let fair_turn = this.every.is_some_and(|e| (this.served + 1) % e == 0);
        let pick = if fair_turn {
            (1..=n)
                .map(|k| (this.cursor + k) % n)
                .find(|&i| !this.lanes[i].buf.is_empty())
        } else {
            (0..n).find(|&i| !this.lanes[i].buf.is_empty())
        };
        if let Some(i) = pick {
            if fair_turn {
                this.cursor = i;
            }
            this.served += 1;
            return Poll::Ready(this.lanes[i].buf.pop_front());
        }
        if this.lanes.iter().all(|l| l.stream.is_none()) {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

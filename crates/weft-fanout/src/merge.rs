//! Fan-in: merge N streams fairly, by weight, or by priority without
//! starving anyone.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

/// A merge that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// An input was given weight 0, so it would never be read; give it at
    /// least 1 (or leave the stream out).
    #[error("input {input} has weight 0; give every input a weight of at least 1")]
    ZeroWeight {
        /// The input's position.
        input: usize,
    },
    /// The fairness interval is 0; pass at least 1 (1 is plain round robin).
    #[error("fairness interval must be at least 1 (1 is plain round robin)")]
    ZeroFairness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Fair,
    Weighted,
    Biased { every: u32 },
}

struct Input<S> {
    stream: Option<S>,
    /// Weight (weighted) or priority (biased).
    weight: u32,
    credit: u32,
    emitted: u64,
}

/// Merges several streams into one; ends when every input has ended. Each
/// input item is emitted exactly once, in its input's order. Inputs must be
/// `Unpin` (wrap others in `Box::pin`), as with
/// [`futures::stream::select_all()`].
///
/// - [`merge_fair`]: round robin, one item per ready input in turn.
/// - [`merge_weighted`]: up to `weight` items from an input before moving
///   to the next (deficit round robin).
/// - [`merge_biased`]: higher priority first, but every `every`-th item is
///   taken round robin over all inputs, so a ready low-priority input is
///   served within `every × inputs` items however busy the others are.
///
/// ```
/// use futures::{StreamExt, stream};
/// use weft_fanout::merge::merge_biased;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let urgent = stream::iter(vec!["u1", "u2", "u3", "u4"]);
/// let bulk = stream::iter(vec!["b1", "b2"]);
/// // Priority 9 beats 1, but every 3rd item is taken in turn.
/// let merged: Vec<_> = merge_biased([(9, urgent), (1, bulk)], 3).unwrap().collect().await;
/// assert_eq!(merged, ["u1", "u2", "b1", "u3", "u4", "b2"]);
/// # }
/// ```
pub struct Merge<S> {
    inputs: Vec<Input<S>>,
    policy: Policy,
    /// Round-robin position.
    cursor: usize,
    /// Items emitted (for the biased policy's turn counting).
    served: u64,
    live: usize,
}

/// Merges `streams` round robin.
///
/// ```
/// use futures::{StreamExt, stream};
/// use weft_fanout::merge::merge_fair;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let merged: Vec<u32> = merge_fair([stream::iter(vec![1, 2, 3]), stream::iter(vec![10, 20])])
///     .collect()
///     .await;
/// assert_eq!(merged, [1, 10, 2, 20, 3]);
/// # }
/// ```
pub fn merge_fair<S: Stream + Unpin>(streams: impl IntoIterator<Item = S>) -> Merge<S> {
    Merge::build(streams.into_iter().map(|s| (1, s)), Policy::Fair)
}

/// Merges `(weight, stream)` pairs: up to `weight` consecutive items from
/// each ready input in turn. Refused if a weight is 0.
///
/// ```
/// use futures::{StreamExt, stream};
/// use weft_fanout::merge::merge_weighted;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let a = stream::iter(vec!['a'; 6]);
/// let b = stream::iter(vec!['b'; 3]);
/// let merged: String = merge_weighted([(2, a), (1, b)]).unwrap().collect().await;
/// assert_eq!(merged, "aabaabaab");
/// # }
/// ```
pub fn merge_weighted<S: Stream + Unpin>(
    streams: impl IntoIterator<Item = (u32, S)>,
) -> Result<Merge<S>, MergeError> {
    let m = Merge::build(streams, Policy::Weighted);
    if let Some(input) = m.inputs.iter().position(|i| i.weight == 0) {
        return Err(MergeError::ZeroWeight { input });
    }
    Ok(m)
}

/// Merges `(priority, stream)` pairs, higher priority first, taking every
/// `every`-th item round robin so no ready input starves. Refused if `every`
/// is 0.
pub fn merge_biased<S: Stream + Unpin>(
    streams: impl IntoIterator<Item = (u32, S)>,
    every: u32,
) -> Result<Merge<S>, MergeError> {
    if every == 0 {
        return Err(MergeError::ZeroFairness);
    }
    let mut m = Merge::build(streams, Policy::Biased { every });
    // Highest priority first; stable, so equal priorities keep input order.
    m.inputs.sort_by_key(|i| std::cmp::Reverse(i.weight));
    // The first fairness turn goes to the lowest priority.
    m.cursor = m.inputs.len().saturating_sub(1);
    Ok(m)
}

impl<S> Merge<S> {
    fn build(streams: impl IntoIterator<Item = (u32, S)>, policy: Policy) -> Self {
        let inputs: Vec<Input<S>> = streams
            .into_iter()
            .map(|(weight, s)| Input {
                stream: Some(s),
                weight,
                credit: weight,
                emitted: 0,
            })
            .collect();
        let live = inputs.len();
        Merge {
            inputs,
            policy,
            cursor: 0,
            served: 0,
            live,
        }
    }

    /// Inputs that have not ended yet.
    pub fn live_inputs(&self) -> usize {
        self.live
    }

    /// Items emitted so far.
    pub fn emitted(&self) -> u64 {
        self.served
    }
}

impl<S> fmt::Debug for Merge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Merge")
            .field("policy", &self.policy)
            .field("inputs", &self.inputs.len())
            .field("live", &self.live)
            .field("emitted", &self.served)
            .finish()
    }
}

impl<S: Stream + Unpin> Merge<S> {
    /// Polls input `i`; `Some(item)` if it yielded, marks it ended if it did.
    #[inline]
    fn poll_input(&mut self, i: usize, cx: &mut Context<'_>) -> Option<S::Item> {
        let input = &mut self.inputs[i];
        let stream = input.stream.as_mut()?;
        match Pin::new(stream).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                input.emitted += 1;
                Some(item)
            }
            Poll::Ready(None) => {
                input.stream = None;
                self.live -= 1;
                None
            }
            Poll::Pending => None,
        }
    }

    /// One round-robin step from `self.cursor`.
    #[inline]
    fn poll_round_robin(&mut self, cx: &mut Context<'_>, weighted: bool) -> Option<S::Item> {
        let n = self.inputs.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            if let Some(item) = self.poll_input(i, cx) {
                if weighted {
                    let input = &mut self.inputs[i];
                    input.credit -= 1;
                    if input.credit == 0 {
                        input.credit = input.weight;
                        self.cursor = if i + 1 == n { 0 } else { i + 1 };
                    } else {
                        self.cursor = i;
                    }
                } else {
                    self.cursor = if i + 1 == n { 0 } else { i + 1 };
                }
                return Some(item);
            }
            // Not ready or ended: its turn is over.
            let input = &mut self.inputs[i];
            input.credit = input.weight;
        }
        None
    }
}

impl<S: Stream + Unpin> Stream for Merge<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let item = match this.policy {
            Policy::Fair => this.poll_round_robin(cx, false),
            Policy::Weighted => this.poll_round_robin(cx, true),
            Policy::Biased { every } => {
                if (this.served + 1) % u64::from(every) == 0 {
                    this.poll_round_robin(cx, false)
                } else {
                    (0..this.inputs.len()).find_map(|i| this.poll_input(i, cx))
                }
            }
        };
        match item {
            Some(item) => {
                this.served += 1;
                Poll::Ready(Some(item))
            }
            None if this.live == 0 => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let mut lo = 0usize;
        let mut hi = Some(0usize);
        for s in self.inputs.iter().filter_map(|i| i.stream.as_ref()) {
            let (l, h) = s.size_hint();
            lo = lo.saturating_add(l);
            hi = match (hi, h) {
                (Some(a), Some(b)) => a.checked_add(b),
                _ => None,
            };
        }
        (lo, hi)
    }
}

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

const TOKEN: i64 = 1_000;

/// Limits retries to a fraction of calls, shared by every clone.
///
/// Each call deposits `ratio` of a token; each retry withdraws a whole one
/// and is refused when there is none. The budget starts with `reserve`
/// tokens (so that a service with little traffic can still retry) and holds
/// at most `reserve + ratio * 100` (so that a long healthy period cannot
/// save up for a retry storm). Over any run: retries <= reserve + ratio * calls.
///
/// ```
/// use weft_breaker::retry::RetryBudget;
///
/// let budget = RetryBudget::new(0.1, 1);
/// assert!(budget.try_withdraw()); // the reserve
/// assert!(!budget.try_withdraw());
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw()); // 10 calls x 0.1
/// assert!(!budget.try_withdraw());
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    balance: AtomicI64,
    per_call: i64,
    cap: i64,
    deposits: AtomicU64,
    withdrawals: AtomicU64,
    refusals: AtomicU64,
}

/// A snapshot of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetStats {
    /// Calls that deposited.
    pub deposits: u64,
    /// Retries allowed.
    pub withdrawals: u64,
    /// Retries refused for want of budget.
    pub refusals: u64,
    /// Whole tokens available now.
    pub available: u64,
}

impl RetryBudget {
    /// A budget allowing retries of up to `ratio` of calls (clamped to
    /// `[0, 1000]`), plus `reserve` retries.
    pub fn new(ratio: f64, reserve: u32) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        // Rounded down, so that retries never exceed `ratio` of calls.
        let per_call = (ratio * TOKEN as f64).floor() as i64;
        let start = i64::from(reserve) * TOKEN;
        RetryBudget {
            inner: Arc::new(Inner {
                balance: AtomicI64::new(start),
                per_call,
                cap: start + per_call * 100,
                deposits: AtomicU64::new(0),
                withdrawals: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one call (not a retry).
    pub fn deposit(&self) {
        let i = &self.inner;
        i.deposits.fetch_add(1, Ordering::Relaxed);
        if i.per_call == 0 {
            return;
        }
        let _ = i
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < i.cap).then(|| (b + i.per_call).min(i.cap))
            });
    }

    /// Takes one retry's worth, if there is one.
    pub fn try_withdraw(&self) -> bool {
        let i = &self.inner;
        let ok = i
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= TOKEN).then_some(b - TOKEN)
            })
            .is_ok();
        if ok {
            i.withdrawals.fetch_add(1, Ordering::Relaxed);
        } else {
            i.refusals.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// A snapshot.
    pub fn stats(&self) -> BudgetStats {
        let i = &self.inner;
        BudgetStats {
            deposits: i.deposits.load(Ordering::Relaxed),
            withdrawals: i.withdrawals.load(Ordering::Relaxed),
            refusals: i.refusals.load(Ordering::Relaxed),
            available: (i.balance.load(Ordering::Relaxed) / TOKEN).max(0) as u64,
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("stats", &self.stats())
            .finish()
    }
}

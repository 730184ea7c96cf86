//! A byte budget for task bodies held in memory while they wait for a Worker slot.
//! The queue is bounded in tasks by `tasks.max_queued`; this bounds it in bytes
//! (`tasks.max_queued_bytes`), so that 10,000 bodies of 10 MB cannot pile up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes reserved by waiting tasks, and the most that may be. Default budget 256 MiB.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Reserves `bytes` until the guard is dropped; `None` when that would exceed the
    /// budget. A single body is always accepted into an empty budget, so a budget
    /// smaller than `tasks.body_limit` cannot starve large tasks forever.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reserved> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let total = used.checked_add(bytes)?;
                (total <= self.max || used == 0).then_some(total)
            })
            .ok()?;
        Some(Reserved {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes reserved right now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// Bytes held by one waiting task (see [`ByteBudget::try_reserve`]); given back on drop.
#[derive(Debug)]
pub(crate) struct Reserved {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let b = ByteBudget::new(100);
        let a = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let c = b.try_reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(a);
        assert_eq!(b.used(), 40);
        drop(c);
        assert_eq!(b.used(), 0);
        // One oversized body fits an empty budget, and only then.
        let big = b.try_reserve(500).unwrap();
        assert!(b.try_reserve(1).is_none());
        drop(big);
        assert_eq!(b.used(), 0);
        assert!(b.try_reserve(usize::MAX).is_some());
    }
}

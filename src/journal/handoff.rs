//! What both engines hand to the journal service: tasks claimed by their
//! background work, and the "released" flag of a stopping instance.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::Claimed;

/// Claimed tasks waiting for the journal service to run them.
#[derive(Default)]
pub(crate) struct ClaimBox {
    claimed: parking_lot::Mutex<Vec<Claimed>>,
    ready: Notify,
}

impl ClaimBox {
    /// Adds a batch (in the order it should run) and wakes the service.
    pub(crate) fn push(&self, batch: Vec<Claimed>) {
        if batch.is_empty() {
            return;
        }
        self.claimed.lock().extend(batch);
        self.ready.notify_one();
    }

    /// Waits for the next non-empty batch.
    pub(crate) async fn next(&self) -> Vec<Claimed> {
        loop {
            let notified = self.ready.notified();
            let batch = std::mem::take(&mut *self.claimed.lock());
            if !batch.is_empty() {
                return batch;
            }
            notified.await;
        }
    }
}

/// Set once this instance gives its queued tasks away; runners waiting on
/// [`ReleaseFlag::wait`] are woken when the hand-over is done.
#[derive(Default)]
pub(crate) struct ReleaseFlag {
    set: AtomicBool,
    done: Notify,
}

impl ReleaseFlag {
    /// Marks the instance as releasing (before the tasks are handed over).
    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::Release);
    }

    /// Wakes the runners once the tasks were handed over.
    pub(crate) fn wake(&self) {
        self.done.notify_waiters();
    }

    /// True once [`ReleaseFlag::set`] was called.
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once released (at once if it already was).
    pub(crate) async fn wait(&self) {
        let notified = self.done.notified();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

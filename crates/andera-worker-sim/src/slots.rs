//! Priority slot scheduler: at most `limit` tasks run at once, the others wait
//! inside the Worker ordered by priority (1 first), first come first served
//! within a priority. A Worker never refuses a task for being busy.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

/// A point-in-time view of the slot counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotCounts {
    /// Tasks running now.
    pub running: usize,
    /// Tasks waiting for a slot inside the Worker.
    pub queued: usize,
    /// Maximum number of tasks running at once.
    pub limit: usize,
    /// Highest `running` ever observed.
    pub max_running: usize,
    /// Highest `running + queued` ever observed.
    pub max_in_flight: usize,
}

struct Inner {
    limit: usize,
    running: usize,
    max_running: usize,
    max_in_flight: usize,
    next_seq: u64,
    /// Waiters keyed by (priority, arrival sequence): the first entry is the
    /// next one to run.
    waiters: BTreeMap<(u32, u64), oneshot::Sender<()>>,
}

impl Inner {
    fn record_maxima(&mut self) {
        self.max_running = self.max_running.max(self.running);
        self.max_in_flight = self.max_in_flight.max(self.running + self.waiters.len());
    }

    /// Gives a freed slot to the next waiter, or returns it to the pool.
    fn release_one(&mut self) {
        while let Some((_, tx)) = self.waiters.pop_first() {
            if tx.send(()).is_ok() {
                // The slot passes straight to the waiter: `running` is unchanged.
                return;
            }
        }
        self.running = self.running.saturating_sub(1);
    }
}

/// The slot pool of one simulated Worker.
pub(crate) struct Slots {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Slots {
    /// Creates a pool of `limit` slots (at least one).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(Slots {
            inner: Mutex::new(Inner {
                limit: limit.max(1),
                running: 0,
                max_running: 0,
                max_in_flight: 0,
                next_seq: 0,
                waiters: BTreeMap::new(),
            }),
            changed,
        })
    }

    /// A receiver that is notified on every change of the counters.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes every subscriber (also used for status changes).
    pub(crate) fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Current counters.
    pub(crate) fn counts(&self) -> SlotCounts {
        let inner = self.inner.lock();
        SlotCounts {
            running: inner.running,
            queued: inner.waiters.len(),
            limit: inner.limit,
            max_running: inner.max_running,
            max_in_flight: inner.max_in_flight,
        }
    }

    /// Waits for a slot. Dropping the returned future while it waits leaves
    /// the queue cleanly; dropping the permit frees the slot.
    pub(crate) async fn acquire(self: &Arc<Self>, priority: u32) -> SlotPermit {
        let mut guard = {
            let mut inner = self.inner.lock();
            if inner.running < inner.limit && inner.waiters.is_empty() {
                inner.running += 1;
                inner.record_maxima();
                drop(inner);
                self.notify();
                return SlotPermit {
                    slots: Arc::clone(self),
                };
            }
            let key = (priority, inner.next_seq);
            inner.next_seq += 1;
            let (tx, rx) = oneshot::channel();
            inner.waiters.insert(key, tx);
            inner.record_maxima();
            WaitGuard {
                slots: Arc::clone(self),
                key,
                rx,
                done: false,
            }
        };
        self.notify();
        // The sender lives in the map until it is used, and it is only removed
        // by `release_one` (which sends) or by the guard itself.
        let _ = (&mut guard.rx).await;
        guard.done = true;
        SlotPermit {
            slots: Arc::clone(self),
        }
    }

    fn release(&self) {
        self.inner.lock().release_one();
        self.notify();
    }
}

/// Removes an abandoned waiter from the queue (or gives back a slot that was
/// granted to it after it stopped waiting).
struct WaitGuard {
    slots: Arc<Slots>,
    key: (u32, u64),
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut inner = self.slots.inner.lock();
            if inner.waiters.remove(&self.key).is_none() {
                // Granted while being dropped: pass the slot on.
                inner.release_one();
            }
        }
        self.slots.notify();
    }
}

/// One running slot; dropping it frees the slot for the next waiter.
pub(crate) struct SlotPermit {
    slots: Arc<Slots>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.slots.release();
    }
}

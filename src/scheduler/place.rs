//! A waiting task's place in its pool's queue, asked for later by
//! `GET /task/{id}` (`queuePosition`) without holding the task's [`super::Waiting`].

use std::sync::{Arc, Weak};

use super::{Scheduler, WaitKey};

/// Where a task waits: its pool and its key in the pool's queue.
#[derive(Debug, Clone)]
pub struct QueuePlace {
    pub(super) scheduler: Weak<Scheduler>,
    pub(super) pool: (Arc<str>, u64),
    pub(super) key: WaitKey,
}

impl QueuePlace {
    /// The task's position in its pool's queue (1: the next to get a slot), or
    /// `None` once it left the queue. Counts the waiters ahead: O(waiters).
    pub fn position(&self) -> Option<usize> {
        let scheduler = self.scheduler.upgrade()?;
        let st = scheduler.state.lock();
        let pool = st.pools.get(&self.pool.0)?.get(&self.pool.1)?;
        pool.waiters
            .contains_key(&self.key)
            .then(|| pool.waiters.range(..self.key).count() + 1)
    }
}

//! The waiting room (`tasks.no_worker_wait_ms`, default 0: off).
//!
//! Without it, a task for a group with no usable Worker gets `503` at once, and the
//! tasks queued in a pool fail when its last usable Worker leaves. With it, such a
//! task joins the pool's normal priority queue (a pool is made for it if the group
//! has no Worker listed at all) and waits up to the waiting-room time, counted from
//! when it arrived or from when the pool lost its last usable Worker, whichever is
//! later, for one to appear; its `TASK_TIMEOUT` still bounds the whole wait. A sweep,
//! armed only while a pool has no usable Worker, fails those whose time is up with
//! the `503` they would have had at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use tokio::time::Instant;

use super::pool::Pool;
use super::{count_down, AcquireError, Scheduler};

impl Scheduler {
    /// Sets how long a task for a group with no usable Worker waits for one to appear
    /// (`tasks.no_worker_wait_ms`). Default zero: it is refused at once.
    pub fn set_no_worker_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.no_worker_wait_ms.store(ms, Ordering::Relaxed);
    }

    /// The waiting-room time; zero when it is off.
    pub(super) fn no_worker_wait(&self) -> Duration {
        Duration::from_millis(self.no_worker_wait_ms.load(Ordering::Relaxed))
    }

    /// True when the pool `key` has Workers listed (not only a waiting room).
    pub(super) fn has_members(&self, key: &(Arc<str>, u64)) -> bool {
        let st = self.state.lock();
        let pool = st.pools.get(&key.0).and_then(|p| p.get(&key.1));
        pool.is_some_and(|p| !p.members.is_empty())
    }

    /// `pool` has no usable Worker left (or a task just joined its waiting room).
    /// Without a waiting room its waiters fail with `why`; with one they stay and a
    /// sweep is armed. Returns how many waiters left the queue.
    pub(super) fn no_worker_left(
        &self,
        pool: &mut Pool,
        contract: u64,
        why: AcquireError,
    ) -> usize {
        let wait = self.no_worker_wait();
        if wait.is_zero() {
            return pool.fail_all(why);
        }
        if pool.waiters.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let since = *pool.empty_since.get_or_insert(now);
        let first = pool.waiters.values().map(|w| w.since.max(since)).min();
        if let Some(first) = first {
            self.arm_sweep(pool, contract, first + wait);
        }
        0
    }

    /// Schedules one sweep of `pool`'s waiting room at `at`, unless one is pending.
    /// Outside a Tokio runtime (unit tests) nothing is armed: waiters then leave at
    /// their deadline.
    fn arm_sweep(&self, pool: &mut Pool, contract: u64, at: Instant) {
        if pool.sweep_armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        pool.sweep_armed = true;
        let me = self.me.clone();
        let key = (pool.group.clone(), contract);
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(scheduler) = me.upgrade() {
                scheduler.sweep(&key);
            }
        });
    }

    /// Fails the waiters whose waiting-room time is up, if the pool still has no
    /// usable Worker, and arms the next sweep for the others.
    fn sweep(&self, key: &(Arc<str>, u64)) {
        let mut st = self.state.lock();
        let super::State { pools, queued, .. } = &mut *st;
        let Some(pool) = pools.get_mut(&key.0).and_then(|p| p.get_mut(&key.1)) else {
            return;
        };
        pool.sweep_armed = false;
        let (Some(since), false) = (pool.empty_since, pool.usable > 0) else {
            return;
        };
        let wait = self.no_worker_wait();
        let now = Instant::now();
        let why = if pool.members.is_empty() {
            AcquireError::UnknownPool
        } else {
            AcquireError::NoWorkerUp
        };
        let expired: Vec<_> = pool
            .waiters
            .iter()
            .filter(|(_, w)| w.since.max(since) + wait <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &expired {
            if let Some(w) = pool.waiters.remove(k) {
                let _ = w.tx.send(Err(why.clone()));
            }
        }
        count_down(queued, expired.len(), "queued");
        if let Some(next) = pool.waiters.values().map(|w| w.since.max(since)).min() {
            self.arm_sweep(pool, key.1, next + wait);
        }
        drop_if_idle(pools, key);
    }
}

impl Pool {
    /// The pool has a usable Worker again: its waiting room's clock stops.
    pub(super) fn worker_back(&mut self) {
        self.empty_since = None;
    }

    /// Now that the pool says which functions it exposes, checks the waiters that
    /// joined its waiting room before it could: a function it does not expose fails
    /// as it would have at once. Returns how many waiters left the queue.
    pub(super) fn settle_deferred(&mut self) -> usize {
        let functions = self.functions.clone();
        let unknown: Vec<_> = self
            .waiters
            .iter_mut()
            .filter_map(|(k, w)| match w.deferred.take() {
                Some(f) if !functions.contains(&*f) => Some(*k),
                _ => None,
            })
            .collect();
        for k in &unknown {
            if let Some(w) = self.waiters.remove(k) {
                let _ = w.tx.send(Err(AcquireError::UnknownFunction));
            }
        }
        unknown.len()
    }
}

/// Drops a pool that has neither Workers nor waiters (one made for the waiting room).
pub(super) fn drop_if_idle(
    pools: &mut HashMap<Arc<str>, HashMap<u64, Pool>>,
    key: &(Arc<str>, u64),
) {
    let Some(by_contract) = pools.get_mut(&key.0) else {
        return;
    };
    if by_contract
        .get(&key.1)
        .is_some_and(|p| p.members.is_empty() && p.waiters.is_empty())
    {
        by_contract.remove(&key.1);
        if by_contract.is_empty() {
            pools.remove(&key.0);
        }
    }
}

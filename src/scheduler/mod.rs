//! The scheduler: who has a free slot, who is waiting for one, and the leases that
//! tie a task to a Worker slot.
//!
//! One mutex guards all slot and queue state. Every operation under it is O(log n)
//! in the number of Workers of a pool or waiters of a pool, so selection stays flat
//! however many Workers are registered. A freed slot is handed directly to the head
//! waiter of the Worker's pool while the lock is held: no thundering herd, no lost
//! wakeup.

mod fair;
mod hold;
mod load;
mod outlier;
mod place;
mod pool;
mod room;
mod shared;
mod wait;

use foldhash::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::worker_url::WorkerUrl;
pub use fair::ClientShare;
use fair::{Counted, WaitKey};
pub use outlier::{Ejection, OutlierPolicy};
pub use place::QueuePlace;
use pool::{Pool, SlotState, Waiter};
pub use shared::{Candidate, ClusterEvent, ClusterLink, GrantOutcome, PoolKey};
pub use wait::{Lease, Waiting};

/// Identifies a registered Worker for the life of its registration (never reused).
pub type WorkerId = u64;

/// The names of the functions a Worker exposes.
pub type FunctionSet = HashSet<String>;

/// What the registry tells the scheduler about one Worker.
#[derive(Clone, Debug)]
pub struct WorkerSlots {
    /// The Worker's base URL.
    pub url: Arc<WorkerUrl>,
    /// Its group.
    pub group: Arc<str>,
    /// Its contract.
    pub contract: u64,
    /// Functions it exposes.
    pub functions: Arc<FunctionSet>,
    /// Ready, valid, reachable, every service up.
    pub eligible: bool,
    /// Its function list matches its pool's reference (it is not under
    /// `invalidWorkers`): only valid Workers say which functions a pool exposes.
    pub valid: bool,
    /// When the Worker last answered its `/health` poll or its slot feed.
    pub heard_at: Option<Instant>,
    /// Its latest report shows a task running or queued (`used + queue > 0`).
    pub busy: bool,
    /// Slot limit it reports.
    pub limit: u32,
    /// Slots in use it reported in this update, if the update carries a figure.
    pub reported_used: Option<u32>,
    /// `5 × cpuLoad + 5 × usedMemoryPercent`, in thousandths.
    pub penalty_milli: i64,
}

/// Why a task cannot get a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    /// No Worker of this group and contract is registered and valid.
    UnknownPool,
    /// The pool exists but none of its Workers exposes the function.
    UnknownFunction,
    /// Workers exist but none is currently up.
    NoWorkerUp,
    /// The wait queue is full.
    QueueFull,
    /// The task's client already holds `max_running` slots.
    ClientRunning,
    /// The task's client already has `max_queued` tasks waiting.
    ClientQueued,
    /// The task waited until its deadline.
    TimedOut,
    /// The load balancer is shutting down.
    ShuttingDown,
}

/// What a task asks for.
#[derive(Debug, Clone, Copy)]
pub struct SlotRequest<'a> {
    /// Worker group.
    pub group: &'a str,
    /// Contract version.
    pub contract: u64,
    /// Function name.
    pub function: &'a str,
    /// 1 (most urgent) ..= 2097152.
    pub priority: u32,
    /// The named client it runs for: its share and limits (`None`: no client, e.g. a
    /// task resumed from a journal written before clients were recorded).
    pub client: Option<ClientShare<'a>>,
}

/// A slot taken on a Worker, handed to a waiter or returned by [`Scheduler::acquire`].
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub worker: WorkerId,
    pub url: Arc<WorkerUrl>,
    /// Counts the slot in its client's running tasks while the grant (then its
    /// lease) lives.
    pub client: Option<Arc<Counted>>,
    /// Its number as a cluster lease (`cluster.redis` set), else `None`.
    pub tag: Option<u64>,
}

/// Outcome of [`Scheduler::acquire`].
pub enum Acquire {
    /// A slot was free: here it is.
    Ready(Lease),
    /// Every slot is busy: wait on this.
    Queued(Waiting),
}

/// A point-in-time view of the queue, for metrics and the dashboard.
#[derive(Debug, Clone, Default)]
pub struct QueueSnapshot {
    /// Tasks waiting for a slot.
    pub depth: usize,
    /// `(priority, waiting)` for each priority with waiters, most urgent first.
    pub by_priority: Vec<(u32, usize)>,
}

/// Takes `n` off a scheduler count. An underflow is a bookkeeping bug (a slot or a
/// waiter given back twice) that wrapping or saturating would hide: debug builds (the
/// tests) panic, release builds log it and stay at zero.
pub(crate) fn count_down<T: num_traits::CheckedSub + num_traits::Zero>(
    count: &mut T,
    n: T,
    what: &str,
) {
    match count.checked_sub(&n) {
        Some(v) => *count = v,
        None => {
            debug_assert!(false, "scheduler count {what} would go below zero");
            log::error!("bug: scheduler count {what} would go below zero; kept at 0");
            *count = T::zero();
        }
    }
}

/// Slot usage of one Worker as the load balancer counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotUsage {
    /// Tasks this load balancer has in flight on the Worker.
    pub in_flight: u32,
    /// Slots the Worker reports used by others (another load balancer, orphaned tasks).
    pub external: u32,
    /// The Worker's limit.
    pub limit: u32,
}

#[derive(Default)]
struct State {
    workers: HashMap<WorkerId, SlotState>,
    pools: HashMap<Arc<str>, HashMap<u64, Pool>>,
    next_seq: u64,
    queued: usize,
    closed: bool,
    /// Groups a valid Worker has had since start: the bounded `group` label values.
    known_groups: HashSet<Arc<str>>,
    /// Named clients' waiting and running tasks.
    loads: fair::Loads,
    /// The cluster link, with `cluster.redis`.
    link: Option<Arc<ClusterLink>>,
}

/// Slot accounting and the priority wait queue. Default queue bound: set by the caller.
pub struct Scheduler {
    state: Mutex<State>,
    max_queued: usize,
    /// The waiting room's time in ms (`tasks.no_worker_wait_ms`); 0: off.
    no_worker_wait_ms: AtomicU64,
    /// Itself, for the waiting room's timers.
    me: Weak<Scheduler>,
}

impl Scheduler {
    /// A scheduler whose wait queue holds at most `max_queued` tasks, without a
    /// waiting room (see [`Scheduler::set_no_worker_wait`]).
    pub fn new(max_queued: usize) -> Arc<Scheduler> {
        Arc::new_cyclic(|me| Scheduler {
            state: Mutex::new(State::default()),
            max_queued,
            no_worker_wait_ms: AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// Takes a slot for `req` if one is free, else joins the queue.
    pub fn acquire(self: &Arc<Self>, req: &SlotRequest<'_>) -> Result<Acquire, AcquireError> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(AcquireError::ShuttingDown);
        }
        let State {
            workers,
            pools,
            next_seq,
            queued,
            loads,
            link,
            ..
        } = &mut *st;
        let load = req.client.as_ref().map(|c| (c, loads.of(c.name)));
        if let Some((c, load)) = &load {
            if c.max_running > 0 && load.running() >= c.max_running as usize {
                return Err(AcquireError::ClientRunning);
            }
        }
        let room = !self.no_worker_wait().is_zero();
        let exists = pools
            .get(req.group)
            .is_some_and(|by_contract| by_contract.contains_key(&req.contract));
        if !exists {
            if !room {
                return Err(AcquireError::UnknownPool);
            }
            if *queued >= self.max_queued {
                return Err(AcquireError::QueueFull);
            }
            let group: Arc<str> = req.group.into();
            pools
                .entry(group.clone())
                .or_default()
                .insert(req.contract, Pool::new(group, req.contract, link.clone()));
        }
        let pool = pools
            .get_mut(req.group)
            .and_then(|by_contract| by_contract.get_mut(&req.contract))
            .ok_or(AcquireError::UnknownPool)?;
        // A pool without Workers (only in the waiting room) does not know its functions yet.
        let deferred = pool.members.is_empty();
        if !deferred && !pool.functions.contains(req.function) {
            return Err(AcquireError::UnknownFunction);
        }
        if pool.usable == 0 && !room {
            return Err(AcquireError::NoWorkerUp);
        }
        if pool.waiters.is_empty() {
            if let Some(id) = pool.best() {
                let running = load.as_ref().map(|(_, l)| Arc::new(Counted::new(l, true)));
                let lease = shared::lease_number(link.as_ref(), next_seq);
                let grant = pool.take(workers, id, running, lease);
                pool.started(lease, grant.url.clone());
                return Ok(Acquire::Ready(Lease::new(self.clone(), grant)));
            }
        }
        if *queued >= self.max_queued {
            return Err(AcquireError::QueueFull);
        }
        if let Some((c, load)) = &load {
            if c.max_queued > 0 && load.waiting() >= c.max_queued as usize {
                return Err(AcquireError::ClientQueued);
            }
        }
        *next_seq += 1;
        let key: WaitKey = (
            req.priority,
            pool.fair.tag(req.client.as_ref(), req.priority),
            *next_seq,
        );
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            tx,
            since: Instant::now(),
            deferred: deferred.then(|| req.function.into()),
            client: load.map(|(_, l)| Counted::new(&l, false)),
            running_limit: req.client.as_ref().map_or(0, |c| c.max_running),
        };
        pool.waiters.insert(key, waiter);
        *queued += 1;
        let pool_key = (pool.group.clone(), req.contract);
        if pool.usable == 0 {
            self.no_worker_left(pool, req.contract, AcquireError::NoWorkerUp);
        }
        shared::ask_cluster(link.as_ref(), workers, pool, req, key);
        count_down(queued, pool.pump(workers), "queued");
        Ok(Acquire::Queued(Waiting::new(
            self.clone(),
            pool_key,
            key,
            rx,
        )))
    }

    /// Gives a slot back and hands it to the head waiter of the Worker's pool (or,
    /// for a cluster lease `tag`, back to the cluster).
    pub(crate) fn release(&self, worker: WorkerId, tag: Option<u64>) {
        let mut st = self.state.lock();
        let State {
            workers,
            pools,
            queued,
            link,
            ..
        } = &mut *st;
        let w = workers.get_mut(&worker);
        if let (Some(link), Some(seq)) = (link.as_ref(), tag) {
            let limit = w.as_ref().map(|w| w.limit);
            link.send(ClusterEvent::Released { seq, limit });
        }
        let Some(w) = w else {
            return; // removed from the list since: nothing to give back
        };
        count_down(&mut w.in_flight, 1, "in_flight");
        let (group, contract) = w.pool.clone();
        if let Some(pool) = pools.get_mut(&group).and_then(|p| p.get_mut(&contract)) {
            pool.refresh(workers, worker);
            count_down(queued, pool.pump(workers), "queued");
        }
    }

    /// Removes a waiter that gave up (timeout, client gone). True if it was still queued.
    pub(crate) fn cancel_wait(&self, pool_key: &(Arc<str>, u64), key: WaitKey) -> bool {
        let mut st = self.state.lock();
        let removed = st
            .pools
            .get_mut(&pool_key.0)
            .and_then(|p| p.get_mut(&pool_key.1))
            .and_then(|pool| pool.waiters.remove(&key))
            .is_some();
        if removed {
            if let Some(link) = &st.link {
                link.send(ClusterEvent::Left { seq: key.2 });
            }
            count_down(&mut st.queued, 1, "queued");
            room::drop_if_idle(&mut st.pools, pool_key);
        }
        removed
    }

    /// Adds or updates a Worker. Waiters are served if it brings free slots.
    pub fn upsert_worker(&self, id: WorkerId, info: WorkerSlots) {
        let mut st = self.state.lock();
        let State {
            workers,
            pools,
            queued,
            known_groups,
            link,
            ..
        } = &mut *st;
        let key = (info.group.clone(), info.contract);
        if let Some(old) = workers.get(&id) {
            if old.pool != key {
                let old_key = old.pool.clone();
                self.detach(workers, pools, queued, id, &old_key);
            }
        }
        let pool = pools
            .entry(key.0.clone())
            .or_default()
            .entry(key.1)
            .or_insert_with(|| Pool::new(key.0.clone(), key.1, link.clone()));
        // Counted as usable in this pool before the update? (Kept incremental: a feed
        // message per slot change must not cost a walk over the pool.)
        let counted = pool.members.contains(&id) && workers.get(&id).is_some_and(SlotState::usable);
        let w = workers
            .entry(id)
            .or_insert_with(|| SlotState::new(key.clone(), &info));
        w.update(&info);
        let usable = w.usable();
        pool.members.insert(id);
        if info.valid {
            // An invalid Worker's list never decides what the pool exposes: the
            // answer for a function only it has must not depend on who spoke last.
            pool.functions = info.functions.clone();
            count_down(queued, pool.settle_deferred(), "queued");
            if !known_groups.contains(&key.0) {
                known_groups.insert(key.0.clone());
                crate::metrics::group_became_known(&key.0);
            }
        }
        pool.refresh(workers, id);
        match (counted, usable) {
            (false, true) => pool.usable += 1,
            (true, false) => count_down(&mut pool.usable, 1, "usable"),
            _ => {}
        }
        if pool.usable == 0 {
            let failed = self.no_worker_left(pool, key.1, AcquireError::NoWorkerUp);
            count_down(queued, failed, "queued");
        } else {
            pool.worker_back();
            count_down(queued, pool.pump(workers), "queued");
        }
    }

    /// Takes a Worker out of selection until its next update says it is eligible
    /// (used when a dispatch could not connect or the Worker answered maintenance).
    pub fn suspend_worker(&self, id: WorkerId) {
        self.change_worker(id, |w| w.suspended = true);
    }

    /// Counts a failed attempt on `id` (not delivered, failed mid-task, no answer in
    /// time). After `policy.max_fails` in a row the Worker leaves the rotation until
    /// its back-off ends, whatever it reports meanwhile; returns that ejection.
    /// Must run inside a Tokio runtime (a timer ends the ejection).
    pub fn worker_failed(
        self: &Arc<Self>,
        id: WorkerId,
        reason: &str,
        policy: &OutlierPolicy,
    ) -> Option<Ejection> {
        let mut ejection = None;
        self.change_worker(id, |w| ejection = w.outlier.failed(reason, policy));
        let e = ejection?;
        let scheduler = Arc::downgrade(self);
        let (until, epoch) = (e.until, e.epoch);
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(s) = scheduler.upgrade() {
                s.change_worker(id, |w| {
                    w.outlier.readmit(epoch);
                });
            }
        });
        Some(e)
    }

    /// True when `id` is alive and busy: it answered its poll or slot feed within
    /// `within`, and its latest report shows a task running or queued. A task that
    /// outlasts its deadline there ran long; the Worker did not fail.
    pub fn alive_and_busy(&self, id: WorkerId, within: std::time::Duration) -> bool {
        self.state
            .lock()
            .workers
            .get(&id)
            .is_some_and(|w| w.busy && w.heard_at.is_some_and(|t| t.elapsed() <= within))
    }

    /// Records that `id` answered: its failure count and back-off start over.
    pub fn worker_succeeded(&self, id: WorkerId) {
        if let Some(w) = self.state.lock().workers.get_mut(&id) {
            w.outlier.succeeded();
        }
    }

    /// The current ejection of a Worker, if it is out of rotation.
    pub fn ejection(&self, id: WorkerId) -> Option<Ejection> {
        let st = self.state.lock();
        st.workers.get(&id)?.outlier.ejected.clone()
    }

    /// Applies `change` to one Worker and keeps its pool consistent: the free set,
    /// the usable count, and the waiters (failed when none is left, served when the
    /// Worker comes back).
    fn change_worker(&self, id: WorkerId, change: impl FnOnce(&mut pool::SlotState)) {
        let mut st = self.state.lock();
        let State {
            workers,
            pools,
            queued,
            ..
        } = &mut *st;
        let Some(w) = workers.get_mut(&id) else {
            return;
        };
        let was_usable = w.usable();
        change(w);
        let usable = w.usable();
        let (group, contract) = w.pool.clone();
        let Some(pool) = pools.get_mut(&group).and_then(|p| p.get_mut(&contract)) else {
            return;
        };
        pool.refresh(workers, id);
        match (was_usable, usable) {
            (true, false) => count_down(&mut pool.usable, 1, "usable"),
            (false, true) => pool.usable += 1,
            _ => return,
        }
        if pool.usable == 0 {
            let failed = self.no_worker_left(pool, contract, AcquireError::NoWorkerUp);
            count_down(queued, failed, "queued");
        } else {
            pool.worker_back();
            count_down(queued, pool.pump(workers), "queued");
        }
    }

    /// Forgets a Worker. Its in-flight tasks continue; their leases become no-ops.
    pub fn remove_worker(&self, id: WorkerId) {
        let mut st = self.state.lock();
        let State {
            workers,
            pools,
            queued,
            ..
        } = &mut *st;
        if let Some(key) = workers.get(&id).map(|w| w.pool.clone()) {
            self.detach(workers, pools, queued, id, &key);
            workers.remove(&id);
            // A list that shrank a lot keeps no room for the Workers it had.
            if workers.capacity() > 4 * workers.len().max(16) {
                workers.shrink_to_fit();
            }
        }
    }

    /// Refuses new tasks and fails every waiter with [`AcquireError::ShuttingDown`].
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        let mut failed = 0;
        for by_contract in st.pools.values_mut() {
            for pool in by_contract.values_mut() {
                failed += pool.fail_all(AcquireError::ShuttingDown);
            }
        }
        count_down(&mut st.queued, failed, "queued");
    }

    /// The queue right now.
    pub fn queue_snapshot(&self) -> QueueSnapshot {
        let st = self.state.lock();
        let mut counts: std::collections::BTreeMap<u32, usize> = Default::default();
        for by_contract in st.pools.values() {
            for pool in by_contract.values() {
                for (prio, _, _) in pool.waiters.keys() {
                    *counts.entry(*prio).or_default() += 1;
                }
            }
        }
        QueueSnapshot {
            depth: st.queued,
            by_priority: counts.into_iter().collect(),
        }
    }

    /// True when a valid Worker has had `group` since start, so that it may be a
    /// metric label value.
    pub fn knows_group(&self, group: &str) -> bool {
        self.state.lock().known_groups.contains(group)
    }

    /// Free slots over the usable Workers, or `None` when no Worker is usable.
    pub fn free_slots(&self) -> Option<u32> {
        let st = self.state.lock();
        let mut usable = st.workers.values().filter(|w| w.usable()).peekable();
        usable.peek()?;
        let free = usable.fold(0u32, |n, w| n.saturating_add(w.free()));
        // Tasks already waiting here take the free slots first.
        Some(free.saturating_sub(st.queued as u32))
    }

    /// Tasks waiting right now.
    pub fn queued(&self) -> usize {
        self.state.lock().queued
    }

    /// Slot usage of one Worker, if registered.
    pub fn usage(&self, id: WorkerId) -> Option<SlotUsage> {
        self.state.lock().workers.get(&id).map(|w| SlotUsage {
            in_flight: w.in_flight,
            external: w.external,
            limit: w.limit,
        })
    }
}

impl Scheduler {
    /// Takes `id` out of its pool; drops the pool when it empties (its waiters fail,
    /// or stay in the waiting room).
    fn detach(
        &self,
        workers: &mut HashMap<WorkerId, SlotState>,
        pools: &mut HashMap<Arc<str>, HashMap<u64, Pool>>,
        queued: &mut usize,
        id: WorkerId,
        key: &(Arc<str>, u64),
    ) {
        let Some(pool) = pools.get_mut(&key.0).and_then(|p| p.get_mut(&key.1)) else {
            return;
        };
        if pool.members.remove(&id) && workers.get(&id).is_some_and(SlotState::usable) {
            count_down(&mut pool.usable, 1, "usable");
        }
        pool.forget(workers, id);
        if pool.members.is_empty() {
            let failed = self.no_worker_left(pool, key.1, AcquireError::UnknownPool);
            count_down(queued, failed, "queued");
            room::drop_if_idle(pools, key);
        } else if pool.usable == 0 {
            let failed = self.no_worker_left(pool, key.1, AcquireError::NoWorkerUp);
            count_down(queued, failed, "queued");
        }
    }
}

#[cfg(test)]
mod tests;

//! One pool of interchangeable Workers (same group and contract): the Workers with
//! a free slot ordered by score, and the tasks waiting for one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::outlier::Outlier;
use super::{AcquireError, FunctionSet, Grant, WorkerId, WorkerSlots};
use crate::worker_url::WorkerUrl;

/// Slot state of one Worker.
pub(super) struct SlotState {
    pub pool: (Arc<str>, u64),
    pub url: Arc<WorkerUrl>,
    pub eligible: bool,
    pub suspended: bool,
    pub limit: u32,
    pub in_flight: u32,
    pub external: u32,
    pub penalty_milli: i64,
    /// The score under which this Worker sits in its pool's free set, if it does.
    pub free_key: Option<i64>,
    /// Failures in a row and ejection; unlike `suspended`, no report clears it.
    pub outlier: Outlier,
    /// When the Worker last answered (poll or feed).
    pub heard_at: Option<tokio::time::Instant>,
    /// Its latest report shows a task running or queued.
    pub busy: bool,
}

impl SlotState {
    pub(super) fn new(pool: (Arc<str>, u64), info: &WorkerSlots) -> Self {
        SlotState {
            pool,
            url: info.url.clone(),
            eligible: false,
            suspended: false,
            limit: 0,
            in_flight: 0,
            external: 0,
            penalty_milli: 0,
            free_key: None,
            outlier: Outlier::default(),
            heard_at: None,
            busy: false,
        }
    }

    pub(super) fn update(&mut self, info: &WorkerSlots) {
        self.pool = (info.group.clone(), info.contract);
        self.url = info.url.clone();
        self.eligible = info.eligible;
        // A fresh report from the Worker is the authority on whether it is reachable.
        self.suspended = false;
        self.limit = info.limit;
        self.penalty_milli = info.penalty_milli;
        self.heard_at = info.heard_at;
        self.busy = info.busy;
        if let Some(used) = info.reported_used {
            // What the Worker counts beyond our own in-flight tasks belongs to someone else.
            self.external = used.saturating_sub(self.in_flight);
        }
    }

    pub(super) fn usable(&self) -> bool {
        self.eligible && !self.suspended && self.outlier.ejected.is_none()
    }

    pub(super) fn free(&self) -> u32 {
        self.limit
            .saturating_sub(self.in_flight.saturating_add(self.external))
    }

    /// The original's preference, `10 × free − 5 × cpu − 5 × memory`, in thousandths.
    pub(super) fn score(&self) -> i64 {
        10_000 * i64::from(self.free()) - self.penalty_milli
    }
}

/// A task waiting for a slot.
pub(super) struct Waiter {
    pub tx: oneshot::Sender<Result<Grant, AcquireError>>,
    /// When it joined the queue (the waiting room counts from here, or from when its
    /// pool lost its last usable Worker, whichever is later).
    pub since: tokio::time::Instant,
    /// The function it asked for, while the pool has not yet said what it exposes (a
    /// task that joined the waiting room of a pool without Workers): checked when the
    /// first valid Worker arrives.
    pub deferred: Option<Box<str>>,
    /// Counts it in its client's waiting tasks while it waits.
    pub client: Option<super::Counted>,
    /// Its client's `max_running` (0: no limit): while the client holds that many
    /// slots, the waiter is passed over and keeps its place.
    pub running_limit: u32,
}

impl Waiter {
    /// True while its client holds its `max_running` slots.
    fn held_back(&self) -> bool {
        self.running_limit > 0
            && self
                .client
                .as_ref()
                .is_some_and(|c| c.running() >= self.running_limit as usize)
    }
}

/// Workers of one group and contract.
pub(super) struct Pool {
    pub group: Arc<str>,
    pub contract: u64,
    pub members: HashSet<WorkerId>,
    pub usable: usize,
    pub functions: Arc<FunctionSet>,
    /// Usable Workers with at least one free slot, best score first.
    pub free: BTreeSet<(Reverse<i64>, WorkerId)>,
    /// Waiting tasks by (priority, fair-share tag, arrival).
    pub waiters: BTreeMap<super::WaitKey, Waiter>,
    /// The virtual clocks that order clients within a priority.
    pub fair: super::fair::Fair,
    /// Since when the pool has had no usable Worker while tasks wait in its waiting
    /// room (`tasks.no_worker_wait_ms`); `None` while a Worker is usable.
    pub empty_since: Option<tokio::time::Instant>,
    /// A sweep of the waiting room is scheduled.
    pub sweep_armed: bool,
    /// The cluster link (`cluster.redis`): while it is gated no slot is taken here
    /// by local counting, and every slot taken is numbered as a lease.
    pub link: Option<Arc<super::shared::ClusterLink>>,
}

impl Pool {
    pub(super) fn new(
        group: Arc<str>,
        contract: u64,
        link: Option<Arc<super::shared::ClusterLink>>,
    ) -> Self {
        Pool {
            group,
            contract,
            members: HashSet::default(),
            usable: 0,
            functions: Arc::default(),
            free: BTreeSet::new(),
            waiters: BTreeMap::new(),
            fair: Default::default(),
            empty_since: None,
            sweep_armed: false,
            link,
        }
    }

    /// The best Worker with a free slot; none while the cluster link is gated (the
    /// cluster grants slots then).
    pub(super) fn best(&self) -> Option<WorkerId> {
        if self.link.as_ref().is_some_and(|l| l.gated()) {
            return None;
        }
        self.free.first().map(|(_, id)| *id)
    }

    /// Re-files `id` in the free set after its figures changed.
    pub(super) fn refresh(&mut self, workers: &mut HashMap<WorkerId, SlotState>, id: WorkerId) {
        let Some(w) = workers.get_mut(&id) else {
            return;
        };
        if let Some(old) = w.free_key.take() {
            self.free.remove(&(Reverse(old), id));
        }
        if w.usable() && w.free() > 0 {
            let score = w.score();
            self.free.insert((Reverse(score), id));
            w.free_key = Some(score);
        }
    }

    /// Drops `id` from the free set.
    pub(super) fn forget(&mut self, workers: &mut HashMap<WorkerId, SlotState>, id: WorkerId) {
        if let Some(w) = workers.get_mut(&id) {
            if let Some(old) = w.free_key.take() {
                self.free.remove(&(Reverse(old), id));
            }
        }
    }

    /// Takes a slot on `id`, counted in its client's running tasks by `client`;
    /// `tag` numbers it as a cluster lease.
    pub(super) fn take(
        &mut self,
        workers: &mut HashMap<WorkerId, SlotState>,
        id: WorkerId,
        client: Option<Arc<super::Counted>>,
        tag: Option<u64>,
    ) -> Grant {
        let w = workers
            .get_mut(&id)
            .expect("free set holds registered workers");
        w.in_flight += 1;
        let grant = Grant {
            worker: id,
            url: w.url.clone(),
            client,
            tag,
        };
        self.refresh(workers, id);
        grant
    }

    /// The first waiter that may take a slot now, or one that gave up (to be
    /// dropped): waiters whose client is at its `max_running` are passed over.
    fn next_waiter(&self) -> Option<super::WaitKey> {
        self.waiters
            .iter()
            .find(|(_, w)| w.tx.is_closed() || !w.held_back())
            .map(|(key, _)| *key)
    }

    /// Hands free slots to waiters, head first, passing over those whose client is at
    /// its `max_running`. Returns how many waiters left the queue.
    pub(super) fn pump(&mut self, workers: &mut HashMap<WorkerId, SlotState>) -> usize {
        let mut served = 0;
        while !self.waiters.is_empty() {
            let Some(id) = self.best() else { break };
            let Some(key) = self.next_waiter() else { break };
            let Some(((priority, tag, seq), waiter)) = self.waiters.remove_entry(&key) else {
                break;
            };
            served += 1;
            if waiter.tx.is_closed() {
                continue;
            }
            self.fair.dispatched(priority, tag);
            // From waiting to running in its client's figures.
            let running = waiter.client.as_ref().map(|c| Arc::new(c.running_twin()));
            let lease = self.link.is_some().then_some(seq);
            let grant = self.take(workers, id, running, lease);
            let url = grant.url.clone();
            if waiter.tx.send(Ok(grant)).is_ok() {
                self.started(lease, url);
            } else {
                // The waiter vanished between the check and the send: undo the take.
                if let Some(w) = workers.get_mut(&id) {
                    super::count_down(&mut w.in_flight, 1, "in_flight");
                }
                self.refresh(workers, id);
            }
        }
        served
    }

    /// Tells the cluster about a slot taken by local counting (fallback).
    pub(super) fn started(&self, lease: Option<u64>, url: Arc<WorkerUrl>) {
        if let (Some(link), Some(seq)) = (&self.link, lease) {
            link.send(super::shared::ClusterEvent::Started {
                seq,
                url,
                pool: (self.group.clone(), self.contract),
            });
        }
    }

    /// Fails every waiter with `why`. Returns how many left the queue.
    pub(super) fn fail_all(&mut self, why: AcquireError) -> usize {
        let n = self.waiters.len();
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter.tx.send(Err(why.clone()));
        }
        n
    }
}

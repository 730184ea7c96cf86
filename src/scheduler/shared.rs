//! The scheduler's side of the cluster (`cluster.redis`): while the link is gated,
//! no slot is taken from local counting; a waiting task gets its slot only when the
//! cluster grants a lease on a Worker to it ([`Scheduler::cluster_grant`]). While
//! Redis does not answer the link is open (fallback): local counting as without a
//! cluster. Everything the cluster must know leaves the lock as an event on an
//! unbounded channel, so the scheduler never waits on Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use foldhash::HashMap;

use super::pool::{Pool, SlotState};
use super::{count_down, Scheduler, State, WaitKey, WorkerId};
use crate::worker_url::WorkerUrl;

/// A pool's key: group and contract.
pub type PoolKey = (Arc<str>, u64);

/// A Worker a waiting task may run on, as this instance sees it now.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its base URL (the Worker's identity across instances).
    pub url: Arc<WorkerUrl>,
    /// Its own slot count, as last reported.
    pub limit: u32,
}

/// What the scheduler tells the cluster agent.
#[derive(Debug)]
pub enum ClusterEvent {
    /// A task joined the queue while gated: it needs a lease.
    Wait {
        /// Its arrival number here (also the lease's number once granted).
        seq: u64,
        /// Its pool.
        pool: PoolKey,
        /// Its key in the pool's queue.
        key: WaitKey,
        /// The pool's usable Workers, best first.
        candidates: Vec<Candidate>,
        /// Its named client and that client's weight (the fair share within a
        /// priority, across instances).
        client: Option<(Arc<str>, u32)>,
    },
    /// A waiting task left the queue (timeout, client gone).
    Left {
        /// Its arrival number.
        seq: u64,
    },
    /// A slot was taken by local counting (fallback): a lease to write once Redis
    /// answers again.
    Started {
        /// The lease's number.
        seq: u64,
        /// The Worker.
        url: Arc<WorkerUrl>,
        /// Its pool.
        pool: PoolKey,
    },
    /// A slot was given back (the task's answer ended).
    Released {
        /// The lease's number.
        seq: u64,
        /// The Worker's limit now, `None` when it left the list.
        limit: Option<u32>,
    },
}

/// The link between a scheduler and its cluster agent.
#[derive(Debug)]
pub struct ClusterLink {
    tx: mpsc::UnboundedSender<ClusterEvent>,
    gated: AtomicBool,
}

impl ClusterLink {
    /// A gated link and the receiver of its events (for the agent).
    pub fn new() -> (Arc<ClusterLink>, mpsc::UnboundedReceiver<ClusterEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = ClusterLink {
            tx,
            gated: AtomicBool::new(true),
        };
        (Arc::new(link), rx)
    }

    /// True while slots come only from cluster leases.
    pub fn gated(&self) -> bool {
        self.gated.load(Ordering::Acquire)
    }

    pub(super) fn send(&self, event: ClusterEvent) {
        // The agent lives as long as the process; a send after it ended is moot.
        let _ = self.tx.send(event);
    }
}

/// How [`Scheduler::cluster_grant`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The task got the slot.
    Granted,
    /// The task is no longer waiting: give the lease back.
    Gone,
    /// The task waits, but the Worker is not usable here: give the lease back and
    /// ask again.
    Unusable,
}

impl State {
    /// Usable Workers of `pool`, best first (at most 16).
    pub(super) fn candidates(&self, pool: &PoolKey) -> Vec<Candidate> {
        match self.pools.get(&pool.0).and_then(|p| p.get(&pool.1)) {
            Some(p) => State::candidates_of(&self.workers, p),
            None => Vec::new(),
        }
    }

    /// Usable Workers of `pool` among `workers`, best first (at most 16).
    pub(super) fn candidates_of(
        workers: &HashMap<WorkerId, SlotState>,
        pool: &Pool,
    ) -> Vec<Candidate> {
        let mut usable: Vec<&SlotState> = pool
            .members
            .iter()
            .filter_map(|id| workers.get(id))
            .filter(|w| w.usable() && w.limit > 0)
            .collect();
        usable.sort_by_key(|w| std::cmp::Reverse(w.score()));
        usable
            .into_iter()
            .take(16)
            .map(|w| Candidate {
                url: w.url.clone(),
                limit: w.limit,
            })
            .collect()
    }
}

/// Asks the cluster for a slot for the task that just joined `pool`'s queue under
/// `key`, while `link` is gated.
pub(super) fn ask_cluster(
    link: Option<&Arc<ClusterLink>>,
    workers: &HashMap<WorkerId, SlotState>,
    pool: &Pool,
    req: &super::SlotRequest<'_>,
    key: WaitKey,
) {
    let Some(link) = link.filter(|l| l.gated()) else {
        return;
    };
    link.send(ClusterEvent::Wait {
        seq: key.2,
        pool: (pool.group.clone(), pool.contract),
        key,
        candidates: State::candidates_of(workers, pool),
        client: req.client.as_ref().map(|c| (c.name.clone(), c.weight)),
    });
}

/// The number of a slot taken by local counting, as a lease, when a cluster is
/// configured (it is in fallback then); `None` without a cluster.
pub(super) fn lease_number(link: Option<&Arc<ClusterLink>>, next_seq: &mut u64) -> Option<u64> {
    link.map(|_| {
        *next_seq += 1;
        *next_seq
    })
}

impl Scheduler {
    /// Puts this scheduler under `link` (before any Worker is added).
    pub fn link_cluster(&self, link: Arc<ClusterLink>) {
        self.state.lock().link = Some(link);
    }

    /// Gates (`true`: slots only from cluster leases) or opens (fallback: local
    /// counting) the link; opening serves the waiters local counting can serve.
    pub fn set_cluster_gated(&self, gated: bool) {
        let mut st = self.state.lock();
        let Some(link) = st.link.clone() else {
            return;
        };
        link.gated.store(gated, Ordering::Release);
        if gated {
            return;
        }
        let State {
            workers,
            pools,
            queued,
            ..
        } = &mut *st;
        for pool in pools.values_mut().flat_map(|p| p.values_mut()) {
            count_down(queued, pool.pump(workers), "queued");
        }
    }

    /// Gives the slot the cluster leased on the Worker at `url` to the task waiting
    /// under `key` in `pool`.
    pub fn cluster_grant(&self, pool: &PoolKey, key: WaitKey, url: &str) -> GrantOutcome {
        let mut st = self.state.lock();
        let State {
            workers,
            pools,
            queued,
            ..
        } = &mut *st;
        let Some(p) = pools.get_mut(&pool.0).and_then(|p| p.get_mut(&pool.1)) else {
            return GrantOutcome::Gone;
        };
        if !p.waiters.contains_key(&key) {
            return GrantOutcome::Gone;
        }
        let worker = p.members.iter().copied().find(|id| {
            workers
                .get(id)
                .is_some_and(|w| w.usable() && w.url.raw == url)
        });
        let Some(worker) = worker else {
            return GrantOutcome::Unusable;
        };
        let waiter = p.waiters.remove(&key).expect("checked above");
        count_down(queued, 1, "queued");
        if waiter.tx.is_closed() {
            return GrantOutcome::Gone;
        }
        p.fair.dispatched(key.0, key.1);
        let running = waiter.client.as_ref().map(|c| Arc::new(c.running_twin()));
        let grant = p.take(workers, worker, running, Some(key.2));
        if waiter.tx.send(Ok(grant)).is_err() {
            if let Some(w) = workers.get_mut(&worker) {
                count_down(&mut w.in_flight, 1, "in_flight");
            }
            p.refresh(workers, worker);
            return GrantOutcome::Gone;
        }
        GrantOutcome::Granted
    }

    /// True while the task under `key` waits in `pool`.
    pub fn cluster_waits(&self, pool: &PoolKey, key: WaitKey) -> bool {
        let st = self.state.lock();
        st.pools
            .get(&pool.0)
            .and_then(|p| p.get(&pool.1))
            .is_some_and(|p| p.waiters.contains_key(&key))
    }

    /// The usable Workers of `pool` now, best first.
    pub fn cluster_candidates(&self, pool: &PoolKey) -> Vec<Candidate> {
        self.state.lock().candidates(pool)
    }

    /// Every pool with tasks waiting here.
    pub fn cluster_waiting_pools(&self) -> Vec<PoolKey> {
        let st = self.state.lock();
        st.pools
            .iter()
            .flat_map(|(g, by)| {
                by.iter()
                    .filter(|(_, p)| !p.waiters.is_empty())
                    .map(move |(c, _)| (g.clone(), *c))
            })
            .collect()
    }

    /// Every task waiting here: its pool and key.
    pub fn cluster_waiters(&self) -> Vec<(PoolKey, WaitKey)> {
        let st = self.state.lock();
        st.pools
            .iter()
            .flat_map(|(g, by)| {
                by.iter()
                    .flat_map(move |(c, p)| p.waiters.keys().map(move |k| ((g.clone(), *c), *k)))
            })
            .collect()
    }

    /// Every pool and its Workers' URLs (for the cluster's figures on `/health`).
    pub fn cluster_layout(&self) -> Vec<(PoolKey, Vec<String>)> {
        let st = self.state.lock();
        st.pools
            .iter()
            .flat_map(|(g, by)| {
                let workers = &st.workers;
                by.iter().map(move |(c, p)| {
                    let mut urls: Vec<String> = p
                        .members
                        .iter()
                        .filter_map(|id| workers.get(id))
                        .map(|w| w.url.raw.clone())
                        .collect();
                    urls.sort();
                    ((g.clone(), *c), urls)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Acquire, SlotRequest, WorkerSlots};
    use super::*;

    fn worker(limit: u32) -> WorkerSlots {
        WorkerSlots {
            url: Arc::new(WorkerUrl::parse("http://127.0.0.1:1").unwrap()),
            group: "g".into(),
            contract: 1,
            functions: Arc::new(["hello".to_string()].into_iter().collect()),
            eligible: true,
            valid: true,
            heard_at: None,
            busy: false,
            limit,
            reported_used: None,
            penalty_milli: 0,
        }
    }

    fn ask(s: &Arc<Scheduler>, priority: u32) -> super::super::Waiting {
        let req = SlotRequest {
            group: "g",
            contract: 1,
            function: "hello",
            priority,
            client: None,
        };
        match s.acquire(&req).unwrap() {
            Acquire::Queued(w) => w,
            Acquire::Ready(_) => panic!("a gated scheduler granted a slot on its own"),
        }
    }

    #[tokio::test]
    async fn gated_slots_come_only_from_the_cluster_and_fallback_counts_locally() {
        let s = Scheduler::new(10);
        let (link, mut events) = ClusterLink::new();
        s.link_cluster(link);
        s.upsert_worker(1, worker(2));
        // A free slot, yet the task waits and asks the cluster.
        let first = ask(&s, 5);
        let urgent = ask(&s, 1);
        let mut asked = Vec::new();
        while let Ok(ClusterEvent::Wait {
            seq,
            pool,
            key,
            candidates,
            ..
        }) = events.try_recv()
        {
            assert_eq!(candidates.len(), 1);
            assert_eq!(candidates[0].limit, 2);
            asked.push((seq, pool, key));
        }
        assert_eq!(asked.len(), 2);
        // The cluster grants the priority-5 task (it was first in the global
        // queue): that very task gets it, not the local head.
        let (seq5, pool, key5) = asked[0].clone();
        let url = "http://127.0.0.1:1";
        assert_eq!(s.cluster_grant(&pool, key5, url), GrantOutcome::Granted);
        let lease = first.until(tokio::time::Instant::now() + Duration::from_secs(1));
        let lease = lease.await.unwrap();
        assert_eq!(s.cluster_grant(&pool, key5, url), GrantOutcome::Gone);
        assert_eq!(
            s.cluster_grant(&pool, asked[1].2, "http://127.0.0.1:9"),
            GrantOutcome::Unusable
        );
        drop(lease);
        match events.try_recv() {
            Ok(ClusterEvent::Released { seq, limit }) => {
                assert_eq!((seq, limit), (seq5, Some(2)));
            }
            other => panic!("expected the lease back, got {other:?}"),
        }
        // Fallback: local counting serves the waiter at once, and says so.
        s.set_cluster_gated(false);
        let lease = urgent.until(tokio::time::Instant::now() + Duration::from_secs(1));
        let lease = lease.await.unwrap();
        assert!(matches!(
            events.try_recv(),
            Ok(ClusterEvent::Started { seq, .. }) if seq == asked[1].0
        ));
        drop(lease);
    }
}

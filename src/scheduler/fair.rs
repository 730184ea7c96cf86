//! Fair sharing of a pool between named clients, and their `max_running` /
//! `max_queued` limits.
//!
//! Within one priority, waiting tasks are ordered by a virtual finish tag (stride
//! scheduling, as in start-time fair queuing): a client's next task is tagged one
//! stride (`STRIDE / weight`) after the later of its own previous tag and the band's
//! clock (the tag of the task last dispatched at that priority). Each client's tasks
//! keep their order, clients take turns in proportion to their weights, and a client
//! with 10,000 tasks waiting holds back a newcomer by at most one task. With one
//! client the tags follow arrival: first come, first served, as before. Ordering is a
//! `BTreeMap` key, so dispatch costs O(log n) whatever the number of clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use foldhash::HashMap;

/// A task's key in its pool's queue: (priority, virtual tag, arrival).
pub(crate) type WaitKey = (u32, u64, u64);

/// The virtual time one task of weight 1 takes.
const STRIDE: u64 = 1 << 20;

/// What a task's client asks of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct ClientShare<'a> {
    /// The client's name.
    pub name: &'a Arc<str>,
    /// Its share when several clients wait at one priority (at least 1).
    pub weight: u32,
    /// Tasks it may hold slots for at once (0: no limit).
    pub max_running: u32,
    /// Tasks it may have waiting at once (0: no limit).
    pub max_queued: u32,
}

/// A client's tasks waiting and running right now (this instance).
#[derive(Debug, Default)]
pub(crate) struct ClientLoad {
    waiting: AtomicUsize,
    running: AtomicUsize,
}

/// Counts one task in a [`ClientLoad`] figure while it lives.
#[derive(Debug)]
pub(crate) struct Counted {
    load: Arc<ClientLoad>,
    running: bool,
}

impl ClientLoad {
    fn figure(&self, running: bool) -> &AtomicUsize {
        if running {
            &self.running
        } else {
            &self.waiting
        }
    }

    /// Tasks waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Tasks holding a slot.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

impl Counted {
    /// Counts a task of `load` as waiting, or as running.
    pub(crate) fn new(load: &Arc<ClientLoad>, running: bool) -> Counted {
        load.figure(running).fetch_add(1, Ordering::Relaxed);
        Counted {
            load: load.clone(),
            running,
        }
    }
}

impl Counted {
    /// The client's tasks holding a slot now.
    pub(crate) fn running(&self) -> usize {
        self.load.running()
    }

    /// A count of the same client's task as running.
    pub(crate) fn running_twin(&self) -> Counted {
        Counted::new(&self.load, true)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.load
            .figure(self.running)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The loads of the clients that have had tasks, by name.
#[derive(Debug, Default)]
pub(crate) struct Loads(HashMap<Arc<str>, Arc<ClientLoad>>);

impl Loads {
    /// Each client's (name, waiting, running).
    pub(crate) fn figures(&self) -> Vec<(Arc<str>, usize, usize)> {
        self.0
            .iter()
            .map(|(name, l)| (name.clone(), l.waiting(), l.running()))
            .collect()
    }

    /// `name`'s load (created at zero).
    pub(crate) fn of(&mut self, name: &Arc<str>) -> Arc<ClientLoad> {
        self.0.entry(name.clone()).or_default().clone()
    }
}

/// One pool's virtual clocks.
#[derive(Debug, Default)]
pub(crate) struct Fair {
    /// Per priority: the tag of the task dispatched last.
    clock: HashMap<u32, u64>,
    /// Per client and priority: the tag of its latest task.
    last: HashMap<(Arc<str>, u32), u64>,
}

impl Fair {
    /// The tag of a new task of `client` (or of an anonymous task) at `priority`.
    pub(crate) fn tag(&mut self, client: Option<&ClientShare<'_>>, priority: u32) -> u64 {
        let clock = self.clock.get(&priority).copied().unwrap_or(0);
        let Some(c) = client else {
            return clock + STRIDE;
        };
        let stride = STRIDE / u64::from(c.weight.max(1));
        let last = self.last.entry((c.name.clone(), priority)).or_insert(clock);
        *last = (*last).max(clock) + stride.max(1);
        *last
    }

    /// Notes that the task tagged `tag` at `priority` was dispatched; forgets the
    /// clients that are behind the clock (they start from it again anyway).
    pub(crate) fn dispatched(&mut self, priority: u32, tag: u64) {
        let clock = self.clock.entry(priority).or_insert(0);
        *clock = (*clock).max(tag);
        if self.last.len() > 1024 {
            let clocks = &self.clock;
            self.last
                .retain(|(_, p), t| *t > clocks.get(p).copied().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(name: &Arc<str>, weight: u32) -> ClientShare<'_> {
        ClientShare {
            name,
            weight,
            max_running: 0,
            max_queued: 0,
        }
    }

    /// Serves `n` tasks from queues built with `tags`, smallest first, and returns
    /// whose they were.
    fn order(
        fair: &mut Fair,
        queue: &mut Vec<(u64, u64, &'static str)>,
        n: usize,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        for _ in 0..n {
            queue.sort();
            let (tag, _, who) = queue.remove(0);
            fair.dispatched(1, tag);
            out.push(who);
        }
        out
    }

    #[test]
    fn a_flood_holds_a_newcomer_back_by_one_task_and_weights_share() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut fair = Fair::default();
        let mut queue = Vec::new();
        let mut seq = 0;
        for _ in 0..1000 {
            seq += 1;
            queue.push((fair.tag(Some(&share(&a, 1)), 1), seq, "a"));
        }
        assert_eq!(order(&mut fair, &mut queue, 3), ["a", "a", "a"]);
        seq += 1;
        queue.push((fair.tag(Some(&share(&b, 1)), 1), seq, "b"));
        assert_eq!(order(&mut fair, &mut queue, 2), ["a", "b"]);

        // Weight 3 against 1: three of c's for each of d's.
        let (c, d): (Arc<str>, Arc<str>) = ("c".into(), "d".into());
        let mut fair = Fair::default();
        let mut queue = Vec::new();
        for i in 0..40 {
            queue.push((fair.tag(Some(&share(&c, 3)), 1), 2 * i, "c"));
            queue.push((fair.tag(Some(&share(&d, 1)), 1), 2 * i + 1, "d"));
        }
        let served = order(&mut fair, &mut queue, 40);
        let of_c = served.iter().filter(|w| **w == "c").count();
        assert_eq!(of_c, 30, "{served:?}");
    }

    #[test]
    fn one_client_or_none_is_first_come_first_served() {
        let a: Arc<str> = "a".into();
        let mut fair = Fair::default();
        let tags: Vec<u64> = (0..5).map(|_| fair.tag(Some(&share(&a, 1)), 1)).collect();
        assert!(tags.windows(2).all(|w| w[0] < w[1]), "{tags:?}");
        let anonymous = fair.tag(None, 1);
        assert_eq!(
            anonymous, STRIDE,
            "an anonymous task ties at the clock, then arrival"
        );
    }
}

//! Per-group figures for autoscaling (`andera_lb_queue_depth_by_group` and
//! `_by_priority_class`,
//! `andera_lb_group_tasks_running`, `andera_lb_group_slots_free`), read on each scrape.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Scheduler, State};
use crate::metrics::{priority_class_index, GroupLoad, OTHER};

impl Scheduler {
    /// Each named client's (name, waiting, running) tasks, for every client that has
    /// sent a task since start.
    pub fn client_load(&self) -> Vec<(Arc<str>, usize, usize)> {
        self.state.lock().loads.figures()
    }

    /// Each group's queue, running tasks and free slots: every group a valid Worker
    /// has had since start (at 0 when idle), and `other`, where the waiting room of
    /// groups no Worker has had (and Workers of such groups) count, so that labels
    /// stay bounded.
    pub fn group_load(&self) -> Vec<GroupLoad> {
        let st = self.state.lock();
        let other: Arc<str> = Arc::from(OTHER);
        let mut load: BTreeMap<Arc<str>, GroupLoad> = st
            .known_groups
            .iter()
            .chain(std::iter::once(&other))
            .map(|g| (g.clone(), GroupLoad::idle(g.clone())))
            .collect();
        let label = |st: &State, group: &Arc<str>| match st.known_groups.get(group) {
            Some(g) => g.clone(),
            None => other.clone(),
        };
        for (group, by_contract) in &st.pools {
            let Some(l) = load.get_mut(&label(&st, group)) else {
                continue;
            };
            for pool in by_contract.values() {
                l.queued += pool.waiters.len();
                for (priority, _, _) in pool.waiters.keys() {
                    l.queued_by_class[priority_class_index(*priority)] += 1;
                }
            }
        }
        for w in st.workers.values() {
            if let Some(l) = load.get_mut(&label(&st, &w.pool.0)) {
                l.running = l.running.saturating_add(w.in_flight);
                if w.usable() {
                    l.free = l.free.saturating_add(w.free());
                }
            }
        }
        load.into_values().collect()
    }
}

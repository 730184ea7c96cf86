//! Contract conflicts (protocol §3): Workers of one group and contract must expose
//! identical functions. The first Worker of a pool in list order is its reference;
//! a Worker whose function list differs is invalid and never chosen.
//!
//! Pools are kept by list position so that a Worker's answer costs O(log n) unless
//! it changes its pool's reference: registering 10,000 Workers stays near-linear.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::record::WorkerRecord;
use crate::scheduler::WorkerId;

/// A pool key: group and contract.
pub(crate) type PoolKey = (Arc<str>, u64);

/// Members of each pool by list position.
#[derive(Default)]
pub(crate) struct Pools {
    by_key: HashMap<PoolKey, BTreeMap<usize, WorkerId>>,
}

/// The pool a record belongs to, once it has answered `/health`.
pub(crate) fn pool_of(w: &WorkerRecord) -> Option<PoolKey> {
    w.health.as_ref().map(|h| (h.group.clone(), h.contract))
}

impl Pools {
    /// Pools of every record that has answered.
    pub(crate) fn rebuild(workers: &HashMap<WorkerId, WorkerRecord>) -> Pools {
        let mut pools = Pools::default();
        for w in workers.values() {
            if let Some(key) = pool_of(w) {
                pools.insert(key, w.index, w.id);
            }
        }
        pools
    }

    /// Adds a member.
    pub(crate) fn insert(&mut self, key: PoolKey, index: usize, id: WorkerId) {
        self.by_key.entry(key).or_default().insert(index, id);
    }

    /// Removes a member.
    pub(crate) fn remove(&mut self, key: &PoolKey, index: usize) {
        if let Some(members) = self.by_key.get_mut(key) {
            members.remove(&index);
            if members.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// The pool's reference Worker.
    pub(crate) fn reference(&self, key: &PoolKey) -> Option<WorkerId> {
        self.by_key
            .get(key)
            .and_then(|m| m.values().next().copied())
    }

    /// Every member of a pool.
    pub(crate) fn members(&self, key: &PoolKey) -> Vec<WorkerId> {
        self.by_key
            .get(key)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default()
    }

    /// Every pool.
    pub(crate) fn keys(&self) -> Vec<PoolKey> {
        self.by_key.keys().cloned().collect()
    }
}

/// Checks `ids` of pool `key` against its reference. Returns those whose validity changed.
pub(crate) fn validate(
    workers: &mut HashMap<WorkerId, WorkerRecord>,
    pools: &Pools,
    key: &PoolKey,
    ids: &[WorkerId],
) -> Vec<WorkerId> {
    let Some(reference) = pools.reference(key) else {
        return Vec::new();
    };
    let Some((ref_fp, ref_url)) = workers.get(&reference).and_then(|r| {
        r.health
            .as_ref()
            .map(|h| (h.fingerprint, r.url.raw.clone()))
    }) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for id in ids {
        let Some(w) = workers.get_mut(id) else {
            continue;
        };
        let Some(h) = &w.health else { continue };
        let reason = (h.fingerprint != ref_fp).then(|| {
            format!(
                "functions differ from {ref_url} (the reference of group {:?} contract {})",
                &*h.group, h.contract
            )
        });
        if reason.is_some() != w.invalid_reason.is_some() {
            match &reason {
                Some(r) => log::warn!("worker {} excluded: {r}", w.url),
                None => log::info!("worker {} is valid again", w.url),
            }
            changed.push(*id);
        }
        w.invalid_reason = reason;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::HealthReport;
    use crate::worker_url::WorkerUrl;

    fn record(id: WorkerId, index: usize, function: &str) -> WorkerRecord {
        let mut w = WorkerRecord::new(
            id,
            Arc::new(WorkerUrl::parse(&format!("http://10.0.0.{id}:3000")).unwrap()),
            index,
        );
        let body = format!(
            r#"{{"status":"ready","group":"g","contract":1,"functions":[{{"name":"{function}"}}]}}"#
        );
        w.apply_health(HealthReport::parse(body.as_bytes()).unwrap());
        w
    }

    #[test]
    fn the_first_in_list_order_is_the_reference_whatever_answers_first() {
        let key: PoolKey = (Arc::from("g"), 1);
        let mut workers = HashMap::new();
        let mut pools = Pools::default();
        // Worker 2 (list position 1) answers first: it is the reference for now.
        workers.insert(2, record(2, 1, "hello"));
        pools.insert(key.clone(), 1, 2);
        assert!(validate(&mut workers, &pools, &key, &[2]).is_empty());
        // Worker 1 (position 0) answers with other functions and becomes the reference.
        workers.insert(1, record(1, 0, "other"));
        pools.insert(key.clone(), 0, 1);
        let changed = validate(&mut workers, &pools, &key, &pools.members(&key));
        assert_eq!(changed, [2]);
        assert!(workers[&2]
            .invalid_reason
            .as_deref()
            .unwrap()
            .contains("10.0.0.1"));
        assert!(workers[&1].invalid_reason.is_none());
        pools.remove(&key, 0);
        assert_eq!(pools.reference(&key), Some(2));
    }
}

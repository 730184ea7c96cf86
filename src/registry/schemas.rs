//! The `params` schemas the edge input check may use (README "Task control"): for
//! each pool (group and contract), the compiled schema of each function, kept only
//! while every valid Worker of the pool publishes the same function list (names
//! and params). Recomputed when a Worker's `/health` or the Worker list changes;
//! read once per task.

use std::collections::HashMap;
use std::sync::Arc;

use super::conflicts::{PoolKey, Pools};
use super::record::WorkerRecord;
use crate::scheduler::WorkerId;
use crate::task::schema::Schema;

/// A Worker's compiled schemas, by function name: only the functions whose
/// `params` are well formed (see [`Schema::compile`]).
pub type FunctionSchemas = HashMap<String, Arc<Schema>>;

/// The schemas of every pool that has them, by group then contract (so that a
/// task's lookup borrows its group name).
#[derive(Default)]
pub struct PoolSchemas {
    by_pool: HashMap<Arc<str>, HashMap<u64, Arc<FunctionSchemas>>>,
}

impl PoolSchemas {
    /// Recomputes pool `key` from its members.
    pub fn refresh(
        &mut self,
        workers: &HashMap<WorkerId, WorkerRecord>,
        pools: &Pools,
        key: &PoolKey,
    ) {
        let (group, contract) = key;
        match agreed(workers, &pools.members(key)) {
            Some(schemas) => {
                let by_contract = self.by_pool.entry(group.clone()).or_default();
                by_contract.insert(*contract, schemas);
            }
            None => {
                if let Some(by_contract) = self.by_pool.get_mut(group) {
                    by_contract.remove(contract);
                    if by_contract.is_empty() {
                        self.by_pool.remove(group);
                    }
                }
            }
        }
    }

    /// Recomputes every pool (after a list change).
    pub fn rebuild(&mut self, workers: &HashMap<WorkerId, WorkerRecord>, pools: &Pools) {
        self.by_pool.clear();
        for key in pools.keys() {
            self.refresh(workers, pools, &key);
        }
    }

    /// The schema of `function` in pool `key`, if every valid Worker publishes it
    /// the same and it is well formed.
    pub fn get(&self, group: &str, contract: u64, function: &str) -> Option<Arc<Schema>> {
        self.by_pool
            .get(group)?
            .get(&contract)?
            .get(function)
            .cloned()
    }
}

/// The schemas of the valid members, when there is one and they all publish the
/// same function list (a pool's valid Workers agree by §3's rule; this holds the
/// edge check to it even if that rule changes).
fn agreed(
    workers: &HashMap<WorkerId, WorkerRecord>,
    members: &[WorkerId],
) -> Option<Arc<FunctionSchemas>> {
    let mut valid = members
        .iter()
        .filter_map(|id| workers.get(id))
        .filter(|w| w.invalid_reason.is_none())
        .filter_map(|w| w.health.as_ref());
    let first = valid.next()?;
    valid
        .all(|h| h.fingerprint == first.fingerprint)
        .then(|| first.schemas.clone())
}

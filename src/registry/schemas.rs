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
pub(crate) type FunctionSchemas = HashMap<String, Arc<Schema>>;

/// The schemas of every pool that has them, by group then contract (so that a
/// task's lookup borrows its group name).
#[derive(Default)]
pub(crate) struct PoolSchemas {
    by_pool: HashMap<Arc<str>, HashMap<u64, Arc<FunctionSchemas>>>,
}

impl PoolSchemas {
    /// Recomputes pool `key` from its members.
    pub(crate) fn refresh(
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
    pub(crate) fn rebuild(&mut self, workers: &HashMap<WorkerId, WorkerRecord>, pools: &Pools) {
        self.by_pool.clear();
        for key in pools.keys() {
            self.refresh(workers, pools, &key);
        }
    }

    /// The schema of `function` in pool `key`, if every valid Worker publishes it
    /// the same and it is well formed.
    pub(crate) fn get(&self, group: &str, contract: u64, function: &str) -> Option<Arc<Schema>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::HealthReport;
    use crate::worker_url::WorkerUrl;

    fn record(id: WorkerId, functions: &str) -> WorkerRecord {
        let url = WorkerUrl::parse(&format!("http://10.0.0.{id}:3000")).unwrap();
        let mut w = WorkerRecord::new(id, Arc::new(url), id as usize);
        let body =
            format!(r#"{{"status":"ready","group":"g","contract":1,"functions":{functions}}}"#);
        w.apply_health(HealthReport::parse(body.as_bytes()).unwrap());
        w
    }

    #[test]
    fn a_pool_has_a_schema_only_while_its_valid_workers_agree() {
        let strict = r#"[{"name":"f","params":{"s":{"type":"string","max":2}}}]"#;
        let loose = r#"[{"name":"f","params":{"s":{"type":"string","max":5}}}]"#;
        let key: PoolKey = (Arc::from("g"), 1);
        let mut workers = HashMap::new();
        let mut pools = Pools::default();
        for (id, functions) in [(1, strict), (2, strict)] {
            workers.insert(id, record(id, functions));
            pools.insert(key.clone(), id as usize, id);
        }
        let mut schemas = PoolSchemas::default();
        schemas.refresh(&workers, &pools, &key);
        assert!(schemas.get("g", 1, "f").is_some());
        assert!(schemas.get("g", 2, "f").is_none(), "another contract");
        assert!(schemas.get("g", 1, "other").is_none());
        // Two valid Workers that disagree (were §3's rule ever relaxed): forward.
        workers.insert(2, record(2, loose));
        schemas.refresh(&workers, &pools, &key);
        assert!(schemas.get("g", 1, "f").is_none());
        // The disagreeing one excluded: the valid one's schema again.
        workers.get_mut(&2).unwrap().invalid_reason = Some("functions differ".into());
        schemas.refresh(&workers, &pools, &key);
        assert!(schemas.get("g", 1, "f").is_some());
        // No valid Worker left: nothing.
        workers.get_mut(&1).unwrap().invalid_reason = Some("gone".into());
        schemas.rebuild(&workers, &pools);
        assert!(schemas.get("g", 1, "f").is_none());
    }

    #[test]
    fn only_well_formed_schemas_of_functions_listed_once_are_kept() {
        let w = record(
            1,
            r#"[{"name":"ok","params":{"a":{"type":"string"}}},
                {"name":"bad","params":{"a":{"type":"integer"}}},
                {"name":"none"},
                {"name":"twice","params":{}},{"name":"twice","params":{"a":{"type":"string"}}}]"#,
        );
        let names: Vec<&String> = {
            let mut n: Vec<&String> = w.health.as_ref().unwrap().schemas.keys().collect();
            n.sort();
            n
        };
        assert_eq!(names, ["ok"]);
    }
}

//! The task board: a bounded in-process ring of task records (never inputs or
//! results) and a per-second series of throughput, latency and queue depth.

mod key;
mod record;
mod slots;
mod timeline;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use crate::task::TaskSpec;
use key::{task_key, TaskId, TaskKey};
pub(crate) use record::{TaskRecord, TaskState};
use slots::Shelf;
pub(crate) use slots::TaskHandle;

/// Task numbers by [`TaskKey`]: inserted and removed once per task.
type ById = foldhash::HashMap<TaskKey, u64>;

/// Longest error or timeline detail kept, in bytes (a Worker's error string may be
/// megabytes); longer ones are cut with a `…(+N bytes)` marker.
pub(crate) const MAX_FIELD_BYTES: usize = 1024;

/// Default byte budget of the board (`admin.task_records_bytes`): 64 MiB.
#[cfg(test)]
pub(crate) const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What a record costs besides its strings: its slot, and its entry in the id map.
const RECORD_OVERHEAD: usize = slots::SLOT_BYTES + 40;
/// What a timeline event costs besides its detail.
const EVENT_OVERHEAD: usize = 48;

/// One point of the dashboard's series.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    /// Unix seconds.
    pub t: u64,
    /// Tasks finished per second.
    pub throughput: f64,
    /// Latency percentiles of those tasks, seconds.
    pub p50: f64,
    /// 95th percentile, seconds.
    pub p95: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// Queue depth at the sample.
    #[serde(rename = "queueDepth")]
    pub queue_depth: usize,
    /// Tasks that ended in an error.
    pub errors: u64,
}

/// Most samples kept: five minutes at one per second.
pub(crate) const MAX_SAMPLES: usize = 300;

/// Which task numbers the board keeps: `head..next`, the oldest first.
struct Ring {
    head: u64,
    next: u64,
    by_id: ById,
}

impl Ring {
    fn len(&self) -> usize {
        (self.next - self.head) as usize
    }
}

/// Bounded store of recent task records. Default capacity 10000 records and
/// [`DEFAULT_MAX_BYTES`]; the oldest records go first when either is reached.
pub(crate) struct TaskBoard {
    ring: Mutex<Ring>,
    shelf: Arc<Shelf>,
    max_bytes: usize,
    window: Mutex<Vec<(f64, bool)>>,
    series: Mutex<VecDeque<Sample>>,
}

impl TaskBoard {
    /// A board keeping the last `capacity` tasks, within [`DEFAULT_MAX_BYTES`].
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> Self {
        TaskBoard::with_byte_budget(capacity, DEFAULT_MAX_BYTES)
    }

    /// A board keeping the last `capacity` tasks, within `max_bytes` of records.
    /// Its slots are allocated as the ring first fills; no more of them are made than
    /// `max_bytes` holds records, so the slots too stay within the budget.
    pub(crate) fn with_byte_budget(capacity: usize, max_bytes: usize) -> Self {
        let slots = capacity.min(max_bytes / RECORD_OVERHEAD);
        TaskBoard {
            max_bytes: max_bytes.max(1),
            ring: Mutex::new(Ring {
                head: 1,
                next: 1,
                by_id: ById::default(),
            }),
            shelf: Arc::new(Shelf::new(slots)),
            window: Mutex::new(Vec::new()),
            series: Mutex::new(VecDeque::with_capacity(MAX_SAMPLES)),
        }
    }

    /// Records a new task, evicting the oldest records when full.
    pub(crate) fn open(&self, id: &str, spec: &TaskSpec) -> TaskHandle {
        let now = SystemTime::now();
        let (id, key) = TaskId::with_key(id);
        let record = TaskRecord::opened(id.clone(), key, spec, now);
        let mut ring = self.ring.lock();
        while ring.len() >= self.shelf.capacity()
            || (ring.len() > 0 && self.shelf.bytes() + record.weight > self.max_bytes)
        {
            self.evict_oldest(&mut ring);
        }
        let seq = ring.next;
        ring.next += 1;
        self.shelf.put(seq, record);
        ring.by_id.insert(key, seq);
        drop(ring);
        TaskHandle::new(self.shelf.clone(), seq, id, now)
    }

    fn evict_oldest(&self, ring: &mut Ring) {
        let seq = ring.head;
        ring.head += 1;
        let Some(record) = self.shelf.take(seq) else {
            return;
        };
        // A later task with the same id owns the key now.
        if let Entry::Occupied(e) = ring.by_id.entry(record.key) {
            if *e.get() == seq {
                e.remove();
            }
        }
    }

    /// Notes a finished task for the per-second series.
    pub(crate) fn observe(&self, seconds: f64, error: bool) {
        let mut w = self.window.lock();
        if w.len() < 1_000_000 {
            w.push((seconds, error));
        }
    }

    /// Closes the current second: computes its sample and keeps the last [`MAX_SAMPLES`].
    pub(crate) fn sample(&self, queue_depth: usize, elapsed: Duration) -> Sample {
        let mut window = std::mem::take(&mut *self.window.lock());
        window.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pct = |p: f64| -> f64 {
            if window.is_empty() {
                return 0.0;
            }
            let i = ((window.len() as f64 * p).ceil() as usize).clamp(1, window.len()) - 1;
            window[i].0
        };
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sample = Sample {
            t,
            throughput: window.len() as f64 / elapsed.as_secs_f64().max(0.001),
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            queue_depth,
            errors: window.iter().filter(|w| w.1).count() as u64,
        };
        let mut series = self.series.lock();
        if series.len() == MAX_SAMPLES {
            series.pop_front();
        }
        series.push_back(sample);
        sample
    }

    /// The series, oldest first.
    pub(crate) fn series(&self) -> Vec<Sample> {
        self.series.lock().iter().copied().collect()
    }

    /// A record by id.
    pub(crate) fn get(&self, id: &str) -> Option<Value> {
        self.read(id, TaskRecord::to_json)
    }

    /// `f` applied to the record of task `id`, if the board still holds it.
    pub(crate) fn read<T>(&self, id: &str, f: impl FnOnce(&TaskRecord) -> T) -> Option<T> {
        let seq = self.ring.lock().by_id.get(&task_key(id)).copied()?;
        // A hashed key is checked against the id it stands for.
        self.shelf
            .read(seq, |r| (r.id.to_string() == id).then(|| f(r)))
            .flatten()
    }

    /// The task numbers kept, oldest first.
    fn kept(&self) -> std::ops::Range<u64> {
        let ring = self.ring.lock();
        ring.head..ring.next
    }

    /// Records newest first matching `filter`, at most `limit`.
    pub(crate) fn list(&self, limit: usize, filter: impl Fn(&TaskRecord) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        for seq in self.kept().rev() {
            if out.len() >= limit {
                break;
            }
            if let Some(Some(json)) = self.shelf.read(seq, |r| filter(r).then(|| r.to_json())) {
                out.push(json);
            }
        }
        out
    }

    /// Counts by state (`retried` = more than one attempt), of one group or all, and
    /// every group seen.
    pub(crate) fn counts(&self, group: Option<&str>) -> (Value, Vec<String>) {
        let mut c: HashMap<&'static str, u64> = HashMap::new();
        let mut groups = std::collections::BTreeSet::new();
        for seq in self.kept() {
            self.shelf.read(seq, |r| {
                if groups.len() < 200 && !groups.contains(r.group()) {
                    groups.insert(r.group().to_string());
                }
                if group.is_some_and(|g| g != r.group()) {
                    return;
                }
                *c.entry(r.state_name()).or_default() += 1;
                if r.attempts() > 1 {
                    *c.entry("retried").or_default() += 1;
                }
            });
        }
        let get = |k| c.get(k).copied().unwrap_or(0);
        (
            json!({
                "queued": get("queued"), "running": get("running"), "completed": get("completed"),
                "failed": get("failed"), "timed_out": get("timed_out"), "retried": get("retried"),
                "cancelled": get("cancelled"),
            }),
            groups.into_iter().collect(),
        )
    }

    /// Records kept right now.
    pub(crate) fn len(&self) -> usize {
        self.ring.lock().len()
    }

    /// Bytes the records hold (approximately).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.shelf.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Mode;

    fn spec(group: &str) -> TaskSpec {
        TaskSpec {
            group: group.into(),
            function: "f".into(),
            contract: 1,
            priority: 1,
            mode: Mode::Sync,
            client: None,
        }
    }

    #[test]
    fn the_ring_is_bounded_and_evicts_oldest() {
        let b = TaskBoard::new(3);
        for i in 0..5 {
            b.open(&format!("t{i}"), &spec("g"));
        }
        assert_eq!(b.len(), 3);
        assert!(b.get("t1").is_none());
        assert!(b.get("t4").is_some());
        let ids: Vec<_> = b
            .list(10, |_| true)
            .iter()
            .map(|v| v["id"].clone())
            .collect();
        assert_eq!(ids, [json!("t4"), json!("t3"), json!("t2")]);
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_and_long_errors_are_cut() {
        let b = TaskBoard::with_byte_budget(1000, 20_000);
        for i in 0..100 {
            let t = b.open(&format!("t{i}"), &spec("g"));
            t.dispatched("http://w", 1);
            t.finished(
                TaskState::Failed,
                500,
                "worker_error",
                Some("e".repeat(1 << 20)),
            );
        }
        // The budget is enforced as tasks are opened; the newest record may then grow
        // past it by its own error and detail until the next task is opened.
        let newest_growth = RECORD_OVERHEAD + 3 * MAX_FIELD_BYTES;
        assert!(b.bytes() <= 20_000 + newest_growth, "{}", b.bytes());
        assert!(b.len() < 100 && b.len() > 1, "{}", b.len());
        let r = b.get("t99").unwrap();
        let error = r["error"].as_str().unwrap();
        assert!(error.ends_with(&format!("…(+{} bytes)", (1 << 20) - MAX_FIELD_BYTES)));
        let last = r["timeline"].as_array().unwrap().last().unwrap()["detail"].clone();
        assert!(last.as_str().unwrap().len() < MAX_FIELD_BYTES + 32);
        // The byte total follows the records kept.
        assert_eq!(b.bytes(), kept_sizes(&b));
    }

    fn kept_sizes(b: &TaskBoard) -> usize {
        b.kept()
            .filter_map(|seq| b.shelf.read(seq, TaskRecord::size))
            .sum()
    }

    #[test]
    fn a_live_task_whose_record_was_evicted_changes_nothing_on_the_board() {
        let b = TaskBoard::new(2);
        let live = b.open("live", &spec("g"));
        b.open("second", &spec("g"));
        // "third" takes the slot "live" had, while "live" still runs.
        let third = b.open("third", &spec("h"));
        assert_eq!((third.seq() - live.seq()) as usize, b.shelf.capacity());
        assert!(b.get("live").is_none());
        live.dispatched("http://w", 1);
        live.retried(&"x".repeat(5000));
        live.finished(
            TaskState::Failed,
            502,
            "worker_error",
            Some("e".repeat(5000)),
        );
        let r = b.get("third").unwrap();
        assert_eq!(
            (r["state"].clone(), r["group"].clone()),
            (json!("queued"), json!("h"))
        );
        assert_eq!(r["timeline"].as_array().unwrap().len(), 1);
        assert_eq!(b.bytes(), kept_sizes(&b));
        // The task itself still knows who it is.
        assert_eq!(live.id(), "live");
    }

    #[test]
    fn an_evicted_record_does_not_take_a_later_task_with_the_same_id_off_the_board() {
        let b = TaskBoard::new(2);
        b.open("same", &spec("old"));
        b.open("same", &spec("new"));
        b.open("other", &spec("g"));
        // The first "same" is evicted; the second is still kept and found.
        assert_eq!(b.get("same").unwrap()["group"], json!("new"));
    }

    #[test]
    fn a_task_holds_its_queued_bytes_after_its_record_is_evicted() {
        let budget = crate::budget::ByteBudget::new(1000);
        let b = TaskBoard::new(1);
        let queued = b.open("queued", &spec("g"));
        queued.hold_while_queued(budget.try_reserve(600).unwrap());
        b.open("next", &spec("g"));
        assert!(b.get("queued").is_none());
        assert!(
            budget.try_reserve(600).is_none(),
            "released with the record"
        );
        queued.dispatched("http://w", 1);
        assert!(budget.try_reserve(600).is_some());
    }

    #[test]
    fn lifecycle_and_counts() {
        let b = TaskBoard::new(10);
        let t = b.open("a", &spec("g"));
        t.queued(0);
        t.dispatched("http://w", 1);
        t.retried("refused");
        t.dispatched("http://v", 2);
        t.finished(TaskState::Completed, 200, "ok", None);
        let r = b.get("a").unwrap();
        assert_eq!(r["state"], json!("completed"));
        assert_eq!(r["attempts"], json!(2));
        assert_eq!(r["timeline"].as_array().unwrap().len(), 6);
        assert!(r.get("input").is_none());
        let (c, groups) = b.counts(None);
        assert_eq!(b.counts(Some("other")).0["completed"], json!(0));
        assert_eq!(
            (c["completed"].clone(), c["retried"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(groups, ["g"]);
    }

    #[test]
    fn samples_compute_percentiles_and_stay_bounded() {
        let b = TaskBoard::new(10);
        for i in 1..=100 {
            b.observe(i as f64 / 1000.0, i % 10 == 0);
        }
        let s = b.sample(7, Duration::from_secs(1));
        assert_eq!(
            (s.throughput, s.p50, s.p99, s.errors, s.queue_depth),
            (100.0, 0.05, 0.099, 10, 7)
        );
        for _ in 0..MAX_SAMPLES + 5 {
            b.sample(0, Duration::from_secs(1));
        }
        assert_eq!(b.series().len(), MAX_SAMPLES);
    }
}

//! The task board: a bounded in-process ring of task records (never inputs or
//! results) and a per-second series of throughput, latency and queue depth.

mod key;
mod timeline;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use crate::budget::Reserved;
use crate::task::TaskSpec;
use crate::text::truncated;
use key::{task_key, TaskId, TaskKey};
use timeline::{Detail, Event};

/// Records by [`TaskKey`]: inserted and removed once per task.
type ById = foldhash::HashMap<TaskKey, TaskHandle>;

/// Longest error or timeline detail kept, in bytes (a Worker's error string may be
/// megabytes); longer ones are cut with a `…(+N bytes)` marker.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Default byte budget of the board (`admin.task_records_bytes`): 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What a record costs besides its strings (fields, timestamps, ring and map entries).
const RECORD_OVERHEAD: usize = 512;
/// What a timeline event costs besides its detail.
const EVENT_OVERHEAD: usize = 48;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Received, waiting for a slot.
    Queued,
    /// Sent to a Worker.
    Running,
    /// The Worker answered 2xx.
    Completed,
    /// Anything else that ended it.
    Failed,
    /// Ran out of `TASK_TIMEOUT`.
    TimedOut,
    /// Sent to a Worker by an instance that stopped before the answer: it may or
    /// may not have run (webhook journal).
    Unknown,
    /// A queued webhook task given to another instance (upgrade, shutdown).
    HandedOver,
}

impl TaskState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Unknown => "unknown",
            TaskState::HandedOver => "handed_over",
        }
    }
}

/// What is kept about one task.
#[derive(Debug)]
pub struct TaskRecord {
    id: TaskId,
    key: TaskKey,
    group: CompactString,
    function: CompactString,
    contract: u64,
    priority: u32,
    mode: &'static str,
    state: TaskState,
    worker: Option<CompactString>,
    attempts: u32,
    status: Option<u16>,
    outcome: Option<&'static str>,
    error: Option<String>,
    received_at: SystemTime,
    queued_at: Option<SystemTime>,
    dispatched_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    timeline: Vec<Event>,
    /// Bytes this record counts for in the board's budget (0 once evicted).
    weight: usize,
    /// The task's share of the queued-bytes budget, held until it leaves the queue.
    queued_bytes: Option<Reserved>,
}

fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn ms_between(a: SystemTime, b: Option<SystemTime>) -> Option<f64> {
    b.and_then(|b| b.duration_since(a).ok())
        .map(|d| d.as_secs_f64() * 1000.0)
}

impl TaskRecord {
    /// The board's JSON shape.
    pub fn to_json(&self) -> Value {
        let wait_end = self.dispatched_at.or(self.finished_at);
        json!({
            "id": self.id.to_string(), "group": self.group, "function": self.function,
            "contract": self.contract, "priority": self.priority, "mode": self.mode,
            "state": self.state.as_str(), "worker": self.worker, "attempts": self.attempts,
            "status": self.status, "outcome": self.outcome, "error": self.error,
            "receivedAt": iso(self.received_at),
            "queuedAt": self.queued_at.map(iso),
            "dispatchedAt": self.dispatched_at.map(iso),
            "finishedAt": self.finished_at.map(iso),
            "waitMs": self.queued_at.and_then(|q| ms_between(q, wait_end)).or(Some(0.0).filter(|_| self.dispatched_at.is_some())),
            "durationMs": ms_between(self.received_at, self.finished_at),
            "timeline": self.timeline.iter().map(|e| json!({"at": iso(e.at), "event": e.event, "detail": e.detail.to_string()})).collect::<Vec<_>>(),
        })
    }

    fn push(&mut self, event: &'static str, detail: Detail) {
        self.push_at(SystemTime::now(), event, detail);
    }

    fn push_at(&mut self, at: SystemTime, event: &'static str, detail: Detail) {
        // Attempts are bounded, so is the timeline; the cap guards against misuse.
        if self.timeline.len() < 32 {
            self.timeline.push(Event { at, event, detail });
        }
    }

    /// Pushes a free-text event, capped.
    fn push_text(&mut self, event: &'static str, text: &str) {
        self.push(event, Detail::Text(truncated(text, MAX_FIELD_BYTES)));
    }

    /// Approximate bytes held by the record.
    fn size(&self) -> usize {
        let strings = self.id.len()
            + self.group.len()
            + self.function.len()
            + self.worker.as_ref().map_or(0, CompactString::len)
            + self.error.as_ref().map_or(0, String::len);
        let events: usize = self
            .timeline
            .iter()
            .map(|e| EVENT_OVERHEAD + e.detail.shown_len())
            .sum();
        RECORD_OVERHEAD + strings + events
    }
}

/// A live task's handle on its record.
#[derive(Clone)]
pub struct TaskHandle {
    record: Arc<Mutex<TaskRecord>>,
    /// The board's byte total, kept current as the record grows.
    board_bytes: Arc<AtomicUsize>,
}

impl TaskHandle {
    /// Changes the record and its weight in the board's byte total.
    fn update<T>(&self, change: impl FnOnce(&mut TaskRecord) -> T) -> T {
        let mut r = self.record.lock();
        let out = change(&mut r);
        if r.weight > 0 {
            let size = r.size();
            if size >= r.weight {
                self.board_bytes
                    .fetch_add(size - r.weight, Ordering::AcqRel);
            } else {
                self.board_bytes
                    .fetch_sub(r.weight - size, Ordering::AcqRel);
            }
            r.weight = size;
        }
        out
    }

    /// Holds the task's share of the queued-bytes budget until it is dispatched or ends.
    pub fn hold_while_queued(&self, bytes: Reserved) {
        self.record.lock().queued_bytes = Some(bytes);
    }

    /// The task waits for a slot.
    pub fn queued(&self, depth_ahead: usize) {
        self.update(|r| {
            r.state = TaskState::Queued;
            let now = SystemTime::now();
            r.queued_at = Some(now);
            r.push_at(now, "queued", Detail::Queued { ahead: depth_ahead });
        });
    }

    /// The task was sent to `worker`.
    pub fn dispatched(&self, worker: &str, attempt: u32) {
        self.update(|r| {
            r.state = TaskState::Running;
            let worker = if worker.len() <= MAX_FIELD_BYTES {
                CompactString::from(worker)
            } else {
                CompactString::from(truncated(worker, MAX_FIELD_BYTES))
            };
            r.worker = Some(worker.clone());
            r.attempts = attempt;
            let now = SystemTime::now();
            r.dispatched_at = Some(now);
            r.queued_bytes = None;
            r.push_at(now, "dispatched", Detail::Attempt { attempt, worker });
        });
    }

    /// An attempt failed before the Worker started the task.
    pub fn retried(&self, why: &str) {
        self.update(|r| r.push_text("retried", why));
    }

    /// The task ended.
    pub fn finished(
        &self,
        state: TaskState,
        status: u16,
        outcome: &'static str,
        error: Option<String>,
    ) {
        self.update(|r| {
            r.state = state;
            r.status = Some(status);
            r.outcome = Some(outcome);
            r.queued_bytes = None;
            let detail = match &error {
                Some(e) => Detail::Text(truncated(
                    &format!("{status} {outcome}: {e}"),
                    MAX_FIELD_BYTES,
                )),
                None => Detail::Finished { status, outcome },
            };
            r.error = error.map(|e| truncated(&e, MAX_FIELD_BYTES));
            let now = SystemTime::now();
            r.finished_at = Some(now);
            r.push_at(now, "finished", detail);
        });
    }

    /// Seconds since the task was received.
    pub fn age(&self) -> Duration {
        self.record.lock().received_at.elapsed().unwrap_or_default()
    }

    /// The task's id.
    pub fn id(&self) -> String {
        self.record.lock().id.to_string()
    }
}

/// One point of the dashboard's series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
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
pub const MAX_SAMPLES: usize = 300;

struct Inner {
    ring: VecDeque<TaskHandle>,
    by_id: ById,
}

/// Bounded store of recent task records. Default capacity 10000 records and
/// [`DEFAULT_MAX_BYTES`]; the oldest records go first when either is reached.
pub struct TaskBoard {
    inner: Mutex<Inner>,
    capacity: usize,
    max_bytes: usize,
    bytes: Arc<AtomicUsize>,
    window: Mutex<Vec<(f64, bool)>>,
    series: Mutex<VecDeque<Sample>>,
}

impl TaskBoard {
    /// A board keeping the last `capacity` tasks, within [`DEFAULT_MAX_BYTES`].
    pub fn new(capacity: usize) -> Self {
        TaskBoard::with_byte_budget(capacity, DEFAULT_MAX_BYTES)
    }

    /// A board keeping the last `capacity` tasks, within `max_bytes` of records.
    pub fn with_byte_budget(capacity: usize, max_bytes: usize) -> Self {
        TaskBoard {
            max_bytes: max_bytes.max(1),
            bytes: Arc::new(AtomicUsize::new(0)),
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(65_536)),
                by_id: ById::default(),
            }),
            capacity: capacity.max(1),
            window: Mutex::new(Vec::new()),
            series: Mutex::new(VecDeque::with_capacity(MAX_SAMPLES)),
        }
    }

    /// Records a new task, evicting the oldest record when full.
    pub fn open(&self, id: &str, spec: &TaskSpec) -> TaskHandle {
        let now = SystemTime::now();
        let (id_kept, key) = TaskId::with_key(id);
        let mut record = TaskRecord {
            id: id_kept,
            key,
            group: CompactString::from(spec.group.as_str()),
            function: CompactString::from(spec.function.as_str()),
            contract: spec.contract,
            priority: spec.priority,
            mode: spec.mode.as_str(),
            state: TaskState::Queued,
            worker: None,
            attempts: 0,
            status: None,
            outcome: None,
            error: None,
            received_at: now,
            queued_at: None,
            dispatched_at: None,
            finished_at: None,
            timeline: {
                // Received, dispatched, finished: room for a task's usual life at once.
                let mut timeline = Vec::with_capacity(4);
                timeline.push(Event {
                    at: now,
                    event: "received",
                    detail: Detail::Received {
                        priority: spec.priority,
                        mode: spec.mode.as_str(),
                    },
                });
                timeline
            },
            weight: 0,
            queued_bytes: None,
        };
        record.weight = record.size();
        let weight = record.weight;
        let handle = TaskHandle {
            record: Arc::new(Mutex::new(record)),
            board_bytes: self.bytes.clone(),
        };
        let mut inner = self.inner.lock();
        while inner.ring.len() >= self.capacity
            || (!inner.ring.is_empty()
                && self.bytes.load(Ordering::Acquire) + weight > self.max_bytes)
        {
            let Some(old) = inner.ring.pop_front() else {
                break;
            };
            let mut r = old.record.lock();
            // An evicted record of a live task no longer counts as it grows.
            self.bytes.fetch_sub(r.weight, Ordering::AcqRel);
            r.weight = 0;
            inner.by_id.remove(&r.key);
        }
        self.bytes.fetch_add(weight, Ordering::AcqRel);
        inner.ring.push_back(handle.clone());
        inner.by_id.insert(key, handle.clone());
        handle
    }

    /// Notes a finished task for the per-second series.
    pub fn observe(&self, seconds: f64, error: bool) {
        let mut w = self.window.lock();
        if w.len() < 1_000_000 {
            w.push((seconds, error));
        }
    }

    /// Closes the current second: computes its sample and keeps the last [`MAX_SAMPLES`].
    pub fn sample(&self, queue_depth: usize, elapsed: Duration) -> Sample {
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
    pub fn series(&self) -> Vec<Sample> {
        self.series.lock().iter().copied().collect()
    }

    /// A record by id.
    pub fn get(&self, id: &str) -> Option<Value> {
        let h = self.inner.lock().by_id.get(&task_key(id)).cloned()?;
        let r = h.record.lock();
        // A hashed key is checked against the id it stands for.
        (r.id.to_string() == id).then(|| r.to_json())
    }

    /// Records newest first matching `filter`, at most `limit`.
    pub fn list(&self, limit: usize, filter: impl Fn(&TaskRecord) -> bool) -> Vec<Value> {
        let handles: Vec<TaskHandle> = self.inner.lock().ring.iter().rev().cloned().collect();
        let mut out = Vec::new();
        for h in handles {
            let r = h.record.lock();
            if filter(&r) {
                out.push(r.to_json());
                if out.len() >= limit {
                    break;
                }
            }
        }
        out
    }

    /// Counts by state (`retried` = more than one attempt), of one group or all, and
    /// every group seen.
    pub fn counts(&self, group: Option<&str>) -> (Value, Vec<String>) {
        let handles: Vec<TaskHandle> = self.inner.lock().ring.iter().cloned().collect();
        let mut c: HashMap<&'static str, u64> = HashMap::new();
        let mut groups = std::collections::BTreeSet::new();
        for h in handles {
            let r = h.record.lock();
            if groups.len() < 200 {
                groups.insert(r.group.to_string());
            }
            if group.is_some_and(|g| g != r.group) {
                continue;
            }
            *c.entry(r.state.as_str()).or_default() += 1;
            if r.attempts > 1 {
                *c.entry("retried").or_default() += 1;
            }
        }
        let get = |k| c.get(k).copied().unwrap_or(0);
        (
            json!({
                "queued": get("queued"), "running": get("running"), "completed": get("completed"),
                "failed": get("failed"), "timed_out": get("timed_out"), "retried": get("retried"),
            }),
            groups.into_iter().collect(),
        )
    }

    /// Records kept right now.
    pub fn len(&self) -> usize {
        self.inner.lock().ring.len()
    }

    /// Bytes the records hold (approximately).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// True when no task was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Filter helpers for the board's API.
impl TaskRecord {
    /// State name.
    pub fn state_name(&self) -> &'static str {
        self.state.as_str()
    }
    /// Group.
    pub fn group(&self) -> &str {
        &self.group
    }
    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        self.attempts
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
        assert!(b.bytes() <= 20_000, "{}", b.bytes());
        assert!(b.len() < 100 && b.len() > 1, "{}", b.len());
        let r = b.get("t99").unwrap();
        let error = r["error"].as_str().unwrap();
        assert!(error.ends_with(&format!("…(+{} bytes)", (1 << 20) - MAX_FIELD_BYTES)));
        let last = r["timeline"].as_array().unwrap().last().unwrap()["detail"].clone();
        assert!(last.as_str().unwrap().len() < MAX_FIELD_BYTES + 32);
        // The byte total follows the records kept.
        let sizes: usize = b
            .inner
            .lock()
            .ring
            .iter()
            .map(|h| h.record.lock().size())
            .sum();
        assert_eq!(b.bytes(), sizes);
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

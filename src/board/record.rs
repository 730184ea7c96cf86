//! One task's record on the board: what is kept about it (never its input or
//! result) and its JSON shape.

use std::time::SystemTime;

use compact_str::CompactString;
use serde::Serialize;
use serde_json::{json, Value};
use smallvec::SmallVec;

use super::key::{TaskId, TaskKey};
use super::timeline::{Detail, Event};
use super::{EVENT_OVERHEAD, MAX_FIELD_BYTES, RECORD_OVERHEAD};
use crate::task::TaskSpec;
use crate::text::truncated;

/// A record's timeline, inline up to a task's usual life (received, queued,
/// dispatched, finished): a record lives in its board slot with nothing on the heap.
pub(super) type Timeline = SmallVec<[Event; 4]>;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskState {
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
    /// Taken back by its client or an operator (`DELETE /task/{id}`).
    Cancelled,
}

impl TaskState {
    /// Wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Unknown => "unknown",
            TaskState::HandedOver => "handed_over",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// The state as `GET /task/{id}` names it: `queued`, `running`, `done`,
    /// `failed` (timed out included), `cancelled` or `unknown`. A task handed to
    /// another instance is `unknown` here: this instance no longer follows it.
    pub(crate) fn public(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Completed => "done",
            TaskState::Failed | TaskState::TimedOut => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Unknown | TaskState::HandedOver => "unknown",
        }
    }

    /// True once the task has ended here (done, failed, cancelled, unknown or
    /// handed over): it can no longer be cancelled on this instance.
    pub(crate) fn is_final(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Running)
    }
}

/// What is kept about one task.
#[derive(Debug)]
pub(crate) struct TaskRecord {
    pub(super) id: TaskId,
    pub(super) key: TaskKey,
    group: CompactString,
    function: CompactString,
    contract: u64,
    priority: u32,
    mode: &'static str,
    state: TaskState,
    worker: Option<CompactString>,
    /// The named client that sent it (`default`: the LB key).
    client: Option<CompactString>,
    attempts: u32,
    status: Option<u16>,
    outcome: Option<&'static str>,
    error: Option<String>,
    received_at: SystemTime,
    queued_at: Option<SystemTime>,
    dispatched_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    pub(super) timeline: Timeline,
    /// Bytes this record counts for in the board's budget.
    pub(super) weight: usize,
}

fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn ms_between(a: SystemTime, b: Option<SystemTime>) -> Option<f64> {
    b.and_then(|b| b.duration_since(a).ok())
        .map(|d| d.as_secs_f64() * 1000.0)
}

impl TaskRecord {
    /// The record of a task just received.
    pub(super) fn opened(id: TaskId, key: TaskKey, spec: &TaskSpec, now: SystemTime) -> Self {
        let detail = Detail::Received {
            priority: spec.priority,
            mode: spec.mode.as_str(),
        };
        let mut timeline = Timeline::new();
        timeline.push(Event {
            at: now,
            event: "received",
            detail,
        });
        let mut record = TaskRecord {
            id,
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
            client: None,
            finished_at: None,
            timeline,
            weight: 0,
        };
        record.weight = record.size();
        record
    }

    /// The client's view of the task (`GET /task/{id}`): what it is and where it
    /// is, never its input or result. Absent fields are left out.
    pub(crate) fn status_json(&self) -> Value {
        let mut v = json!({
            "id": self.id.to_string(), "state": self.state.public(), "client": self.client,
            "group": self.group, "function": self.function, "mode": self.mode,
            "priority": self.priority, "createdAt": iso(self.received_at),
        });
        let fields = [
            ("startedAt", self.dispatched_at.map(|t| Value::from(iso(t)))),
            ("finishedAt", self.finished_at.map(|t| Value::from(iso(t)))),
            ("worker", self.worker.as_deref().map(Value::from)),
            ("error", self.error.as_deref().map(Value::from)),
        ];
        if let Some(map) = v.as_object_mut() {
            for (name, value) in fields {
                if let Some(value) = value {
                    map.insert(name.into(), value);
                }
            }
        }
        v
    }

    /// The board's JSON shape.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(), "group": self.group, "function": self.function,
            "contract": self.contract, "priority": self.priority, "mode": self.mode,
            "state": self.state.as_str(), "worker": self.worker, "attempts": self.attempts,
            "client": self.client,
            "status": self.status, "outcome": self.outcome, "error": self.error,
            "receivedAt": iso(self.received_at),
            "queuedAt": self.queued_at.map(iso),
            "dispatchedAt": self.dispatched_at.map(iso),
            "finishedAt": self.finished_at.map(iso),
            "waitMs": self.queue_ms(),
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

    /// The task waits for a slot.
    pub(super) fn queued(&mut self, depth_ahead: usize) {
        self.state = TaskState::Queued;
        let now = SystemTime::now();
        self.queued_at = Some(now);
        self.push_at(now, "queued", Detail::Queued { ahead: depth_ahead });
    }

    /// The named client that sent the task (names are at most 64 bytes).
    pub(super) fn client(&mut self, name: &str) {
        self.client = Some(CompactString::from(name));
    }

    /// The task was sent to `worker`.
    pub(super) fn dispatched(&mut self, worker: &str, attempt: u32) {
        self.state = TaskState::Running;
        let worker = if worker.len() <= MAX_FIELD_BYTES {
            CompactString::from(worker)
        } else {
            CompactString::from(truncated(worker, MAX_FIELD_BYTES))
        };
        self.worker = Some(worker.clone());
        self.attempts = attempt;
        let now = SystemTime::now();
        self.dispatched_at = Some(now);
        self.push_at(now, "dispatched", Detail::Attempt { attempt, worker });
    }

    /// An attempt failed before the Worker started the task.
    pub(super) fn retried(&mut self, why: &str) {
        self.push_text("retried", why);
    }

    /// The task ended.
    pub(super) fn finished(
        &mut self,
        state: TaskState,
        status: u16,
        outcome: &'static str,
        error: Option<String>,
    ) {
        self.state = state;
        self.status = Some(status);
        self.outcome = Some(outcome);
        let detail = match &error {
            Some(e) => Detail::Text(truncated(
                &format!("{status} {outcome}: {e}"),
                MAX_FIELD_BYTES,
            )),
            None => Detail::Finished { status, outcome },
        };
        self.error = error.map(|e| truncated(&e, MAX_FIELD_BYTES));
        let now = SystemTime::now();
        self.finished_at = Some(now);
        self.push_at(now, "finished", detail);
    }

    /// Approximate bytes held by the record.
    pub(super) fn size(&self) -> usize {
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

/// Filter helpers for the board's API.
impl TaskRecord {
    /// State name.
    pub(crate) fn state_name(&self) -> &'static str {
        self.state.as_str()
    }
    /// State.
    pub(crate) fn state(&self) -> TaskState {
        self.state
    }
    /// Group.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }
    /// Attempts made.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
    /// The named client that sent it.
    pub(crate) fn client_name(&self) -> Option<&str> {
        self.client.as_deref()
    }
    /// Function.
    pub(crate) fn function(&self) -> &str {
        &self.function
    }
    /// Mode (`sync`, `stream`, `webhook`).
    pub(crate) fn mode(&self) -> &'static str {
        self.mode
    }
    /// Priority the task was queued at.
    pub(crate) fn priority(&self) -> u32 {
        self.priority
    }
    /// The Worker of the last attempt, if one was chosen.
    pub(crate) fn worker(&self) -> Option<&str> {
        self.worker.as_deref()
    }
    /// The outcome label once finished (`success`, `worker_error`, `no_worker`, …).
    pub(crate) fn outcome(&self) -> Option<&'static str> {
        self.outcome
    }
    /// Milliseconds the task waited for a slot (the board's `waitMs`): 0 when it
    /// got one at once, `None` before it was queued or dispatched.
    pub(crate) fn queue_ms(&self) -> Option<f64> {
        let wait_end = self.dispatched_at.or(self.finished_at);
        self.queued_at
            .and_then(|q| ms_between(q, wait_end))
            .or(Some(0.0).filter(|_| self.dispatched_at.is_some()))
    }
}

//! Compatibility with clients written against the original: its failure answers
//! (`compat.original_status_codes`) and the bodies it ran that we run with a warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::dispatch::TaskError;
use crate::reason::Reason;

/// What the original answered for nearly every failure of a task (no slot, a
/// silent, unreachable or killed Worker, an unknown group or function).
pub(super) const ORIGINAL_FAILURE: &str = "Task timed out";

/// Status and JSON body of the load balancer's own answer for `e`: by default the
/// honest status and `{"error": message, "reason": reason}`. With `original`, a
/// `502`, `503` or `504` is a `500`, as the original answered it: `{"error":"Task
/// timed out"}` where the original said that, else our message, and the honest
/// message in `reason`, as before reasons existed (the `x-andera-reason` header
/// still has the reason).
pub(super) fn failure_answer(
    e: &TaskError,
    message: &str,
    reason: Reason,
    original: bool,
) -> (u16, Value) {
    let status = e.status();
    if !original || !matches!(status, 502..=504) {
        return (
            status,
            json!({ "error": message, "reason": reason.as_str() }),
        );
    }
    let error = match e {
        TaskError::NoWorker(_)
        | TaskError::QueueTimeout
        | TaskError::Timeout
        | TaskError::WorkerFailed { .. } => ORIGINAL_FAILURE,
        _ => message,
    };
    (500, json!({ "error": error, "reason": message }))
}

/// Lets a warning through at most once per period; the ones held back are counted
/// and reported with the next (a client cannot flood the log).
pub(super) struct WarnEvery {
    period_s: u64,
    /// Seconds since the Unix epoch of the last warning let through; 0: none yet.
    last_s: AtomicU64,
    held: AtomicU64,
}

impl WarnEvery {
    /// At most one warning per `period_s` seconds.
    pub(super) const fn new(period_s: u64) -> Self {
        WarnEvery {
            period_s,
            last_s: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(warnings held back since the last one)` when one may be logged now.
    pub(super) fn ready(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        self.ready_at(now)
    }

    fn ready_at(&self, now_s: u64) -> Option<u64> {
        let last = self.last_s.load(Ordering::Relaxed);
        let due = last == 0 || now_s >= last.saturating_add(self.period_s);
        if due
            && self
                .last_s
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Tasks with a negative `priority`: one warning a minute at most.
static NEGATIVE_PRIORITY: WarnEvery = WarnEvery::new(60);

/// Logs (rate-limited) that task `task_id`'s negative `priority` runs at the default.
pub(super) fn warn_negative_priority(task_id: &str, priority: i64) {
    if let Some(held) = NEGATIVE_PRIORITY.ready() {
        let more = if held > 0 {
            format!(" ({held} more such task(s) since the last warning)")
        } else {
            String::new()
        };
        log::warn!(
            "task {task_id}: priority {priority} read as the default priority 1, as the original ran it; \
             send 1 to 2097152{more} (this warning: at most once a minute)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_statuses_only_when_asked_and_only_for_our_own_5xx() {
        let timeout = TaskError::Timeout;
        let honest = "Task timed out waiting for the Worker";
        assert_eq!(
            failure_answer(&timeout, honest, Reason::WorkerTimeout, false),
            (504, json!({"error": honest, "reason": "worker_timeout"}))
        );
        assert_eq!(
            failure_answer(&timeout, honest, Reason::WorkerTimeout, true),
            (500, json!({"error": "Task timed out", "reason": honest}))
        );
        let full = TaskError::QueueFull;
        assert_eq!(
            failure_answer(
                &full,
                "Task queue is full, retry later",
                Reason::QueueFull,
                true
            ),
            (
                500,
                json!({"error": "Task queue is full, retry later", "reason": "Task queue is full, retry later"})
            )
        );
        let none = TaskError::NoWorker("No Worker for group \"x\" with contract 1".into());
        assert_eq!(
            failure_answer(&none, "m", Reason::NoWorker, true).1["error"],
            ORIGINAL_FAILURE
        );
    }

    #[test]
    fn a_warning_a_period_and_the_count_held_back() {
        let w = WarnEvery::new(60);
        assert_eq!(w.ready_at(1000), Some(0));
        assert_eq!(w.ready_at(1001), None);
        assert_eq!(w.ready_at(1059), None);
        assert_eq!(w.ready_at(1060), Some(2));
        assert_eq!(w.ready_at(1061), None);
    }
}

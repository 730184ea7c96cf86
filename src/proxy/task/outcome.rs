//! How a task ended, as one typed [`Outcome`], and [`TaskHandle::close`], which
//! writes it everywhere at once: the board record (which the access log and the
//! task board read), the task metrics, the dashboard's series and the task's trace.

use crate::board::{TaskBoard, TaskHandle, TaskState};
use crate::dispatch::TaskError;
use crate::metrics::{bounded_label, outcome, METRICS};
use crate::reason::Reason;
use crate::task::TaskSpec;

/// How a task ended. Built by one of the constructors, consumed by
/// [`TaskHandle::close`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    state: TaskState,
    status: u16,
    label: &'static str,
    reason: Option<Reason>,
    detail: Option<String>,
    /// The group and function exist in the Worker list (so they may be labels).
    listed: bool,
}

impl Outcome {
    /// A task that ended in `state` with `status`, counted under the metric
    /// `outcome` `label` (docs/metrics.md), answered by the load balancer itself
    /// for `reason` (`None`: the Worker's answer was relayed, or nothing was sent).
    pub(crate) fn new(
        state: TaskState,
        status: u16,
        label: &'static str,
        reason: Option<Reason>,
    ) -> Self {
        Outcome {
            state,
            status,
            label,
            reason,
            detail: None,
            listed: true,
        }
    }

    /// The Worker answered `status`, relayed as it was: `401` is the Worker
    /// refusing the `x-wr-auth` key, `500` the function failing.
    pub(crate) fn answered(status: u16) -> Self {
        let (state, label) = match status {
            0..=399 => (TaskState::Completed, outcome::OK),
            401 => (TaskState::Failed, outcome::WORKER_KEY_REJECTED),
            500 => (TaskState::Failed, outcome::FUNCTION_ERROR),
            _ => (TaskState::Failed, outcome::WORKER_ERROR),
        };
        Outcome::new(state, status, label, None)
    }

    /// The client left (or stopped reading) before its answer was sent: `499`.
    pub(crate) fn client_gone(detail: String) -> Self {
        Outcome::new(TaskState::Failed, 499, "client_gone", None).detail(detail)
    }

    /// The Worker failed after its head was relayed: the answer is cut short.
    pub(crate) fn cut(timed_out: bool, detail: String) -> Self {
        let (status, reason) = if timed_out {
            (504, Reason::WorkerTimeout)
        } else {
            (502, Reason::WorkerFailed)
        };
        Outcome::new(TaskState::Failed, status, "worker_failed", Some(reason)).detail(detail)
    }

    /// The task failed with `e` before a Worker's answer, told to the client as
    /// `message` (also the board's `error`).
    pub(crate) fn failed(e: &TaskError, message: String) -> Self {
        let state = match e {
            TaskError::QueueTimeout | TaskError::Timeout => TaskState::TimedOut,
            _ => TaskState::Failed,
        };
        let outcome = Outcome::new(state, e.status(), e.outcome(), Some(reason_of(e)));
        // Only an admitted group/function is known to exist in the Worker list.
        match e {
            TaskError::NoWorker(_) => outcome.detail(message).unlisted(),
            _ => outcome.detail(message),
        }
    }

    /// With what went wrong, for the board's `error`.
    pub(crate) fn detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The group and function are not known to the Worker list: counted as `other`.
    pub(crate) fn unlisted(mut self) -> Self {
        self.listed = false;
        self
    }

    /// The status the client gets (before `compat.original_status_codes`).
    pub(crate) fn status(&self) -> u16 {
        self.status
    }
}

/// Why the load balancer answers `e` itself.
pub(crate) fn reason_of(e: &TaskError) -> Reason {
    match e {
        TaskError::NoWorker(_) => Reason::NoWorker,
        TaskError::QueueFull => Reason::QueueFull,
        TaskError::QueueTimeout => Reason::QueueTimeout,
        TaskError::Timeout => Reason::WorkerTimeout,
        TaskError::WorkerFailed {
            delivered: false, ..
        } => Reason::NotDelivered,
        TaskError::WorkerFailed { .. } => Reason::WorkerFailed,
        TaskError::ShuttingDown | TaskError::HandedOver => Reason::ShuttingDown,
        TaskError::NotKept(_) => Reason::JournalUnavailable,
        TaskError::ClientLimit { running: true, .. } => Reason::ClientRunning,
        TaskError::ClientLimit { .. } => Reason::ClientQueued,
    }
}

impl TaskHandle {
    /// Ends the task's record and trace here without counting an outcome: it went
    /// to another instance (`handed_over`, `shared_queue`), which counts it when it
    /// ends, or it is `unknown` after a crash (`andera_lb_journal_unknown_total`).
    pub(crate) fn set_aside(&self, state: TaskState, label: &'static str, detail: Option<String>) {
        if let Some(trace) = self.trace() {
            trace.set_aside(label, detail.as_deref());
        }
        self.finished(state, 0, label, detail);
    }

    /// Closes the task with `outcome`: its board record, its metrics (counted
    /// under `spec`'s group and function) and `board`'s series, all at once.
    pub(crate) fn close(&self, board: &TaskBoard, spec: &TaskSpec, outcome: Outcome) {
        let seconds = self.age().as_secs_f64();
        let Outcome {
            state,
            status,
            label,
            reason,
            detail,
            listed,
        } = outcome;
        // Every exit of a task comes through here: its SERVER span ends with it.
        if let Some(trace) = self.trace() {
            trace.close(status, label, reason.map(Reason::as_str), detail.as_deref());
        }
        self.finished(state, status, label, detail);
        // A task of a group no valid Worker has had (one that waited in the waiting
        // room, then left) counts as `other`, like one refused at once.
        let listed = listed && crate::metrics::known_group(&spec.group);
        let group = bounded_label(&spec.group, listed);
        let function = bounded_label(&spec.function, listed);
        METRICS
            .tasks
            .with_label_values(&[group, function, label])
            .inc();
        METRICS
            .task_duration
            .with_label_values(&[group, function, label])
            .observe(seconds);
        board.observe(seconds, state != TaskState::Completed);
        if let Some(client) = &spec.client {
            METRICS
                .clients
                .tasks
                .with_label_values(&[&client.name, label])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_set_aside_ends_its_record_without_counting_an_outcome() {
        let board = TaskBoard::new(4);
        let spec = TaskSpec {
            group: "set-aside-group".into(),
            function: "f".into(),
            contract: 1,
            priority: 1,
            mode: crate::task::Mode::Webhook,
            client: None,
        };
        // Outside unit tests' Worker list every group is `other`; no path but a
        // (wrong) count of a hand-over ever writes this series.
        let handed_over = || {
            METRICS
                .tasks
                .get_metric_with_label_values(&["other", "other", "handed_over"])
                .map_or(0, |c| c.get())
        };
        let handed = board.open("handed", &spec);
        handed.set_aside(TaskState::HandedOver, "handed_over", None);
        assert_eq!(board.get("handed").unwrap()["state"], "handed_over");
        assert_eq!(handed_over(), 0, "counted where it ends, not here");
    }

    #[test]
    fn worker_answers_keep_their_outcome_labels() {
        let label = |s| Outcome::answered(s).label;
        assert_eq!(
            [label(200), label(401), label(500), label(404)],
            [
                "ok",
                "worker_key_rejected",
                "function_error",
                "worker_error"
            ]
        );
        assert_eq!(Outcome::answered(200).reason, None);
        let cut = Outcome::cut(true, "x".into());
        assert_eq!(
            (cut.status, cut.label, cut.reason),
            (504, "worker_failed", Some(Reason::WorkerTimeout))
        );
    }

    #[test]
    fn each_task_error_has_its_reason() {
        let failed = |delivered| TaskError::WorkerFailed {
            worker: "http://w".into(),
            error: pingora::Error::explain(pingora::ErrorType::ConnectRefused, "x"),
            delivered,
        };
        let cases = [
            (TaskError::NoWorker("m".into()), "no_worker"),
            (TaskError::QueueFull, "queue_full"),
            (TaskError::QueueTimeout, "queue_timeout"),
            (TaskError::Timeout, "worker_timeout"),
            (failed(false), "not_delivered"),
            (failed(true), "worker_failed"),
            (TaskError::ShuttingDown, "shutting_down"),
        ];
        for (e, reason) in cases {
            assert_eq!(reason_of(&e).as_str(), reason, "{e:?}");
            let outcome = Outcome::failed(&e, e.message());
            assert_eq!((outcome.status, outcome.label), (e.status(), e.outcome()));
        }
    }

    #[test]
    fn close_writes_the_record_and_counts_the_task() {
        let board = TaskBoard::new(4);
        let spec = crate::task::parse(br#"{"group":"g","function":"f","contract":1}"#).unwrap();
        let record = board.open("t1", &spec);
        let before = METRICS
            .tasks
            .with_label_values(&["other", "other", "client_gone"])
            .get();
        record.close(
            &board,
            &spec,
            Outcome::client_gone("left".into()).unlisted(),
        );
        let after = METRICS
            .tasks
            .with_label_values(&["other", "other", "client_gone"])
            .get();
        assert!(after > before);
        let (state, label) = board.read("t1", |r| (r.state_name(), r.outcome())).unwrap();
        assert_eq!((state, label), ("failed", Some("client_gone")));
    }
}

//! Why a task ended without a Worker's answer ([`TaskError`]), with its status,
//! message and reason label, and how a Pingora error reads in one.

use std::sync::Arc;

use crate::scheduler::AcquireError;
use crate::task::TaskSpec;

/// Why a task ended without a Worker's answer, mapped to the client's status.
#[derive(Debug)]
pub(crate) enum TaskError {
    /// No Worker can ever take it (unknown group/contract/function) or none is up: 503.
    NoWorker(String),
    /// The wait queue is full: 503 with `Retry-After`.
    QueueFull,
    /// Waited for a slot past the task timeout: 504.
    QueueTimeout,
    /// The Worker did not answer within the task timeout: 504.
    Timeout,
    /// The Worker failed or vanished: 502. `error` is Pingora's, with its type
    /// (e.g. `ConnectRefused`, `ConnectionClosed`) and context.
    WorkerFailed {
        /// The Worker's URL.
        worker: String,
        /// What went wrong.
        error: Box<pingora::Error>,
        /// False when the Worker never got the task (it was unreachable).
        delivered: bool,
    },
    /// The load balancer is shutting down: 503.
    ShuttingDown,
    /// A journaled webhook task now belongs to another instance: not sent here.
    HandedOver,
    /// The webhook task could not be written to the journal: 503.
    NotKept(String),
    /// The task's client is at its `max_running` (`true`) or `max_queued` (`false`):
    /// 429 with `Retry-After`.
    ClientLimit {
        /// The client's name.
        client: Arc<str>,
        /// Over `max_running` rather than `max_queued`.
        running: bool,
    },
}

/// A Pingora error for a client or a log line: type, context and causes, e.g.
/// `ConnectRefused: Fail to connect to 10.0.0.5:3000 (Connection refused)`, without
/// the source markers and repeated types of Pingora's own `Display`.
pub(crate) fn describe(e: &pingora::Error) -> String {
    let mut out = e.etype().as_str().to_string();
    let mut error = e;
    loop {
        if let Some(context) = &error.context {
            out.push_str(": ");
            out.push_str(context.as_str());
        }
        match &error.cause {
            Some(cause) => match cause.downcast_ref::<pingora::Error>() {
                Some(inner) => error = inner,
                None => {
                    out.push_str(&format!(" ({cause})"));
                    return out;
                }
            },
            None => return out,
        }
    }
}

impl TaskError {
    /// HTTP status for the client.
    pub(crate) fn status(&self) -> u16 {
        match self {
            TaskError::NoWorker(_)
            | TaskError::QueueFull
            | TaskError::ShuttingDown
            | TaskError::HandedOver
            | TaskError::NotKept(_) => 503,
            TaskError::QueueTimeout | TaskError::Timeout => 504,
            TaskError::WorkerFailed { .. } => 502,
            TaskError::ClientLimit { .. } => 429,
        }
    }

    /// Message for the client's JSON `error`.
    pub(crate) fn message(&self) -> String {
        match self {
            TaskError::NoWorker(m) => m.clone(),
            TaskError::QueueFull => "Task queue is full, retry later".into(),
            TaskError::QueueTimeout => "Task timed out waiting for a free Worker slot".into(),
            TaskError::Timeout => "Task timed out waiting for the Worker".into(),
            TaskError::WorkerFailed {
                worker,
                error,
                delivered,
            } => {
                let unreachable = if *delivered { "" } else { " unreachable" };
                format!("Worker failed: {worker}{unreachable}: {}", describe(error))
            }
            TaskError::ShuttingDown => "Load balancer is shutting down".into(),
            TaskError::HandedOver => "Task handed over to another instance".into(),
            TaskError::NotKept(m) => format!("Task cannot be kept for later delivery: {m}"),
            TaskError::ClientLimit {
                client,
                running: true,
            } => format!("Client {client:?} already has its max_running tasks running"),
            TaskError::ClientLimit { client, .. } => {
                format!("Client {client:?} already has its max_queued tasks waiting")
            }
        }
    }

    /// Short label for metrics and the task board.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            TaskError::NoWorker(_) => "no_worker",
            TaskError::QueueFull => "queue_full",
            TaskError::QueueTimeout => "queue_timeout",
            TaskError::Timeout => "timeout",
            TaskError::WorkerFailed { .. } => "worker_failed",
            TaskError::ShuttingDown => "shutting_down",
            TaskError::HandedOver => "handed_over",
            TaskError::NotKept(_) => "not_kept",
            TaskError::ClientLimit { .. } => "client_limit",
        }
    }

    pub(super) fn from_acquire(e: AcquireError, spec: &TaskSpec) -> TaskError {
        match e {
            AcquireError::UnknownPool => TaskError::NoWorker(format!(
                "No Worker for group {:?} with contract {}",
                spec.group, spec.contract
            )),
            AcquireError::UnknownFunction => TaskError::NoWorker(format!(
                "No Worker of group {:?} contract {} exposes function {:?}",
                spec.group, spec.contract, spec.function
            )),
            AcquireError::NoWorkerUp => TaskError::NoWorker(format!(
                "No Worker of group {:?} contract {} is available",
                spec.group, spec.contract
            )),
            AcquireError::QueueFull => TaskError::QueueFull,
            AcquireError::ClientRunning | AcquireError::ClientQueued => TaskError::ClientLimit {
                client: spec
                    .client
                    .as_ref()
                    .map_or_else(|| "".into(), |c| c.name.clone()),
                running: e == AcquireError::ClientRunning,
            },
            AcquireError::TimedOut => TaskError::QueueTimeout,
            AcquireError::ShuttingDown => TaskError::ShuttingDown,
        }
    }
}

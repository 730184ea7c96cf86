//! Finishing: the task's record, its metrics, and the client's JSON error when the
//! task failed before a Worker answered.

use pingora::prelude::*;
use pingora::proxy::Session;

use crate::app::{App, RequestCtx};
use crate::board::{TaskBoard, TaskHandle, TaskState};
use crate::dispatch::TaskError;
use crate::metrics::{bounded_label, outcome, METRICS};
use crate::respond;
use crate::task::TaskSpec;

/// Closes a task's record and counts it. `known` says the group and function exist
/// in the Worker list, so they may be used as label values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    board: &TaskBoard,
    record: &TaskHandle,
    spec: &TaskSpec,
    known: bool,
    state: TaskState,
    status: u16,
    outcome: &'static str,
    error: Option<String>,
) {
    let seconds = record.age().as_secs_f64();
    record.finished(state, status, outcome, error);
    let group = bounded_label(&spec.group, known);
    let function = bounded_label(&spec.function, known);
    METRICS
        .tasks
        .with_label_values(&[group, function, outcome])
        .inc();
    METRICS
        .task_duration
        .with_label_values(&[group, function, outcome])
        .observe(seconds);
    board.observe(seconds, state != TaskState::Completed);
}

/// Closes the record of a task that ended without a Worker's answer.
pub(crate) fn finish_failed(
    board: &TaskBoard,
    record: &TaskHandle,
    spec: &TaskSpec,
    e: &TaskError,
    message: String,
) {
    let state = match e {
        TaskError::QueueTimeout | TaskError::Timeout => TaskState::TimedOut,
        _ => TaskState::Failed,
    };
    // Only an admitted group/function is known to exist in the Worker list.
    let known = !matches!(e, TaskError::NoWorker(_));
    finish(
        board,
        record,
        spec,
        known,
        state,
        e.status(),
        e.outcome(),
        Some(message),
    );
}

pub(crate) async fn fail(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
    e: &TaskError,
) -> Result<()> {
    ctx.status = e.status();
    let task_id = record.id();
    let message = e.message();
    log::warn!(
        "task {task_id} {}/{} c{} p{} {}: {} {message}",
        bounded_label(&spec.group, true),
        bounded_label(&spec.function, true),
        spec.contract,
        spec.priority,
        spec.mode.as_str(),
        e.status(),
    );
    finish_failed(&app.board, record, spec, e, message.clone());
    let mut extra = vec![("x-andera-task-id", task_id)];
    if matches!(e, TaskError::QueueFull) {
        METRICS.queue_rejections.inc();
        extra.push(("retry-after", app.settings.retry_after_s.to_string()));
    }
    let original = app.settings.original_status_codes;
    let (status, body) = super::compat::failure_answer(e, &message, original);
    ctx.status = status;
    respond::json(session, status, &body, &extra).await
}

/// State and outcome of a task the Worker answered with `status`: `401` is the
/// Worker refusing the `x-wr-auth` key, `500` the function failing.
pub(crate) fn answered(status: u16) -> (TaskState, &'static str) {
    match status {
        0..=399 => (TaskState::Completed, outcome::OK),
        401 => (TaskState::Failed, outcome::WORKER_KEY_REJECTED),
        500 => (TaskState::Failed, outcome::FUNCTION_ERROR),
        _ => (TaskState::Failed, outcome::WORKER_ERROR),
    }
}

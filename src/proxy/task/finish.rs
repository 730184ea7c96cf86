//! The client's JSON error when a task failed before a Worker answered, and the
//! headers every task answer carries.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::outcome::Outcome;
use crate::app::{App, RequestCtx};
use crate::board::{TaskBoard, TaskHandle};
use crate::dispatch::TaskError;
use crate::metrics::{bounded_label, METRICS};
use crate::respond;
use crate::task::TaskSpec;

/// The `x-andera-queue-ms` header: milliseconds task `task_id` waited for a slot
/// (0 when it got one at once or never queued).
pub(crate) fn queue_ms(board: &TaskBoard, task_id: &str) -> (&'static str, String) {
    let ms = board
        .read(task_id, |r| r.queue_ms())
        .flatten()
        .unwrap_or(0.0);
    ("x-andera-queue-ms", (ms.round() as u64).to_string())
}

/// Closes a task that failed with `e` and answers its client: `{"error", "reason"}`
/// with `x-andera-task-id`, `x-andera-reason` and `x-andera-queue-ms` (and
/// `Retry-After` when the queue is full).
pub(crate) async fn fail(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
    e: &TaskError,
) -> Result<()> {
    let task_id = record.id();
    let message = e.message();
    log::warn!(
        "task {task_id} client {} {}/{} c{} p{} {}: {} {message}",
        spec.client_name(),
        bounded_label(&spec.group, true),
        bounded_label(&spec.function, true),
        spec.contract,
        spec.priority,
        spec.mode.as_str(),
        e.status(),
    );
    let outcome = Outcome::failed(e, message.clone());
    let reason = super::outcome::reason_of(e);
    record.close(app.board(), spec, outcome);
    let mut extra = vec![
        reason.header(),
        queue_ms(app.board(), &task_id),
        ("x-andera-task-id", task_id),
    ];
    if matches!(e, TaskError::QueueFull) {
        METRICS.queue_rejections.inc();
    }
    if let TaskError::ClientLimit { client, .. } = e {
        METRICS
            .clients
            .refused
            .with_label_values(&[client, reason.as_str()])
            .inc();
    }
    if matches!(e, TaskError::QueueFull | TaskError::ClientLimit { .. }) {
        extra.push((
            "retry-after",
            app.settings().tasks.retry_after_s.to_string(),
        ));
    }
    let original = app.settings().compat.original_status_codes;
    let (status, body) = super::compat::failure_answer(e, &message, reason, original);
    ctx.status = status;
    respond::json(session, status, &body, &extra).await
}

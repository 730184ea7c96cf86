//! Input checked at the edge (`tasks.validate_input`, README "Task control"): a sync
//! task whose `input` fails its function's published `params` gets, at once, the
//! answer its Worker would give after queueing and taking a slot (protocol §5):
//! `500 {"success":false,"error":"<message>"}`, byte for byte, plus
//! `x-andera-reason: bad_request`. It never queues and takes no slot.
//!
//! Only sync tasks: a Worker accepts a webhook task with `200` before it checks the
//! input, and it may refuse a stream task for a function that cannot stream
//! (`400`, before the slot) where the balancer cannot tell which functions stream.
//! Only when every valid Worker of the pool publishes the same well-formed schema
//! (registry/schemas.rs), and only a sure verdict (task/schema.rs): when in doubt,
//! the task goes to the Worker.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::finish::queue_ms;
use super::outcome::Outcome;
use crate::app::{App, RequestCtx};
use crate::board::{TaskHandle, TaskState};
use crate::metrics::{bounded_label, known_group, METRICS};
use crate::reason::Reason;
use crate::respond;
use crate::task::schema::Verdict;
use crate::task::{self, Mode, TaskSpec};

/// The metric `outcome` of a task refused here (docs/metrics.md).
pub(crate) const INPUT_REFUSED: &str = "input_refused";

/// The Worker's message for this task's input, when the edge check is on, the task
/// is sync, its pool has one agreed schema for the function and the input surely
/// fails it; `None`: the task goes on. `body` is what the Worker would receive.
pub(super) fn refusal(app: &App, spec: &TaskSpec, body: &[u8]) -> Option<String> {
    if !app.settings().tasks.validate_input || spec.mode != Mode::Sync {
        return None;
    }
    let schema = app
        .registry()
        .schema(&spec.group, spec.contract, &spec.function)?;
    match schema.check_json(task::input_json(body)) {
        Verdict::Refuse(message) => Some(message),
        Verdict::Pass | Verdict::Unsure => None,
    }
}

/// The Worker's body for a failed input check, as Express's `res.json` writes it:
/// `{"success":false,"error":"<message>"}` in that order.
pub(crate) fn worker_body(message: &str) -> Vec<u8> {
    // Encoding a string cannot fail.
    let quoted = serde_json::to_string(message).unwrap_or_default();
    format!(r#"{{"success":false,"error":{quoted}}}"#).into_bytes()
}

/// Closes the task as refused (board, metrics, access log) and answers its client
/// as its Worker would, with `x-andera-reason`, `x-andera-task-id` and
/// `x-andera-queue-ms`.
pub(super) async fn refuse(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
    message: String,
) -> Result<()> {
    let task_id = record.id();
    log::info!(
        // Debug-quoted: the message may hold a client's key name.
        "task {task_id} client {} {}/{} c{}: refused at the edge (a Worker slot saved): {message:?}",
        spec.client_name(),
        bounded_label(&spec.group, true),
        bounded_label(&spec.function, true),
        spec.contract,
    );
    METRICS
        .input_refused
        .with_label_values(&[bounded_label(&spec.group, known_group(&spec.group))])
        .inc();
    let body = Bytes::from(worker_body(&message));
    let outcome = Outcome::new(
        TaskState::Failed,
        500,
        INPUT_REFUSED,
        Some(Reason::BadRequest),
    )
    .detail(message);
    record.close(app.board(), spec, outcome);
    ctx.status = 500;
    let extra = [
        Reason::BadRequest.header(),
        queue_ms(app.board(), &task_id),
        ("x-andera-task-id", task_id),
    ];
    let mut header = ResponseHeader::build(500, Some(4 + extra.len()))?;
    header.insert_header("content-type", "application/json; charset=utf-8")?;
    header.insert_header("content-length", body.len())?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        header.insert_header(name, value)?;
    }
    let limit = respond::send_limit(session);
    respond::within(
        limit,
        session.write_response_header(Box::new(header), false),
    )
    .await?;
    respond::within(limit, session.write_response_body(Some(body), true)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_workers_byte_for_byte() {
        assert_eq!(
            worker_body("Unexpected param: zz"),
            br#"{"success":false,"error":"Unexpected param: zz"}"#
        );
        assert_eq!(
            worker_body(r#"Invalid value for param: e, expected one of ["a","b"]"#),
            br#"{"success":false,"error":"Invalid value for param: e, expected one of [\"a\",\"b\"]"}"#
        );
    }
}

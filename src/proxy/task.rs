//! `POST /task`: authenticate, read and validate the body, then hand the task to the
//! dispatcher and relay the Worker's answer (or a prompt JSON error).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::time::Instant;

use crate::app::{App, RequestCtx};
use crate::auth::lb_authorized;
use crate::board::{TaskBoard, TaskHandle, TaskState};
use crate::dispatch::{Delivered, ForwardHeaders, TaskError};
use crate::metrics::{bounded_label, METRICS};
use crate::respond;
use crate::task::{self, Mode, TaskSpec};

/// Largest piece of a Worker's answer written to the client under one send timeout.
const SEND_SLICE: usize = 16 * 1024;

/// A task id unique across instances and restarts: a UUIDv7 (time-ordered, so ids
/// sort by arrival on boards and in logs), e.g. `01938c7e-5b2a-7c3d-9e4f-1a2b3c4d5e6f`.
pub fn next_task_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

enum BodyError {
    TooLarge,
    Read(Box<Error>),
}

/// Reads the whole body; `pause` is the longest wait for its next chunk.
async fn read_body(
    session: &mut Session,
    limit: usize,
    pause: Duration,
) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let expects_continue = session
        .req_header()
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // curl and others wait a second for this before sending a large body.
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(BodyError::Read)?;
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let chunk = tokio::time::timeout(pause, session.read_request_body())
            .await
            .map_err(|_| BodyError::Read(Error::explain(ReadTimedout, "reading the task body")))?
            .map_err(BodyError::Read)?;
        let Some(chunk) = chunk else { break };
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Handles `POST /task` to the end; the response is always written here.
pub async fn handle(app: &Arc<App>, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let received = Instant::now();
    let settings = &app.settings;
    let _active = app.drain.track();
    if !lb_authorized(session, settings.lb_key.expose()) {
        ctx.status = 401;
        session.set_keepalive(None);
        return respond::error(session, 401, "Unauthorized", &[]).await;
    }
    let body = match read_body(session, settings.body_limit, settings.client.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            ctx.status = 413;
            session.set_keepalive(None);
            let msg = format!(
                "Request body too large (limit {} bytes)",
                settings.body_limit
            );
            return respond::error(session, 413, &msg, &[]).await;
        }
        Err(BodyError::Read(e)) => return Err(e),
    };
    // From here on `body` is what the Worker receives (see `task::parse_for_worker`).
    let (spec, body) = match task::parse_for_worker(&body, &settings.task_limits) {
        Ok(p) => (p.spec, p.forward),
        Err(msg) => {
            ctx.status = 400;
            return respond::error(session, 400, &msg, &[]).await;
        }
    };
    let Some(worker_key) = session.req_header().headers.get("x-wr-auth").cloned() else {
        ctx.status = 400;
        let msg = "Missing x-wr-auth header (worker AUTH_KEY) in request";
        return respond::error(session, 400, msg, &[]).await;
    };
    let task_id = next_task_id();
    ctx.task_id = Some(task_id.clone());
    let record = app.board.open(&task_id, &spec);
    let headers = ForwardHeaders::new(
        session.req_header(),
        worker_key,
        settings.lb_key.expose(),
        &task_id,
    );
    let deadline = received + settings.task_timeout;
    let admission = match admit(app, &spec, deadline).await {
        Ok(a) => a,
        Err(e) => return fail(app, session, ctx, &record, &spec, &e).await,
    };
    if let Err(e) = hold_queued_bytes(app, &admission, &record, body.len()) {
        drop(admission);
        return fail(app, session, ctx, &record, &spec, &e).await;
    }
    if spec.mode == Mode::Webhook {
        let accepted = super::webhook::Accepted {
            record,
            spec,
            admission,
            headers,
            body,
            deadline,
        };
        return super::webhook::accept(app, session, ctx, accepted).await;
    }
    let delivery = app
        .dispatcher
        .deliver(&spec, admission, &headers, &body, deadline, &record);
    let client_gone = async {
        // Resolves only if the client closes its connection (or misbehaves).
        let _ = session.as_downstream_mut().read_body_or_idle(true).await;
    };
    let outcome = tokio::select! {
        d = delivery => Some(d),
        _ = client_gone => None,
        _ = app.drain.aborted() => Some(Err(TaskError::ShuttingDown)),
    };
    match outcome {
        None => {
            log::info!("task {task_id}: client disconnected before the Worker answered");
            ctx.status = 499;
            let why = "client disconnected before the Worker answered";
            finish(
                &app.board,
                &record,
                &spec,
                true,
                TaskState::Failed,
                499,
                "client_gone",
                Some(why.into()),
            );
            Error::e_explain(
                ConnectionClosed,
                "client disconnected while its task was pending",
            )
        }
        Some(Err(e)) => fail(app, session, ctx, &record, &spec, &e).await,
        Some(Ok(delivered)) => Box::pin(relay(app, session, ctx, &record, &spec, delivered)).await,
    }
}

/// Admits a task. Right after start-up (an upgrade hands the listeners over before
/// the first polls), "no Worker" waits for the first discovery round instead of
/// refusing a task that a Worker about to be discovered could run.
pub(super) async fn admit(
    app: &App,
    spec: &TaskSpec,
    deadline: Instant,
) -> Result<crate::scheduler::Acquire, TaskError> {
    match app.dispatcher.admit(spec) {
        Err(TaskError::NoWorker(_)) if !app.registry.is_warm() => {
            app.registry.wait_warm(deadline).await;
            app.dispatcher.admit(spec)
        }
        other => other,
    }
}

/// A task that must wait for a slot reserves its body's bytes in the queued-bytes
/// budget until it leaves the queue; over budget it is refused like a full queue.
fn hold_queued_bytes(
    app: &App,
    admission: &crate::scheduler::Acquire,
    record: &TaskHandle,
    bytes: usize,
) -> Result<(), TaskError> {
    if matches!(admission, crate::scheduler::Acquire::Ready(_)) {
        return Ok(());
    }
    let reserved = app
        .queued_bytes
        .try_reserve(bytes)
        .ok_or(TaskError::QueueFull)?;
    record.hold_while_queued(reserved);
    Ok(())
}

/// Closes a task's record and counts it. `known` says the group and function exist
/// in the Worker list, so they may be used as label values.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
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
        .with_label_values(&[group, outcome])
        .observe(seconds);
    board.observe(seconds, state != TaskState::Completed);
}

/// Closes the record of a task that ended without a Worker's answer.
pub(super) fn finish_failed(
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

pub(super) async fn fail(
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
    respond::error(session, e.status(), &message, &extra).await
}

/// State and outcome of a task the Worker answered with `status`.
pub(super) fn answered(status: u16) -> (TaskState, &'static str) {
    if status < 400 {
        (TaskState::Completed, "ok")
    } else {
        (TaskState::Failed, "worker_error")
    }
}

/// Relays the Worker's status, headers and body chunks as they arrive.
async fn relay(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
    delivered: Delivered<'_>,
) -> Result<()> {
    let task_id = record.id();
    let task_id = task_id.as_str();
    let Delivered {
        lease,
        mut exchange,
        attempts,
    } = delivered;
    let mut header = exchange.header().clone();
    crate::dispatch::strip_response_hop_headers(&mut header);
    header.insert_header("x-andera-task-id", task_id)?;
    if session.req_header().version < http::Version::HTTP_11 {
        // HTTP/1.0 has no chunked encoding: the answer ends when the connection closes.
        header.remove_header("transfer-encoding");
    }
    ctx.status = header.status.as_u16();
    // One line per task, like an access log: id, route, answer, Worker, attempts.
    log::info!(
        "task {task_id} {}/{} c{} p{} {}: {} by {} (attempt {attempts})",
        spec.group,
        spec.function,
        spec.contract,
        spec.priority,
        spec.mode.as_str(),
        ctx.status,
        lease.url()
    );
    if ctx.status == 401 {
        return worker_refused_key(app, session, record, spec, lease, exchange).await;
    }
    let (state, outcome) = answered(ctx.status);
    let status = ctx.status;
    let client_gone = |e: Box<Error>| {
        finish(
            &app.board,
            record,
            spec,
            true,
            TaskState::Failed,
            499,
            "client_gone",
            Some(e.to_string()),
        );
        e
    };
    let send = Some(app.settings.client.send_timeout);
    respond::within(send, session.write_response_header(Box::new(header), false))
        .await
        .map_err(client_gone)?;
    loop {
        match exchange.next_chunk().await {
            Ok(Some(mut chunk)) => {
                // In slices, so that the send timeout measures progress, not whole chunks.
                while !chunk.is_empty() {
                    let piece = chunk.split_to(chunk.len().min(SEND_SLICE));
                    respond::within(send, session.write_response_body(Some(piece), false))
                        .await
                        .map_err(client_gone)?;
                }
            }
            Ok(None) => break,
            Err(e) => {
                // The header is already out: all we can do is cut the response short.
                log::warn!(
                    "task {task_id}: worker {} failed mid-response: {e}",
                    lease.url()
                );
                app.dispatcher.attempt_failed(&lease, &e);
                let status = if e.is_timeout() { 504 } else { 502 };
                ctx.status = status;
                let why = Some(format!("failed mid-response: {e}"));
                finish(
                    &app.board,
                    record,
                    spec,
                    true,
                    TaskState::Failed,
                    status,
                    "worker_failed",
                    why,
                );
                return Error::e_explain(ConnectionClosed, "worker failed mid-response");
            }
        }
    }
    exchange.finish().await;
    drop(lease);
    finish(&app.board, record, spec, true, state, status, outcome, None);
    respond::within(send, session.write_response_body(None, true)).await
}

/// What a client is told when the Worker answers `401`: the load balancer accepted
/// its own key (else the client would have had the LB's `401 Unauthorized`), so the
/// Worker refused the `x-wr-auth` key it received as `authorization`.
pub const WORKER_KEY_REJECTED: &str =
    "The Worker rejected the x-wr-auth key: x-wr-auth must be the AUTH_KEY of the Worker group";

/// Most bytes of a Worker's `401` body read for its own `error`.
const REFUSAL_BYTES: usize = 4096;

/// Answers a Worker's `401` as `401 {"error": WORKER_KEY_REJECTED, "workerError": ..}`,
/// so that a wrong Worker key is told apart from a wrong LB key.
async fn worker_refused_key(
    app: &App,
    session: &mut Session,
    record: &TaskHandle,
    spec: &TaskSpec,
    lease: crate::scheduler::Lease,
    mut exchange: crate::upstream::Exchange<'_>,
) -> Result<()> {
    let mut answer = Vec::new();
    let mut whole = false;
    while answer.len() < REFUSAL_BYTES {
        match exchange.next_chunk().await {
            Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
            Ok(None) => {
                whole = true;
                break;
            }
            Err(_) => break,
        }
    }
    if whole {
        exchange.finish().await;
    }
    drop(lease);
    let worker_error = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("error").cloned());
    log::warn!(
        "task {} {}/{}: 401 from the Worker: {WORKER_KEY_REJECTED}",
        record.id(),
        spec.group,
        spec.function
    );
    finish(
        &app.board,
        record,
        spec,
        true,
        TaskState::Failed,
        401,
        "worker_error",
        Some(WORKER_KEY_REJECTED.into()),
    );
    let body = serde_json::json!({ "error": WORKER_KEY_REJECTED, "workerError": worker_error });
    respond::json(session, 401, &body, &[("x-andera-task-id", record.id())]).await
}

#[cfg(test)]
mod tests {
    use super::next_task_id;

    #[test]
    fn task_ids_are_uuid_v7_unique_and_time_ordered() {
        let ids: Vec<String> = (0..1000).map(|_| next_task_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "unique");
        assert_eq!(sorted, ids, "time-ordered within a process");
        let parsed = uuid::Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
    }
}

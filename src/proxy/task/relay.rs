//! Relaying the Worker's answer to the client, within the send timeout, and telling
//! a Worker's refusal of the client's key apart from the load balancer's.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::finish::queue_ms;
use super::outcome::Outcome;
use crate::app::{App, RequestCtx};
use crate::board::TaskHandle;
use crate::dispatch::Delivery;
use crate::reason::Reason;
use crate::respond;
use crate::task::TaskSpec;

/// Largest piece of a Worker's answer written to the client under one send timeout.
const SEND_SLICE: usize = 16 * 1024;

/// Relays the Worker's status, headers and body chunks as they arrive.
pub(super) async fn relay(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
    mut delivery: Delivery<'_>,
) -> Result<()> {
    let task_id = record.id();
    let task_id = task_id.as_str();
    let mut header = delivery.client_head();
    header.insert_header("x-andera-task-id", task_id)?;
    let (name, waited) = queue_ms(app.board(), task_id);
    header.insert_header(name, waited)?;
    if session.req_header().version < http::Version::HTTP_11 {
        // HTTP/1.0 has no chunked encoding: the answer ends when the connection closes.
        header.remove_header("transfer-encoding");
    }
    ctx.status = header.status.as_u16();
    // One line per task, like an access log: id, route, answer, Worker, attempts.
    log::info!(
        "task {task_id} client {} {}/{} c{} p{} {}: {} by {} (attempt {})",
        spec.client_name(),
        spec.group,
        spec.function,
        spec.contract,
        spec.priority,
        spec.mode.as_str(),
        ctx.status,
        delivery.worker(),
        delivery.attempts()
    );
    if ctx.status == 401 {
        // Boxed: the rare path, whose future would otherwise size every relay's.
        return Box::pin(worker_refused_key(app, session, record, spec, delivery)).await;
    }
    let answered = Outcome::answered(ctx.status);
    let client_gone = |e: Box<Error>| {
        record.close(app.board(), spec, Outcome::client_gone(e.to_string()));
        e
    };
    let send = Some(app.settings().client.send_timeout);
    respond::within(send, session.write_response_header(Box::new(header), false))
        .await
        .map_err(client_gone)?;
    // The Worker's last chunk is held back until the record is closed: a client
    // with the whole answer must find its task finished on the board.
    let mut last = None;
    loop {
        match delivery.next_chunk().await {
            Ok(Some(chunk)) if delivery.body_done() => {
                last = Some(chunk);
                break;
            }
            Ok(Some(chunk)) => write_chunk(session, send, chunk)
                .await
                .map_err(client_gone)?,
            Ok(None) => break,
            Err(e) => {
                // The header is already out: all we can do is cut the response short.
                log::warn!(
                    "task {task_id}: worker {} failed mid-response: {e}",
                    delivery.worker()
                );
                let cut = Outcome::cut(e.is_timeout(), format!("failed mid-response: {e}"));
                ctx.status = cut.status();
                record.close(app.board(), spec, cut);
                return Error::e_explain(ConnectionClosed, "worker failed mid-response");
            }
        }
    }
    delivery.finish();
    record.close(app.board(), spec, answered);
    if let Some(chunk) = last {
        write_chunk(session, send, chunk).await?;
    }
    respond::within(send, session.write_response_body(None, true)).await
}

/// Writes a chunk of the Worker's answer in slices, so that the send timeout
/// measures progress, not whole chunks.
async fn write_chunk(
    session: &mut Session,
    send: Option<std::time::Duration>,
    mut chunk: bytes::Bytes,
) -> Result<()> {
    while !chunk.is_empty() {
        let piece = chunk.split_to(chunk.len().min(SEND_SLICE));
        respond::within(send, session.write_response_body(Some(piece), false)).await?;
    }
    Ok(())
}

/// What a client is told when the Worker answers `401`: the load balancer accepted
/// its own key (else the client would have had the LB's `401 Unauthorized`), so the
/// Worker refused the `x-wr-auth` key it received as `authorization`.
pub(crate) const WORKER_KEY_REJECTED: &str =
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
    mut delivery: Delivery<'_>,
) -> Result<()> {
    let mut answer = Vec::new();
    let mut whole = false;
    while answer.len() < REFUSAL_BYTES {
        match delivery.next_chunk().await {
            Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
            Ok(None) => {
                whole = true;
                break;
            }
            Err(_) => break,
        }
    }
    if whole {
        delivery.finish();
    } else {
        drop(delivery);
    }
    let worker_error = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("error").cloned());
    log::warn!(
        "task {} {}/{}: 401 from the Worker: {WORKER_KEY_REJECTED}",
        record.id(),
        spec.group,
        spec.function
    );
    let refused = Outcome::answered(401).detail(WORKER_KEY_REJECTED.into());
    record.close(app.board(), spec, refused);
    let reason = Reason::Unauthorized;
    let body = serde_json::json!({
        "error": WORKER_KEY_REJECTED, "reason": reason.as_str(), "workerError": worker_error,
    });
    let task_id = record.id();
    let extra = [
        reason.header(),
        queue_ms(app.board(), &task_id),
        ("x-andera-task-id", task_id),
    ];
    respond::json(session, 401, &body, &extra).await
}

//! `POST /task`, top to bottom: the checks at the door ([`receive`]: key, body,
//! task, limits), the board record, the edge's input check ([`edge`]),
//! [`admission`], dispatch to a Worker, [`relay`] its answer, [`finish`] the record
//! (or answer a prompt JSON error).

mod admission;
mod body;
mod compat;
mod edge;
mod finish;
mod outcome;
mod receive;
mod relay;

pub(crate) use admission::admit;
pub(crate) use admission::next_task_id;
pub(crate) use finish::{fail, queue_ms};
pub(crate) use outcome::Outcome;
pub(crate) use relay::WORKER_KEY_REJECTED;

use admission::hold_queued_bytes;
use receive::{receive, Received};
use relay::relay;

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::time::Instant;

use crate::app::{App, RequestCtx};
use crate::dispatch::{ForwardHeaders, Outbound, TaskError};
use crate::routes::{idempotent, task_control};
use crate::task::{self, Mode};

/// Handles `POST /task` to the end; the response is always written here.
///
/// This future lives as long as its task, and most tasks spend that time waiting
/// for a slot: the steps that run before the wait or only on a rare path (the
/// checks at the door, an idempotent repeat, a failure, a cancellation, the
/// webhook hand-over) are boxed, so that their states, not live while the task
/// waits, do not size it (an async fn is as large as its largest state).
pub(crate) async fn handle(
    app: &Arc<App>,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let received = Instant::now();
    let _active = app.drain().track();
    // Taken apart at once: a whole `Received` kept beside its moved-out fields would
    // hold its 248 bytes in this future for as long as the task waits.
    let Some(Received {
        spec,
        body,
        worker_key,
        limit,
        idempotency,
        negative_priority,
    }) = Box::pin(receive(app, session, ctx)).await?
    else {
        return Ok(());
    };
    let task_id = next_task_id();
    ctx.task_id = Some(task_id.clone());
    // A repeat of an Idempotency-Key starts nothing new (routes::idempotent).
    let repeat = idempotent::repeat(app, session, ctx, idempotency, &task_id, spec.mode);
    let idempotency = match Box::pin(repeat).await? {
        idempotent::Repeat::First(claim) => claim,
        idempotent::Repeat::Answered => return Ok(()),
    };
    if let Some(p) = negative_priority {
        compat::warn_negative_priority(&task_id, p);
    }
    let record = open_record(app, session, ctx, &task_id, &spec, received);
    // Input checked at the edge: the Worker's own refusal, without a slot (edge.rs).
    if let Some(message) = edge::refusal(app, &spec, &body) {
        return Box::pin(edge::refuse(app, session, ctx, &record, &spec, message)).await;
    }
    // DELETE /task/{id} fires this while the task waits or runs (routes::task_control).
    let cancel = app.cancels().register(&task_id, ctx.client.clone());
    let settings = app.settings();
    let headers = ForwardHeaders::new(
        session.req_header(),
        worker_key,
        settings.lb_key.expose(),
        &task_id,
        &settings.upstream.forward_headers,
    );
    let deadline = received + limit;
    let admission = match admit(app, &spec, deadline).await {
        Ok(a) => a,
        Err(e) => return Box::pin(fail(app, session, ctx, &record, &spec, &e)).await,
    };
    if let Err(e) = hold_queued_bytes(app, &admission, &record, body.len()) {
        drop(admission);
        return Box::pin(fail(app, session, ctx, &record, &spec, &e)).await;
    }
    cancel.waits_at(&admission);
    if spec.mode == Mode::Webhook {
        let accepted = super::webhook::Accepted {
            record,
            spec,
            admission,
            headers,
            body,
            deadline,
            cancel,
            idempotency,
        };
        return Box::pin(super::webhook::accept(app, session, ctx, accepted)).await;
    }
    let outbound = Outbound {
        spec: &spec,
        headers: &headers,
        body: &body,
        deadline,
        task: &record,
    };
    let delivery = app.dispatcher().deliver(outbound, admission, None);
    let client_gone = async {
        // Resolves only if the client closes its connection (or misbehaves).
        let _ = session.as_downstream_mut().read_body_or_idle(true).await;
    };
    let outcome = tokio::select! {
        d = delivery => Some(d),
        _ = client_gone => None,
        _ = app.drain().aborted() => Some(Err(TaskError::ShuttingDown)),
        _ = cancel.cancelled() => return Box::pin(task_control::answer_cancelled(app, session, ctx, &record, &spec)).await,
    };
    match outcome {
        None => {
            log::info!("task {task_id}: client disconnected before the Worker answered");
            ctx.status = 499;
            let why = "client disconnected before the Worker answered";
            record.close(app.board(), &spec, Outcome::client_gone(why.into()));
            Error::e_explain(
                ConnectionClosed,
                "client disconnected while its task was pending",
            )
        }
        Some(Err(e)) => Box::pin(fail(app, session, ctx, &record, &spec, &e)).await,
        Some(Ok(delivered)) => {
            let relayed = Box::pin(relay(app, session, ctx, &record, &spec, delivered));
            tokio::select! {
                r = relayed => r,
                _ = cancel.cancelled() => task_control::cut_cancelled(app, ctx, &record, &spec),
            }
        }
    }
}

/// Opens the task's record on the board, with its client and, when tracing is on,
/// its SERVER span from its receipt (the span ends when the record is closed).
fn open_record(
    app: &App,
    session: &Session,
    ctx: &mut RequestCtx,
    task_id: &str,
    spec: &task::TaskSpec,
    received: Instant,
) -> crate::board::TaskHandle {
    let mut record = app.board().open(task_id, spec);
    if let Some(name) = &ctx.client {
        record.client(name);
    }
    if let Some(tracer) = crate::traces::tracer() {
        let now = std::time::SystemTime::now();
        let received_at = now.checked_sub(received.elapsed()).unwrap_or(now);
        let headers = &session.req_header().headers;
        let trace = crate::traces::TaskTrace::start(tracer, headers, spec, task_id, received_at);
        if app.access_log().is_some() {
            ctx.trace_id = Some(trace.trace_id());
        }
        record.traced(trace);
    }
    record
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

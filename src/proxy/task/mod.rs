//! `POST /task`, top to bottom: authenticate, [`admission`], read and validate the
//! [`body`], dispatch to a Worker, [`relay`] its answer, [`finish`] the record (or
//! answer a prompt JSON error).

mod admission;
mod body;
mod compat;
mod edge;
mod finish;
mod outcome;
mod relay;

pub(crate) use admission::admit;
pub(crate) use admission::next_task_id;
pub(crate) use finish::{fail, queue_ms};
pub(crate) use outcome::Outcome;
pub(crate) use relay::WORKER_KEY_REJECTED;

use admission::hold_queued_bytes;
use body::{read_body, BodyError};
use relay::relay;

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::time::Instant;

use crate::app::{App, RequestCtx};
use crate::dispatch::{ForwardHeaders, Outbound, TaskError};
use crate::reason::Reason;
use crate::respond;
use crate::routes::{idempotent, task_control};
use crate::task::{self, Mode};

/// Handles `POST /task` to the end; the response is always written here.
///
/// This future lives as long as its task, and most tasks spend that time waiting
/// for a slot: the steps that run before the wait or only on a rare path (the
/// refusals, the body read, an idempotent repeat, a failure, a cancellation, the
/// webhook hand-over) are boxed, so that their states, not live while the task
/// waits, do not size it (an async fn is as large as its largest state).
pub(crate) async fn handle(
    app: &Arc<App>,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let received = Instant::now();
    let settings = app.settings();
    let _active = app.drain().track();
    // The connection stays open after these when the unread body is small
    // (routes::guard).
    let Some(principal) = app.principal(session) else {
        ctx.status = 401;
        return Box::pin(respond::refuse(
            session,
            401,
            Reason::Unauthorized,
            "Unauthorized",
            &[],
        ))
        .await;
    };
    let Some(client) = principal.client else {
        ctx.status = 403;
        return Box::pin(respond::forbidden(
            session,
            "This key opens operator pages; it cannot run tasks",
        ))
        .await;
    };
    ctx.client = Some(client.name.clone());
    let body = match Box::pin(read_body(
        session,
        settings.tasks.body_limit,
        settings.client.body_timeout,
    ))
    .await
    {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            ctx.status = 413;
            session.set_keepalive(None);
            let msg = format!(
                "Request body too large (limit {} bytes)",
                settings.tasks.body_limit
            );
            return Box::pin(respond::refuse(
                session,
                413,
                Reason::BodyTooLarge,
                &msg,
                &[],
            ))
            .await;
        }
        Err(BodyError::Read(e)) => return Err(e),
    };
    // Idempotency-Key: digests of the key and of the body as the client sent it.
    let idempotency = match idempotent::idempotency_of(session, &client.name, &body) {
        Ok(i) => i,
        Err(msg) => {
            ctx.status = 400;
            return Box::pin(respond::refuse(session, 400, Reason::BadRequest, msg, &[])).await;
        }
    };
    // From here on `body` is what the Worker receives (see `task::parse_for_worker`).
    let (mut spec, body, negative_priority) =
        match task::parse_for_worker(&body, &settings.tasks.limits) {
            Ok(p) => (p.spec, p.forward, p.negative_priority),
            Err(why) => {
                ctx.status = 400;
                let msg = why.to_string();
                return Box::pin(respond::refuse(session, 400, Reason::BadRequest, &msg, &[]))
                    .await;
            }
        };
    // Blank is missing, as for the original (Node trims header values).
    let worker_key = session.req_header().headers.get("x-wr-auth");
    let Some(worker_key) = worker_key.filter(|k| !k.as_bytes().trim_ascii().is_empty()) else {
        ctx.status = 400;
        let msg = "Missing x-wr-auth header (worker AUTH_KEY) in request";
        return Box::pin(respond::refuse(session, 400, Reason::BadRequest, msg, &[])).await;
    };
    let worker_key = worker_key.clone();
    let limit = match admission::task_limit(
        session.req_header().headers.get(admission::TIMEOUT_HEADER),
        settings.tasks.timeout,
    ) {
        Ok(l) => l,
        Err(msg) => {
            ctx.status = 400;
            return Box::pin(respond::refuse(session, 400, Reason::BadRequest, msg, &[])).await;
        }
    };
    spec.priority = crate::auth::quota::clamp_priority(&client, spec.priority);
    // Its share of the queue and its max_running / max_queued (scheduler::fair).
    spec.client = Some(task::TaskClient(client.clone()));
    if let Err(wait) = app.rate_limits().take(&client, std::time::Instant::now()) {
        ctx.status = 429;
        crate::metrics::METRICS
            .client_refused
            .with_label_values(&[&client.name, "client_rate"])
            .inc();
        let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
        let msg = format!(
            "Client {:?} is over its rate of {} task(s) a second",
            &*client.name, client.rate
        );
        let extra = [("retry-after", retry.to_string())];
        return Box::pin(respond::refuse(
            session,
            429,
            Reason::ClientRate,
            &msg,
            &extra,
        ))
        .await;
    }
    let task_id = next_task_id();
    ctx.task_id = Some(task_id.clone());
    // A repeat of an Idempotency-Key starts nothing new (routes::idempotent).
    let idempotency = match Box::pin(idempotent::repeat(
        app,
        session,
        ctx,
        idempotency,
        &task_id,
        spec.mode,
    ))
    .await?
    {
        idempotent::Repeat::First(claim) => claim,
        idempotent::Repeat::Answered => return Ok(()),
    };
    if let Some(p) = negative_priority {
        compat::warn_negative_priority(&task_id, p);
    }
    let mut record = app.board().open(&task_id, &spec);
    if let Some(name) = &ctx.client {
        record.client(name);
    }
    // Tracing on: the task's SERVER span, from its receipt (it ends at its close).
    if let Some(tracer) = crate::traces::tracer() {
        let now = std::time::SystemTime::now();
        let received_at = now.checked_sub(received.elapsed()).unwrap_or(now);
        let headers = &session.req_header().headers;
        let trace = crate::traces::TaskTrace::start(tracer, headers, &spec, &task_id, received_at);
        if app.access_log().is_some() {
            ctx.trace_id = Some(trace.trace_id());
        }
        record.traced(trace);
    }
    // Input checked at the edge: the Worker's own refusal, without a slot (edge.rs).
    if let Some(message) = edge::refusal(app, &spec, &body) {
        return Box::pin(edge::refuse(app, session, ctx, &record, &spec, message)).await;
    }
    // DELETE /task/{id} fires this while the task waits or runs (routes::task_control).
    let cancel = app.cancels().register(&task_id, ctx.client.clone());
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

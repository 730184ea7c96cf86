//! The checks at the door of `POST /task`, in the order a client meets them: its
//! key, the body's size, its `Idempotency-Key`, the task itself, `x-wr-auth`, its
//! time limit and its client's rate. A refusal is answered here.

use std::time::Duration;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::admission;
use super::body::{read_body, BodyError};
use crate::app::{App, RequestCtx};
use crate::reason::Reason;
use crate::respond;
use crate::routes::idempotent;
use crate::task::{self, TaskSpec};

/// A task request that passed every check at the door.
pub(super) struct Received {
    /// The task, its priority clamped and its client set.
    pub(super) spec: TaskSpec,
    /// What the Worker receives (see `task::parse_for_worker`).
    pub(super) body: Bytes,
    /// The `x-wr-auth` key, which the Worker gets as `authorization`.
    pub(super) worker_key: http::HeaderValue,
    /// How long the task may take (`tasks.timeout_ms`, or `x-andera-timeout-ms`).
    pub(super) limit: Duration,
    /// Its `Idempotency-Key`, digested, if it has one.
    pub(super) idempotency: Option<crate::idempotency::Request>,
    /// A negative `priority` the original would have kept, for its warning.
    pub(super) negative_priority: Option<i64>,
}

/// Runs the checks; `None` when the request was refused (and answered).
pub(super) async fn receive(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Option<Received>> {
    let settings = app.settings();
    // The connection stays open after these when the unread body is small
    // (routes::guard).
    let Some(principal) = app.principal(session) else {
        return refuse(session, ctx, 401, Reason::Unauthorized, "Unauthorized", &[]).await;
    };
    let Some(client) = principal.client else {
        let msg = "This key opens operator pages; it cannot run tasks";
        return refuse(session, ctx, 403, Reason::Forbidden, msg, &[]).await;
    };
    ctx.client = Some(client.name.clone());
    let body_limit = settings.tasks.body_limit;
    let body = match read_body(session, body_limit, settings.client.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            session.set_keepalive(None);
            let msg = format!("Request body too large (limit {body_limit} bytes)");
            return refuse(session, ctx, 413, Reason::BodyTooLarge, &msg, &[]).await;
        }
        Err(BodyError::Read(e)) => return Err(e),
    };
    // Idempotency-Key: digests of the key and of the body as the client sent it.
    let idempotency = match idempotent::idempotency_of(session, &client.name, &body) {
        Ok(i) => i,
        Err(msg) => return refuse(session, ctx, 400, Reason::BadRequest, msg, &[]).await,
    };
    // From here on `body` is what the Worker receives (see `task::parse_for_worker`).
    let parsed = match task::parse_for_worker(&body, &settings.tasks.limits) {
        Ok(p) => p,
        Err(why) => {
            let msg = why.to_string();
            return refuse(session, ctx, 400, Reason::BadRequest, &msg, &[]).await;
        }
    };
    // Blank is missing, as for the original (Node trims header values).
    let headers = &session.req_header().headers;
    let worker_key = headers.get("x-wr-auth").cloned();
    let Some(worker_key) = worker_key.filter(|k| !k.as_bytes().trim_ascii().is_empty()) else {
        let msg = "Missing x-wr-auth header (worker AUTH_KEY) in request";
        return refuse(session, ctx, 400, Reason::BadRequest, msg, &[]).await;
    };
    let timeout = headers.get(admission::TIMEOUT_HEADER);
    let limit = match admission::task_limit(timeout, settings.tasks.timeout) {
        Ok(l) => l,
        Err(msg) => return refuse(session, ctx, 400, Reason::BadRequest, msg, &[]).await,
    };
    let mut spec = parsed.spec;
    spec.priority = crate::auth::quota::clamp_priority(&client, spec.priority);
    // Its share of the queue and its max_running / max_queued (scheduler::fair).
    spec.client = Some(task::TaskClient(client.clone()));
    if let Err(wait) = app.rate_limits().take(&client, std::time::Instant::now()) {
        crate::metrics::METRICS
            .clients
            .refused
            .with_label_values(&[&client.name, "client_rate"])
            .inc();
        let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
        let msg = format!(
            "Client {:?} is over its rate of {} task(s) a second",
            &*client.name, client.rate
        );
        let extra = [("retry-after", retry.to_string())];
        return refuse(session, ctx, 429, Reason::ClientRate, &msg, &extra).await;
    }
    Ok(Some(Received {
        spec,
        body: parsed.forward,
        worker_key,
        limit,
        idempotency,
        negative_priority: parsed.negative_priority,
    }))
}

/// Answers a refusal at the door with `{error, reason}` and `status`.
async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    reason: Reason,
    message: &str,
    extra: &[(&'static str, String)],
) -> Result<Option<Received>> {
    ctx.status = status;
    respond::refuse(session, status, reason, message, extra)
        .await
        .map(|_| None)
}

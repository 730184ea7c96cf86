//! The original's `/health` and `/logs` (both ports), and the admin port's readiness.

use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use crate::app::App;
use crate::auth::lb_authorized;
use crate::{logring, respond};

/// `GET /health`: `{"status"}` without a key; Workers, invalid Workers and internal
/// components with one. Returns the status written.
pub async fn health(app: &App, session: &mut Session) -> Result<u16> {
    let status = if app.is_draining() {
        "draining"
    } else {
        "ready"
    };
    if !lb_authorized(session, app.settings.lb_key.expose()) {
        respond::json(session, 200, &json!({ "status": status }), &[]).await?;
        return Ok(200);
    }
    let (workers, invalid) = app.registry.snapshot();
    let (registered, up) = app.registry.counts();
    let queue = app.dispatcher.scheduler.queue_snapshot();
    let body = json!({
        "status": status,
        "workers": workers,
        "invalidWorkers": invalid,
        "services": {
            // The original's keys, for monitors that read them: its Redis and BullMQ
            // roles (task store, queue) are played in process here.
            "redis": {
                "status": if app.settings.journal.is_some() && app.journal.get().is_none() { "down" } else { "ok" },
                "engine": app.journal.get().map_or("in-process", |j| j.engine()),
                "note": "the queue is in process; webhook tasks persist in the task journal when one is configured (tasks.journal: a file, or redis:// for a queue shared by several instances)",
                "journal": app.settings.journal.as_ref().map(|l| l.to_string()),
            },
            "bullmq": {
                "status": if app.is_draining() { "draining" } else { "ok" },
                "engine": "in-process",
                "waiting": queue.depth,
                "maxWaiting": app.settings.max_queued,
            },
            "scheduler": { "status": if app.is_draining() { "draining" } else { "up" }, "queued": queue.depth, "maxQueued": app.settings.max_queued },
            "discovery": { "status": "up", "workers": registered, "available": up },
        },
        "queue": {
            "depth": queue.depth,
            "bytes": app.queued_bytes.used(),
            "maxBytes": app.queued_bytes.max(),
            "byPriority": queue.by_priority.iter().map(|(p, n)| json!({"priority": p, "count": n})).collect::<Vec<_>>(),
        },
    });
    respond::json(session, 200, &body, &[]).await?;
    Ok(200)
}

/// `GET /logs`: the last `MAX_LOGS` lines, oldest first; the LB key is required.
pub async fn logs(app: &App, session: &mut Session) -> Result<u16> {
    if !lb_authorized(session, app.settings.lb_key.expose()) {
        respond::error(session, 401, "Unauthorized", &[]).await?;
        return Ok(401);
    }
    respond::json(
        session,
        200,
        &json!({ "logs": logring::ring().lines() }),
        &[],
    )
    .await?;
    Ok(200)
}

/// `GET /ready` (admin port): 200 while serving, 503 once draining, for load
/// balancers and orchestrators in front.
pub async fn ready(app: &App, session: &mut Session) -> Result<u16> {
    let ready = !app.is_draining();
    let (_, up) = app.registry.counts();
    let status = if ready { 200 } else { 503 };
    let body = json!({"ready": ready, "draining": app.is_draining(), "workersAvailable": up});
    respond::json(session, status, &body, &[]).await?;
    Ok(status)
}

//! The original's `/health` and `/logs` (both ports), and the admin port's readiness.

use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use crate::app::{App, OperatorAccess};
use crate::auth::keys::Role;
use crate::journal::JournalState;
use crate::{logring, respond};

/// `GET /health`: `{"status"}` without a key; Workers, invalid Workers and internal
/// components with one. Returns the status written.
pub(crate) async fn health(app: &App, session: &mut Session) -> Result<u16> {
    let status = if app.is_draining() {
        "draining"
    } else {
        "ready"
    };
    // Every Worker, tag and load is operator detail: a client's key (or a viewer's)
    // gets the original's public answer, as a request without a key does.
    if !matches!(
        app.operator_access(session, Role::Admin),
        OperatorAccess::Granted(_)
    ) {
        respond::json(session, 200, &json!({ "status": status }), &[]).await?;
        return Ok(200);
    }
    let (workers, invalid) = app.registry().snapshot();
    let (registered, up) = app.registry().counts();
    let queue = app.scheduler().queue_snapshot();
    let body = json!({
        "status": status,
        "workers": workers,
        "invalidWorkers": invalid,
        // The original's keys and values, for monitors that read them (its Redis
        // and BullMQ roles are played in process here); our components beside them.
        "services": {
            "redis": if journal_ready(app) { "ready" } else { "error" },
            "bullmq": if app.is_draining() { "error" } else { "ready" },
        },
        "components": {
            "journal": journal_component(app),
            // Slots and queue shared through Redis (`cluster.redis`), or `off`.
            "cluster": app.cluster().map_or_else(crate::cluster::health_off, |c| c.health()),
            "queue": {
                "status": if app.is_draining() { "draining" } else { "ok" },
                "engine": "in-process",
                "waiting": queue.depth,
                "maxWaiting": app.settings().tasks.max_queued,
            },
            "scheduler": { "status": if app.is_draining() { "draining" } else { "up" }, "queued": queue.depth, "maxQueued": app.settings().tasks.max_queued },
            // `dns`: each `dns+` Worker list entry and its last lookup (registry/dns.rs).
            "discovery": { "status": "up", "workers": registered, "available": up, "dns": app.registry().dns.snapshot() },
        },
        "queue": {
            "depth": queue.depth,
            "bytes": app.queued_bytes().used(),
            "maxBytes": app.queued_bytes().max(),
            "byPriority": queue.by_priority.iter().map(|(p, n)| json!({"priority": p, "count": n})).collect::<Vec<_>>(),
        },
    });
    respond::json(session, 200, &body, &[]).await?;
    Ok(200)
}

/// True when webhook tasks can be kept now: no journal is configured, or it is
/// open and `ok`.
fn journal_ready(app: &App) -> bool {
    match (&app.settings().tasks.journal, app.journal()) {
        (None, _) => true,
        (Some(_), Some(j)) => j.health().state() == JournalState::Ok,
        (Some(_), None) => false,
    }
}

/// The journal's state on keyed `/health`: `ok`, `full`, `unavailable`,
/// `opening` (configured, not open yet) or `none` (not configured).
fn journal_component(app: &App) -> serde_json::Value {
    let Some(location) = &app.settings().tasks.journal else {
        return json!({
            "status": "none",
            "engine": "in-process",
            "note": "no task journal: webhook tasks live in memory (tasks.journal: a file, or redis:// for a queue shared by several instances)",
        });
    };
    let (status, detail, engine) = match app.journal() {
        Some(j) => {
            let (state, detail) = j.health().get();
            (state.as_str(), detail, j.engine())
        }
        None => ("opening", String::new(), ""),
    };
    json!({
        "status": status,
        "engine": engine,
        "location": location.to_string(),
        "detail": (!detail.is_empty()).then_some(detail),
    })
}

/// `GET /logs`: the last `MAX_LOGS` lines, oldest first; the LB key is required.
pub(crate) async fn logs(app: &App, session: &mut Session) -> Result<u16> {
    if let Err(status) = super::require_operator(app, session, Role::Admin).await? {
        return Ok(status);
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

/// `GET /ready` (admin port): 200 while serving, 503 once draining or while the
/// task journal cannot keep webhook tasks (full, unavailable, still opening), for
/// load balancers and orchestrators in front.
pub(crate) async fn ready(app: &App, session: &mut Session) -> Result<u16> {
    let journal = journal_ready(app);
    let ready = !app.is_draining() && journal;
    let (_, up) = app.registry().counts();
    let status = if ready { 200 } else { 503 };
    let body = json!({"ready": ready, "draining": app.is_draining(), "workersAvailable": up, "journal": journal_component(app)["status"]});
    respond::json(session, status, &body, &[]).await?;
    Ok(status)
}

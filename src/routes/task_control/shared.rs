//! `GET`/`DELETE /task/{id}` for a webhook task this instance does not hold: with the
//! Redis engine another instance accepted it, and the shared queue knows it.

use std::time::{Duration, UNIX_EPOCH};

use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::{json, Value};

use crate::app::App;
use crate::journal::{JournalError, SharedCancel, SharedTask};
use crate::reason::Reason;
use crate::respond;

/// Task `id` in the shared queue, if the journal is one (Redis engine) and has it.
pub(super) async fn find(app: &App, id: &str) -> Result<Option<SharedTask>, JournalError> {
    match app.journal_within(Duration::ZERO).await {
        Some(journal) if journal.is_shared_queue() => journal.find_shared(id).await,
        _ => Ok(None),
    }
}

/// The `GET /task/{id}` answer for a task another instance holds: what the shared
/// queue says (`queued`, or `running` once a Worker has it).
pub(super) fn status_json(found: &SharedTask) -> Value {
    let t = &found.task;
    let body: Value = serde_json::from_slice(&t.body).unwrap_or(Value::Null);
    let created = UNIX_EPOCH + Duration::from_millis(t.accepted_ms);
    json!({
        "id": t.id,
        "state": if found.sent { "running" } else { "queued" },
        "client": t.client,
        "group": body["group"],
        "function": body["function"],
        "mode": body.get("mode").cloned().unwrap_or_else(|| json!("webhook")),
        "priority": t.priority,
        "createdAt": humantime::format_rfc3339_millis(created).to_string(),
    })
}

/// `503 journal_unavailable`: the shared queue cannot be asked now.
pub(super) async fn unavailable(session: &mut Session, e: &JournalError) -> Result<u16> {
    let message = format!("Cannot look the task up in the shared queue: {e}");
    respond::refuse(session, 503, Reason::JournalUnavailable, &message, &[]).await?;
    Ok(503)
}

/// Cancels task `id` in the shared queue if it is there and `sees` says the caller
/// may see a task of its client: `None` when it is not (or not the caller's).
pub(super) async fn cancel(
    app: &App,
    id: &str,
    sees: impl Fn(Option<&str>) -> bool,
) -> Result<Option<SharedCancel>, JournalError> {
    let found = find(app, id).await?;
    let (Some(_), Some(journal)) = (
        found.filter(|t| sees(t.task.client.as_deref())),
        app.journal_within(Duration::ZERO).await,
    ) else {
        return Ok(None);
    };
    match journal.cancel_shared(id).await? {
        // It ended between the two looks.
        SharedCancel::Gone => Ok(None),
        done => Ok(Some(done)),
    }
}

/// The answer to a cancel done in the shared queue: `200` cancelled, or `409` for
/// a task running on an instance that did not hear.
pub(super) async fn answer(session: &mut Session, id: &str, done: SharedCancel) -> Result<u16> {
    if done == SharedCancel::Running(false) {
        let body = json!({
            "error": "Task is running on an instance that does not answer: it cannot be cancelled",
            "id": id,
            "state": "running",
        });
        respond::json(session, 409, &body, &[]).await?;
        return Ok(409);
    }
    log::info!("task {id}: cancelled in the shared queue");
    let body = json!({"id": id, "state": "cancelled"});
    respond::json(session, 200, &body, &[]).await?;
    Ok(200)
}

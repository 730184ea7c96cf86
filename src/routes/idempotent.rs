//! `Idempotency-Key` on `POST /task` (issue #23): a repeat answered without
//! starting anything (see [`crate::idempotency`] for what is kept and for how long).
//! With the Redis engine a webhook task's key is also taken in Redis, so every
//! instance knows it.

use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use crate::app::{App, RequestCtx};
use crate::idempotency::{self, Seen};
use crate::journal::{KeyHolder, StoredKey};
use crate::reason::Reason;
use crate::respond;
use crate::task::Mode;

/// The request's `Idempotency-Key` as digests, if it sent one; a bad key is an error.
pub(crate) fn idempotency_of(
    session: &Session,
    client: &str,
    body: &[u8],
) -> Result<Option<idempotency::Request>, &'static str> {
    idempotency::Request::of(&session.req_header().headers, client, body)
}

/// Puts back the `Idempotency-Key`s the journal kept (SQLite), before the first
/// task is accepted: a repeat after a restart still gets the first answer.
pub(crate) fn restore_keys(app: &App, journal: &crate::journal::Journal) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let keys = journal.restored_keys(app.settings().tasks.idempotency_max_keys);
    for k in &keys {
        let req = idempotency::Request {
            key: k.key.key,
            body: k.key.body,
        };
        let left = std::time::Duration::from_millis(k.key.expires_ms.saturating_sub(now));
        app.idempotency().restore(&req, &k.task_id, left);
    }
    if !keys.is_empty() {
        log::info!("task journal: {} Idempotency-Key(s) kept", keys.len());
    }
}

/// Longest a webhook task's key waits for the journal's kept keys at start-up.
const KEYS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a task with an `Idempotency-Key` goes ahead.
pub(crate) enum Repeat {
    /// The first under its key (or no key): it goes ahead, holding the key.
    First(Option<idempotency::Claim>),
    /// A repeat, answered here.
    Answered,
}

/// Looks a task's `Idempotency-Key` up; answers a repeat: a webhook task's with the
/// first one's `200` and id, a live task's with `409 duplicate_in_progress`, another
/// body under the same key with `422`.
pub(crate) async fn repeat(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    req: Option<idempotency::Request>,
    task_id: &str,
    mode: Mode,
) -> Result<Repeat> {
    let Some(req) = req else {
        return Ok(Repeat::First(None));
    };
    if mode == Mode::Webhook && app.settings().tasks.journal.is_some() {
        // The keys the journal kept are put back as it opens (start-up).
        let _ = app.journal_within(KEYS_WAIT).await;
    }
    let seen = match app.idempotency().begin(&req, task_id) {
        Seen::New(claim) => match shared(app, &req, task_id, mode).await {
            None => return Ok(Repeat::First(Some(claim))),
            // Another instance holds the key: this one lets it go.
            Some(seen) => seen,
        },
        seen => seen,
    };
    let first = match seen {
        Seen::New(_) => return Ok(Repeat::First(None)),
        Seen::Accepted(first) => {
            ctx.status = 200;
            let body = json!({"success": true, "message": "Task accepted, result will be sent to webhook"});
            let extra = [
                ("x-andera-task-id", first.clone()),
                ("x-andera-idempotent-replay", "true".to_string()),
            ];
            respond::json(session, 200, &body, &extra).await?;
            first
        }
        Seen::InProgress(first) => {
            ctx.status = 409;
            let message = "A task with this Idempotency-Key is still in progress";
            let body = json!({"error": message, "reason": Reason::DuplicateInProgress.as_str(), "id": first});
            let extra = [
                Reason::DuplicateInProgress.header(),
                ("x-andera-task-id", first.clone()),
            ];
            respond::json(session, 409, &body, &extra).await?;
            first
        }
        Seen::Mismatch(first) => {
            ctx.status = 422;
            let message = "This Idempotency-Key was used with another body";
            respond::refuse(session, 422, Reason::BadRequest, message, &[]).await?;
            first
        }
    };
    log::info!(
        "task {first}: a repeat of its Idempotency-Key answered {}",
        ctx.status
    );
    ctx.task_id = Some(first);
    Ok(Repeat::Answered)
}

/// Who holds a new webhook task's key in a journal shared by instances (Redis),
/// as a local lookup would say; `None` when this task takes it (or no journal is
/// shared: then the local store decides). A Redis error lets the task go ahead:
/// its `XADD` then fails too, and it is refused with `503`.
async fn shared(app: &App, req: &idempotency::Request, task_id: &str, mode: Mode) -> Option<Seen> {
    let journal = app.journal().filter(|j| j.is_shared_queue())?;
    if mode != Mode::Webhook {
        return None;
    }
    let key = StoredKey {
        key: req.key,
        body: req.body,
        expires_ms: 0,
    };
    match journal.take_key(&key, task_id).await {
        Ok(KeyHolder::Mine) => None,
        Ok(KeyHolder::Accepted(first)) => Some(Seen::Accepted(first)),
        Ok(KeyHolder::Pending(first)) => Some(Seen::InProgress(first)),
        Ok(KeyHolder::OtherBody(first)) => Some(Seen::Mismatch(first)),
        Err(e) => {
            log::warn!("task {task_id}: Idempotency-Key not checked in the journal: {e}");
            None
        }
    }
}

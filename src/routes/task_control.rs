//! Task control for clients (issue #23): `GET /task/{id}` looks a task up and
//! `DELETE /task/{id}` cancels it. A client sees only its own tasks: another
//! client's id is `404`, as an unknown one is, so ids cannot be probed. On the
//! admin port an operator key may look up (viewer or admin) and cancel (admin)
//! any task; the task board's cancel action is `DELETE /bull/api/tasks/{id}`.

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use super::Port;
use crate::app::{App, RequestCtx};
use crate::auth::keys::Role;
use crate::board::{TaskHandle, TaskState};
use crate::cancel::CancelOutcome;
use crate::proxy::task::Outcome;
use crate::reason::Reason;
use crate::respond;
use crate::task::TaskSpec;

mod shared;

/// The status a waiting client of a cancelled sync or stream task gets: `409`
/// Conflict, the task it waits for was taken back. Not a `5xx`, which clients
/// retry by themselves, nor nginx's `499`, which means the client itself left.
pub(crate) const CANCELLED_STATUS: u16 = 409;

/// Longest task id looked up; ours are 36 bytes.
const MAX_ID: usize = 128;

/// What a `/task/{id}` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskCall {
    /// `GET` (or `HEAD`): the task's state.
    Get,
    /// `DELETE`: cancel it.
    Delete,
    /// Anything else: `405` with `Allow: GET, DELETE`.
    WrongMethod,
}

impl TaskCall {
    /// The call a method asks for.
    pub(crate) fn of(method: &str) -> TaskCall {
        match method {
            "GET" | "HEAD" => TaskCall::Get,
            "DELETE" => TaskCall::Delete,
            _ => TaskCall::WrongMethod,
        }
    }
}

/// The id in `/task/{id}` (the prefix matched case-insensitively, as `/task` is;
/// one trailing slash ignored), if `path` is one: not empty, no further `/`.
pub(crate) fn task_id_of(path: &str) -> Option<&str> {
    let prefix = path.get(..6)?;
    if !prefix.eq_ignore_ascii_case("/task/") {
        return None;
    }
    let rest = &path[6..];
    let id = rest.strip_suffix('/').unwrap_or(rest);
    (!id.is_empty() && id.len() <= MAX_ID && !id.contains('/')).then_some(id)
}

/// Whose tasks a request may see.
#[derive(Debug, Clone)]
enum Scope {
    /// Any task: an operator key on the admin port.
    Any,
    /// Only this client's.
    Client(Arc<str>),
}

impl Scope {
    /// The client name a cancel is limited to (`None`: any).
    fn client(&self) -> Option<&str> {
        match self {
            Scope::Any => None,
            Scope::Client(c) => Some(c),
        }
    }

    fn sees(&self, owner: Option<&str>) -> bool {
        self.client().is_none_or(|c| owner == Some(c))
    }
}

/// Answers `/task/{id}` and returns the status written.
pub(crate) async fn serve(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    port: Port,
    id: &str,
    call: TaskCall,
) -> Result<u16> {
    if call == TaskCall::WrongMethod {
        let allow = ("allow", "GET, DELETE".into());
        respond::error(session, 405, "Use GET or DELETE /task/{id}", &[allow]).await?;
        return Ok(405);
    }
    let need = match call {
        TaskCall::Delete => Role::Admin,
        _ => Role::Viewer,
    };
    let Some(principal) = app.principal(session) else {
        respond::refuse(session, 401, Reason::Unauthorized, "Unauthorized", &[]).await?;
        return Ok(401);
    };
    let operator = port == Port::Admin && principal.role.is_some_and(|r| r >= need);
    let scope = match (&principal.client, operator) {
        (_, true) => Scope::Any,
        (Some(client), false) => Scope::Client(client.name.clone()),
        (None, false) => {
            let message = match call {
                TaskCall::Delete if port == Port::Admin => "Cancelling a task needs an admin key",
                _ if port == Port::Admin => "This key cannot look tasks up",
                _ => "This key runs no task: look tasks up with a client's key, or an operator key on the admin port",
            };
            respond::forbidden(session, message).await?;
            return Ok(403);
        }
    };
    if let Some(client) = &principal.client {
        ctx.client = Some(client.name.clone());
    }
    ctx.task_id = Some(id.to_string());
    match call {
        TaskCall::Delete => cancel(app, session, id, &scope).await,
        _ => lookup(app, session, id, &scope).await,
    }
}

/// `404` for an unknown task and for another client's.
async fn not_found(session: &mut Session) -> Result<u16> {
    let message = "Unknown task (it may have ended long ago, or never existed)";
    respond::error(session, 404, message, &[]).await?;
    Ok(404)
}

/// `GET /task/{id}`: the task's record on the board, as its client sees it.
async fn lookup(app: &App, session: &mut Session, id: &str, scope: &Scope) -> Result<u16> {
    let found = app
        .board()
        .read(id, |r| scope.sees(r.client_name()).then(|| r.status_json()))
        .flatten();
    let body = match found {
        // `unknown` here may be a task handed to the shared queue (Redis engine),
        // which the shared queue knows better.
        Some(mut body) if body["state"] != "unknown" => {
            if let Some(n) = app.cancels().queue_position(id) {
                body["queuePosition"] = json!(n);
            }
            body
        }
        // Not here, or handed on: another instance may hold it (Redis engine).
        local => match (shared::find(app, id).await, local) {
            (Ok(Some(t)), _) if scope.sees(t.task.client.as_deref()) => shared::status_json(&t),
            (_, Some(body)) => body,
            (Ok(_), None) => return not_found(session).await,
            (Err(e), None) => return shared::unavailable(session, &e).await,
        },
    };
    respond::json(session, 200, &body, &[]).await?;
    Ok(200)
}

/// The task board's cancel action: any task (the caller checked the admin key).
pub(crate) async fn cancel_any(app: &App, session: &mut Session, id: &str) -> Result<u16> {
    cancel(app, session, id, &Scope::Any).await
}

/// `DELETE /task/{id}`: tells a live task to stop. A running task's slot stays
/// counted until its Worker reports it free (the Worker goes on running it).
async fn cancel(app: &App, session: &mut Session, id: &str, scope: &Scope) -> Result<u16> {
    let on_board = app.board().read(id, |r| {
        let owner = r.client_name().map(Arc::<str>::from);
        (owner, r.state(), r.worker().map(str::to_string))
    });
    let live = app.cancels().client_of(id);
    let live_here = live.is_some();
    let (owner, state, worker) = match (on_board, live) {
        (Some(found), _) => found,
        // Still live, though the board has let its record go: queued or running.
        (None, Some(owner)) => (owner, TaskState::Queued, None),
        (None, None) => {
            return match cancel_elsewhere(app, session, id, scope).await? {
                Some(status) => Ok(status),
                None => not_found(session).await,
            };
        }
    };
    if !scope.sees(owner.as_deref()) {
        return not_found(session).await;
    }
    if state == TaskState::Unknown && !live_here {
        // Handed to the shared queue (Redis engine): another instance may hold it.
        if let Some(status) = cancel_elsewhere(app, session, id, scope).await? {
            return Ok(status);
        }
    }
    if state.is_final() {
        return finished(session, id, state).await;
    }
    if state == TaskState::Running {
        if let Some(worker) = &worker {
            app.scheduler().hold_cancelled_slot(worker);
        }
    }
    match app.cancels().cancel(id, scope.client()) {
        CancelOutcome::Cancelled => {
            log::info!("task {id}: cancelled ({})", state.as_str());
            let body = json!({"id": id, "state": "cancelled"});
            respond::json(session, 200, &body, &[]).await?;
            Ok(200)
        }
        CancelOutcome::OtherClient => not_found(session).await,
        // It ended between the two looks.
        CancelOutcome::NotLive => {
            let state = app
                .board()
                .read(id, |r| r.state())
                .unwrap_or(TaskState::Unknown);
            finished(session, id, state).await
        }
    }
}

/// Cancels a task this instance does not hold through the shared queue (Redis
/// engine) and answers; `None` (nothing written) when the shared queue does not
/// have it as the caller's either.
async fn cancel_elsewhere(
    app: &App,
    session: &mut Session,
    id: &str,
    scope: &Scope,
) -> Result<Option<u16>> {
    match shared::cancel(app, id, |c| scope.sees(c)).await {
        Ok(Some(done)) => shared::answer(session, id, done).await.map(Some),
        Ok(None) => Ok(None),
        Err(e) => shared::unavailable(session, &e).await.map(Some),
    }
}

/// `409` for a task that has already ended.
async fn finished(session: &mut Session, id: &str, state: TaskState) -> Result<u16> {
    let body = json!({
        "error": "Task already finished: it cannot be cancelled",
        "id": id,
        "state": state.public(),
    });
    respond::json(session, 409, &body, &[]).await?;
    Ok(409)
}

/// Closes the record of a task that was cancelled (state `cancelled`, counted
/// under the outcome `cancelled`).
pub(crate) fn record_cancelled(app: &App, record: &TaskHandle, spec: &TaskSpec) {
    let why = "cancelled by DELETE /task/{id}".to_string();
    let outcome = Outcome::new(
        TaskState::Cancelled,
        CANCELLED_STATUS,
        Reason::Cancelled.as_str(),
        Some(Reason::Cancelled),
    );
    record.close(app.board(), spec, outcome.detail(why));
}

/// Answers the waiting client of a cancelled sync or stream task:
/// `409 {"error", "reason": "cancelled"}` with `x-andera-reason` and its task id.
pub(crate) async fn answer_cancelled(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
) -> Result<()> {
    record_cancelled(app, record, spec);
    ctx.status = CANCELLED_STATUS;
    log::info!("task {}: cancelled while its client waited", record.id());
    let body = json!({"error": "Task cancelled", "reason": Reason::Cancelled.as_str()});
    let extra = [
        Reason::Cancelled.header(),
        ("x-andera-task-id", record.id()),
    ];
    respond::json(session, CANCELLED_STATUS, &body, &extra).await
}

/// Ends a sync or stream task cancelled while its answer was being relayed: the
/// Worker's head may be out already, so the connection is closed.
pub(crate) fn cut_cancelled(
    app: &App,
    ctx: &mut RequestCtx,
    record: &TaskHandle,
    spec: &TaskSpec,
) -> Result<()> {
    record_cancelled(app, record, spec);
    ctx.status = CANCELLED_STATUS;
    log::info!(
        "task {}: cancelled while its answer was relayed",
        record.id()
    );
    Error::e_explain(
        ConnectionClosed,
        "task cancelled while its answer was relayed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_paths_give_their_id() {
        assert_eq!(task_id_of("/task/abc"), Some("abc"));
        assert_eq!(task_id_of("/TASK/abc/"), Some("abc"));
        assert_eq!(task_id_of("/task/"), None);
        assert_eq!(task_id_of("/task"), None);
        assert_eq!(task_id_of("/task/a/b"), None);
        assert_eq!(task_id_of("/task/abc//"), None);
        assert_eq!(task_id_of("/tasks/abc"), None);
        assert_eq!(task_id_of("/taské"), None);
        assert_eq!(task_id_of(&format!("/task/{}", "x".repeat(129))), None);
    }
}

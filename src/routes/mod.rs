//! The one route table of both ports. [`route`] decides, from the port, method and
//! path alone, what a request asks for; [`serve`] answers every route except
//! `POST /task`, which the client service runs itself. The client port reaches the
//! operator pages (when exposed) through this table, never through the admin service.

pub(crate) mod api;
pub(crate) mod assets;
pub(crate) mod guard;
pub(crate) mod health;
pub(crate) mod idempotent;
pub(crate) mod task_control;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use crate::app::{App, OperatorAccess, RequestCtx};
use crate::auth::keys::Role;
use crate::metrics::METRICS;
use crate::respond;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// The client port (`PORT`, 4000).
    Client,
    /// The admin port (`ADMIN_PORT`, 127.0.0.1:4001).
    Admin,
}

/// Which operator pages are served (`admin.dashboard`, `admin.bull_board`) and
/// whether the client port serves them too (`admin.expose_on_client_port`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pages {
    /// `/dashboard` and its API.
    pub dashboard: bool,
    /// `/bull` and its API.
    pub bull: bool,
    /// Also on the client port (default false).
    pub on_client_port: bool,
}

impl Pages {
    /// The pages the settings turn on.
    pub(crate) fn of(settings: &crate::config::Settings) -> Pages {
        Pages {
            dashboard: settings.admin.dashboard,
            bull: settings.admin.bull_board,
            on_client_port: settings.admin.expose_on_client_port,
        }
    }
}

/// A call of the dashboard's or the task board's JSON API (the LB key is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiCall<'a> {
    /// `GET /dashboard/api/workers`.
    Workers,
    /// `GET /dashboard/api/overview`.
    Overview,
    /// `GET /dashboard/api/workers/<base64 url>/logs`, with the encoded URL.
    WorkerLogs(&'a str),
    /// `GET /bull/api/tasks`.
    Tasks,
    /// `GET /bull/api/tasks/<id>`.
    Task(&'a str),
    /// `GET /dashboard/api/whoami` (or `/bull/api/whoami`): the key's role.
    Whoami,
    /// `DELETE /bull/api/tasks/<id>`: the task board's cancel action (admin key).
    Cancel(&'a str),
    /// Under an API prefix, but no such call.
    NotFound,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `POST /task` (client port): run by the client service.
    Task,
    /// `/task` with another method: 405.
    TaskWrongMethod,
    /// `OPTIONS /task`: 200 with `Allow: POST, OPTIONS`, as Express answered.
    TaskOptions,
    /// `/task/{id}` (both ports; any task with the admin key on the admin port).
    TaskById(&'a str, task_control::TaskCall),
    /// An operator page asked for on the client port while it is served only on
    /// the admin port: a 404 that says where it is.
    OnAdminPort,
    /// `GET /health` (both ports).
    Health,
    /// `GET /logs` (both ports).
    Logs,
    /// `GET /ready` (admin port): 503 while draining.
    Ready,
    /// `GET /live` (admin port).
    Live,
    /// `GET /` (admin port): a redirect to the dashboard (or `/metrics`).
    Index,
    /// `GET /metrics`.
    Metrics,
    /// A page (or its API) that the settings turned off: 404.
    Disabled,
    /// A static asset: content type and bytes; `bull` picks the metrics label.
    Asset {
        /// `content-type` to send.
        content_type: &'static str,
        /// The asset.
        body: &'static [u8],
        /// Under `/bull`.
        bull: bool,
    },
    /// An API call, with its metrics label (`dashboard_api` or `bull_api`).
    Api(&'static str, ApiCall<'a>),
    /// Nothing here: 404.
    NotFound,
}

/// The original's own routes (`/task`, `/health`, `/logs`) as Express matched them:
/// case-insensitively, with one trailing slash ignored (`/TASK`, `/task/`).
fn original_path(path: &str) -> &str {
    let trimmed = match path.strip_suffix('/') {
        Some(t) if !t.is_empty() => t,
        _ => path,
    };
    ["/task", "/health", "/logs"]
        .into_iter()
        .find(|known| trimmed.eq_ignore_ascii_case(known))
        .unwrap_or(path)
}

/// Decides the route of a request. Pure, so that it can be tested (and fuzzed)
/// without a session; it never panics, whatever the path.
pub(crate) fn route<'a>(port: Port, method: &str, path: &'a str, pages: Pages) -> Route<'a> {
    // HEAD is answered like GET; Pingora sends the head without the body.
    let get = method == "GET" || method == "HEAD";
    match (port, original_path(path)) {
        (Port::Client, "/task") if method == "POST" => return Route::Task,
        (Port::Client, "/task") if method == "OPTIONS" => return Route::TaskOptions,
        (Port::Client, "/task") => return Route::TaskWrongMethod,
        (_, "/health") if get => return Route::Health,
        (_, "/logs") if get => return Route::Logs,
        _ => {}
    }
    if let Some(id) = task_control::task_id_of(path) {
        return Route::TaskById(id, task_control::TaskCall::of(method));
    }
    match (port, path) {
        (Port::Admin, "/ready" | "/health/ready") if get => return Route::Ready,
        (Port::Admin, "/live" | "/health/live") if get => return Route::Live,
        (Port::Admin, "/") if get => return Route::Index,
        (Port::Client, _) if !pages.on_client_port => {
            return match page_route("GET", path, pages) {
                Route::NotFound => Route::NotFound,
                Route::Disabled => Route::Disabled,
                _ => Route::OnAdminPort,
            }
        }
        _ => {}
    }
    page_route(method, path, pages)
}

/// The operator pages' part of the table: `/metrics`, `/dashboard…`, `/bull…`,
/// `/static/…`.
fn page_route<'a>(method: &str, path: &'a str, pages: Pages) -> Route<'a> {
    if method == "DELETE" && pages.bull {
        if let Some(id) = path.strip_prefix("/bull/api/tasks/") {
            return Route::Api("bull_api", ApiCall::Cancel(id));
        }
    }
    if method != "GET" && method != "HEAD" {
        return Route::NotFound;
    }
    if path == "/metrics" {
        return Route::Metrics;
    }
    let is_dashboard = path == "/dashboard" || path.starts_with("/dashboard/");
    let is_bull = path == "/bull" || path.starts_with("/bull/");
    let is_static = path.starts_with("/static/");
    if (is_dashboard && !pages.dashboard)
        || (is_bull && !pages.bull)
        || (is_static && !pages.dashboard && !pages.bull)
    {
        return Route::Disabled;
    }
    if let Some((content_type, body)) = assets::find(path) {
        return Route::Asset {
            content_type,
            body,
            bull: is_bull,
        };
    }
    if let Some(rest) = path.strip_prefix("/dashboard/api/") {
        let call = match rest {
            "workers" => ApiCall::Workers,
            "overview" => ApiCall::Overview,
            "whoami" => ApiCall::Whoami,
            // `strip_*` rather than index arithmetic: `workers/logs` has the prefix and
            // the suffix overlapping, and must not be sliced.
            r => match r
                .strip_prefix("workers/")
                .and_then(|r| r.strip_suffix("/logs"))
            {
                Some(encoded) => ApiCall::WorkerLogs(encoded),
                None => ApiCall::NotFound,
            },
        };
        return Route::Api("dashboard_api", call);
    }
    if let Some(rest) = path.strip_prefix("/bull/api/") {
        let call = match rest {
            "tasks" => ApiCall::Tasks,
            "whoami" => ApiCall::Whoami,
            r => r
                .strip_prefix("tasks/")
                .map_or(ApiCall::NotFound, ApiCall::Task),
        };
        return Route::Api("bull_api", call);
    }
    Route::NotFound
}

/// Answers `route` (anything but [`Route::Task`], which the client service runs) and
/// returns the status written; `ctx.route` gets the metrics label.
pub(crate) async fn serve(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    port: Port,
    route: Route<'_>,
) -> Result<u16> {
    let (label, status) = match route {
        Route::Task | Route::NotFound => {
            respond::error(session, 404, "Not found", &[]).await?;
            ("not_found", 404)
        }
        Route::TaskWrongMethod => {
            let allow = ("allow", "POST, OPTIONS".into());
            respond::error(session, 405, "Use POST /task", &[allow]).await?;
            ("task", 405)
        }
        Route::TaskOptions => {
            respond::allow(session, "POST, OPTIONS").await?;
            ("task", 200)
        }
        Route::OnAdminPort => {
            let message = format!(
                "Not found: the operator pages (/dashboard, /bull, /metrics) are served on the \
                 admin port ({}); set ADMIN_ON_CLIENT_PORT=true (admin.expose_on_client_port) \
                 to serve them on this port too",
                app.settings().admin.listen
            );
            respond::error(session, 404, &message, &[]).await?;
            ("not_found", 404)
        }
        Route::Health => ("health", health::health(app, session).await?),
        Route::Logs => ("logs", health::logs(app, session).await?),
        Route::Ready => ("ready", health::ready(app, session).await?),
        Route::Live => {
            respond::json(session, 200, &json!({"live": true}), &[]).await?;
            ("live", 200)
        }
        Route::Index => ("index", index(app, session).await?),
        Route::Metrics => {
            // On the client port, with named clients or operator keys configured,
            // /metrics (every client's figures) is an operator page; on the admin port
            // it stays open to Prometheus, and with the LB key alone it is as before.
            if port == Port::Client && app.settings().auth.multi_tenant() {
                if let Err(status) = require_operator(app, session, Role::Admin).await? {
                    ctx.route = "metrics";
                    return Ok(status);
                }
            }
            ("metrics", metrics(app, session).await?)
        }
        Route::Disabled => {
            respond::error(session, 404, "This page is disabled", &[]).await?;
            ("disabled", 404)
        }
        Route::Asset {
            content_type,
            body,
            bull,
        } => {
            respond::asset(session, content_type, body).await?;
            (if bull { "bull" } else { "dashboard" }, 200)
        }
        Route::Api(label, call) => (label, api_call(app, session, call).await?),
        Route::TaskById(id, call) => (
            "task_control",
            task_control::serve(app, session, ctx, port, id, call).await?,
        ),
    };
    ctx.route = label;
    Ok(status)
}

/// Answers `401` or `403` unless the request's key opens operator routes that need
/// `need`; returns the role when it does.
pub(crate) async fn require_operator(
    app: &App,
    session: &mut Session,
    need: Role,
) -> Result<Result<Role, u16>> {
    match app.operator_access(session, need) {
        OperatorAccess::Granted(role) => Ok(Ok(role)),
        OperatorAccess::Unauthorized => {
            respond::error(session, 401, "Unauthorized", &[]).await?;
            Ok(Err(401))
        }
        OperatorAccess::Forbidden => {
            let message = match need {
                Role::Viewer => "This key opens no operator page: use an admin or viewer key",
                Role::Admin => "This needs an admin key",
            };
            respond::forbidden(session, message).await?;
            Ok(Err(403))
        }
    }
}

/// An API call: an operator key first (a viewer's is enough: every call reads),
/// then the call.
async fn api_call(app: &App, session: &mut Session, call: ApiCall<'_>) -> Result<u16> {
    // Cancelling changes a task: an admin key, not a viewer's.
    let need = match call {
        ApiCall::Cancel(_) => Role::Admin,
        _ => Role::Viewer,
    };
    let role = match require_operator(app, session, need).await? {
        Ok(role) => role,
        Err(status) => return Ok(status),
    };
    match call {
        ApiCall::Whoami => {
            respond::json(session, 200, &json!({ "role": role.as_str() }), &[]).await?;
            Ok(200)
        }
        ApiCall::Workers => api::workers(app, session).await,
        ApiCall::Overview => api::overview(app, session).await,
        ApiCall::WorkerLogs(encoded) => api::worker_logs(app, session, encoded).await,
        ApiCall::Tasks => api::tasks(app, session).await,
        ApiCall::Task(id) => api::task(app, session, id).await,
        ApiCall::Cancel(id) => task_control::cancel_any(app, session, id).await,
        ApiCall::NotFound => {
            respond::error(session, 404, "Not found", &[]).await?;
            Ok(404)
        }
    }
}

/// `GET /` on the admin port: to the dashboard, or to `/metrics` when it is off.
async fn index(app: &App, session: &mut Session) -> Result<u16> {
    let target = if app.settings().admin.dashboard {
        "/dashboard"
    } else {
        "/metrics"
    };
    let mut header = ResponseHeader::build(302, Some(2))?;
    header.insert_header("location", target)?;
    header.insert_header("content-length", "0")?;
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(302)
}

/// `GET /metrics` in the Prometheus text format, with per-Worker gauges refreshed.
async fn metrics(app: &App, session: &mut Session) -> Result<u16> {
    app.refresh_worker_gauges();
    for (client, waiting, running) in app.scheduler().client_load() {
        METRICS
            .clients
            .queued
            .with_label_values(&[&client])
            .set(waiting as i64);
        METRICS
            .clients
            .running
            .with_label_values(&[&client])
            .set(running as i64);
    }
    METRICS.queue_depth.set(app.scheduler().queued() as i64);
    METRICS.queued_bytes.set(app.queued_bytes().used() as i64);
    METRICS
        .queue_limit
        .set(app.settings().tasks.max_queued as i64);
    METRICS
        .queued_bytes_limit
        .set(app.queued_bytes().max() as i64);
    METRICS.board_records.set(app.board().len() as i64);
    let body = Bytes::from(METRICS.render());
    let mut header = ResponseHeader::build(200, Some(2))?;
    header.insert_header("content-type", "text/plain; version=0.0.4; charset=utf-8")?;
    header.insert_header("content-length", body.len())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(200)
}

/// Counts a response for `http_responses_total`.
pub(crate) fn count_response(service: &str, ctx: &RequestCtx, error: Option<&Error>) {
    let status = match (ctx.status, error) {
        (0, Some(_)) => 500,
        (0, None) => 200,
        (s, _) => s,
    };
    let route = if ctx.route.is_empty() {
        "other"
    } else {
        ctx.route
    };
    METRICS
        .http_responses
        .with_label_values(&[service, route, &status.to_string()])
        .inc();
}

#[cfg(test)]
mod tests;

//! The admin sidecar (default `127.0.0.1:4001`): `/metrics`, `/health` (plus a
//! readiness view), `/logs`, the dashboard and the task board, all fed by the same
//! in-process state as the data path.

pub mod api;
pub mod assets;
pub mod sampler;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use serde_json::json;

use crate::endpoints;
use crate::metrics::METRICS;
use crate::proxy::task::lb_authorized;
use crate::proxy::{App, RequestCtx};
use crate::respond;

/// The admin port's `ProxyHttp` implementation.
pub struct AdminProxy {
    /// Shared state.
    pub app: Arc<App>,
}

/// Which admin pages are served (`admin.dashboard`, `admin.bull_board`).
#[derive(Debug, Clone, Copy)]
pub struct Pages {
    /// `/dashboard` and its API.
    pub dashboard: bool,
    /// `/bull` and its API.
    pub bull: bool,
}

/// A call of the dashboard's or the task board's JSON API (the LB key is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCall<'a> {
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
    /// Under an API prefix, but no such call.
    NotFound,
}

/// What an admin request asks for, decided from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
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
    /// Not an admin route: the caller answers 404.
    None,
}

/// Decides the admin route of `method` and `path`. Pure, so that it can be tested
/// (and fuzzed) without a session; it never panics, whatever the path.
pub fn admin_route<'a>(method: &str, path: &'a str, pages: Pages) -> Route<'a> {
    if method != "GET" {
        return Route::None;
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
            r => r
                .strip_prefix("tasks/")
                .map_or(ApiCall::NotFound, ApiCall::Task),
        };
        return Route::Api("bull_api", call);
    }
    Route::None
}

/// Answers an admin route (`/metrics`, `/dashboard…`, `/bull…`, `/static/…`).
/// Returns `None` when `path` is not one, so the caller can answer 404.
pub async fn route(app: &App, session: &mut Session, ctx: &mut RequestCtx) -> Result<Option<u16>> {
    let pages = Pages {
        dashboard: app.settings.dashboard_enabled,
        bull: app.settings.bull_board_enabled,
    };
    let req = session.req_header();
    let path = req.uri.path().to_string();
    let decided = admin_route(req.method.as_str(), &path, pages);
    let (label, call) = match decided {
        Route::None => return Ok(None),
        Route::Metrics => {
            ctx.route = "metrics";
            return metrics(app, session).await.map(Some);
        }
        Route::Disabled => {
            ctx.route = "disabled";
            respond::error(session, 404, "This page is disabled", &[]).await?;
            return Ok(Some(404));
        }
        Route::Asset {
            content_type,
            body,
            bull,
        } => {
            ctx.route = if bull { "bull" } else { "dashboard" };
            respond::asset(session, content_type, body).await?;
            return Ok(Some(200));
        }
        Route::Api(label, call) => (label, call),
    };
    ctx.route = label;
    if !lb_authorized(session, app.settings.lb_key.expose()) {
        respond::error(session, 401, "Unauthorized", &[]).await?;
        return Ok(Some(401));
    }
    let status = match call {
        ApiCall::Workers => api::workers(app, session).await?,
        ApiCall::Overview => api::overview(app, session).await?,
        ApiCall::WorkerLogs(encoded) => api::worker_logs(app, session, encoded).await?,
        ApiCall::Tasks => api::tasks(app, session).await?,
        ApiCall::Task(id) => api::task(app, session, id).await?,
        ApiCall::NotFound => {
            respond::error(session, 404, "Not found", &[]).await?;
            404
        }
    };
    Ok(Some(status))
}

/// `GET /metrics` in the Prometheus text format, with per-Worker gauges refreshed.
async fn metrics(app: &App, session: &mut Session) -> Result<u16> {
    app.refresh_worker_gauges();
    METRICS
        .queue_depth
        .set(app.dispatcher.scheduler.queued() as i64);
    METRICS.queued_bytes.set(app.queued_bytes.used() as i64);
    METRICS.board_records.set(app.board.len() as i64);
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
pub fn count_response(service: &str, ctx: &RequestCtx, error: Option<&Error>) {
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

#[async_trait]
impl ProxyHttp for AdminProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(InternalError, "the admin service proxies nothing")
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let app = &self.app;
        let path = session.req_header().uri.path().to_string();
        let get = session.req_header().method == "GET";
        ctx.status = match path.as_str() {
            "/health" if get => {
                ctx.route = "health";
                endpoints::health(app, session).await?
            }
            "/logs" if get => {
                ctx.route = "logs";
                endpoints::logs(app, session).await?
            }
            "/ready" | "/health/ready" if get => {
                ctx.route = "ready";
                let ready = !app.is_draining();
                let (_, up) = app.registry.counts();
                let status = if ready { 200 } else { 503 };
                let body =
                    json!({"ready": ready, "draining": app.is_draining(), "workersAvailable": up});
                respond::json(session, status, &body, &[]).await?;
                status
            }
            "/live" | "/health/live" if get => {
                ctx.route = "live";
                respond::json(session, 200, &json!({"live": true}), &[]).await?;
                200
            }
            "/" if get => {
                ctx.route = "index";
                let target = if app.settings.dashboard_enabled {
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
                302
            }
            _ => match route(app, session, ctx).await? {
                Some(status) => status,
                None => {
                    ctx.route = "not_found";
                    respond::error(session, 404, "Not found", &[]).await?;
                    404
                }
            },
        };
        Ok(true)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        crate::conn::header_read(prev_ctx.as_ref());
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> pingora::proxy::FailToProxy {
        let failed = respond::failure(session, e).await;
        if ctx.status == 0 {
            ctx.status = failed.error_code;
        }
        failed
    }

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        count_response("admin", ctx, e);
    }
}

#[cfg(test)]
mod tests;

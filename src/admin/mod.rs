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

/// Answers an admin route (`/metrics`, `/dashboard…`, `/bull…`, `/static/…`).
/// Returns `None` when `path` is not one, so the caller can answer 404.
pub async fn route(app: &App, session: &mut Session, ctx: &mut RequestCtx) -> Result<Option<u16>> {
    let path = session.req_header().uri.path().to_string();
    if session.req_header().method != "GET" {
        return Ok(None);
    }
    let dashboard = app.settings.dashboard_enabled;
    let bull = app.settings.bull_board_enabled;
    if path == "/metrics" {
        ctx.route = "metrics";
        return metrics(app, session).await.map(Some);
    }
    let is_dashboard = path == "/dashboard" || path.starts_with("/dashboard/");
    let is_bull = path == "/bull" || path.starts_with("/bull/");
    let is_static = path.starts_with("/static/");
    if (is_dashboard && !dashboard) || (is_bull && !bull) || (is_static && !dashboard && !bull) {
        ctx.route = "disabled";
        respond::error(session, 404, "This page is disabled", &[]).await?;
        return Ok(Some(404));
    }
    if let Some((content_type, body)) = assets::find(&path) {
        ctx.route = if is_bull { "bull" } else { "dashboard" };
        respond::asset(session, content_type, body).await?;
        return Ok(Some(200));
    }
    let api = path
        .strip_prefix("/dashboard/api/")
        .map(|rest| ("dashboard_api", rest))
        .or_else(|| {
            path.strip_prefix("/bull/api/")
                .map(|rest| ("bull_api", rest))
        });
    let Some((route, rest)) = api else {
        return Ok(None);
    };
    ctx.route = route;
    if !lb_authorized(session, app.settings.lb_key.expose()) {
        respond::error(session, 401, "Unauthorized", &[]).await?;
        return Ok(Some(401));
    }
    let rest = rest.to_string();
    let status = match (route, rest.as_str()) {
        ("dashboard_api", "workers") => api::workers(app, session).await?,
        ("dashboard_api", "overview") => api::overview(app, session).await?,
        ("dashboard_api", r) if r.starts_with("workers/") && r.ends_with("/logs") => {
            let encoded = &r["workers/".len()..r.len() - "/logs".len()];
            api::worker_logs(app, session, encoded).await?
        }
        ("bull_api", "tasks") => api::tasks(app, session).await?,
        ("bull_api", r) if r.starts_with("tasks/") => {
            api::task(app, session, &r["tasks/".len()..]).await?
        }
        _ => {
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

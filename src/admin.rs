//! The admin sidecar (default `127.0.0.1:4001`): `/health` (with a readiness view)
//! and `/logs`, fed by the same state as the data path.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use serde_json::json;

use crate::endpoints;
use crate::proxy::{App, RequestCtx};
use crate::respond;

/// The admin port's `ProxyHttp` implementation.
pub struct AdminProxy {
    /// Shared state.
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for AdminProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        Error::e_explain(InternalError, "the admin service proxies nothing")
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let path = session.req_header().uri.path().to_string();
        ctx.status = match (session.req_header().method.as_str(), path.as_str()) {
            ("GET", "/health") => endpoints::health(&self.app, session).await?,
            ("GET", "/logs") => endpoints::logs(&self.app, session).await?,
            ("GET", "/ready") | ("GET", "/health/ready") => {
                let (_, up) = self.app.registry.counts();
                let ready = !self.app.is_draining();
                let status = if ready { 200 } else { 503 };
                let body = json!({"ready": ready, "draining": self.app.is_draining(), "workersAvailable": up});
                respond::json(session, status, &body, &[]).await?;
                status
            }
            _ => {
                respond::error(session, 404, "Not found", &[]).await?;
                404
            }
        };
        Ok(true)
    }
}

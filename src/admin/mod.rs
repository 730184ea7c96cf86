//! The admin sidecar (default `127.0.0.1:4001`): `/metrics`, `/health` (plus
//! `/ready` and `/live`), `/logs`, the dashboard and the task board, all fed by the
//! same in-process state as the data path and answered through [`crate::routes`].

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::app::{App, RequestCtx};
use crate::respond;
use crate::routes::{self, Pages, Port};

/// The admin port's `ProxyHttp` implementation.
pub(crate) struct AdminProxy {
    /// Shared state.
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for AdminProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.app.access_log().is_some())
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
        if routes::guard::refuse_before_routing(app, session, ctx, Port::Admin).await? {
            return Ok(true);
        }
        // The path is copied once: the route borrows it while the session is written.
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        let route = routes::route(
            Port::Admin,
            method.as_str(),
            &path,
            Pages::of(app.settings()),
        );
        ctx.status = routes::serve(app, session, ctx, Port::Admin, route).await?;
        Ok(true)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        ctx.conn = crate::conn::header_read(prev_ctx.as_ref());
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

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        routes::count_response("admin", ctx, e);
        crate::access_log::log_request(&self.app, session, ctx, "admin");
        if let Some(conn) = &ctx.conn {
            conn.request_ended(session.as_downstream_mut().is_body_done(), e);
        }
    }
}

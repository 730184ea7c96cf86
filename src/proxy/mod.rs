//! The client-facing Pingora service (port 4000): `POST /task`, and through the
//! shared route table the original's `/health` and `/logs` (and the operator pages
//! when exposed). Every request is answered in `request_filter`; tasks reach Workers
//! through the dispatcher, never through an upstream chosen by Pingora.

pub(crate) mod notify;
pub(crate) mod task;
pub(crate) mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::app::{App, RequestCtx};
use crate::respond;
use crate::routes::{self, Pages, Port, Route};

/// The client port's `ProxyHttp` implementation.
pub(crate) struct ClientProxy {
    /// Shared state.
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for ClientProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.app.access_log().is_some())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(InternalError, "every request is answered in request_filter")
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if routes::guard::refuse_before_routing(&self.app, session, ctx, Port::Client).await? {
            return Ok(true);
        }
        let pages = Pages::of(self.app.settings());
        // The hot path decides on the borrowed header: no per-request copy of the path.
        let is_task = {
            let req = session.req_header();
            routes::route(Port::Client, req.method.as_str(), req.uri.path(), pages) == Route::Task
        };
        if is_task {
            ctx.route = "task";
            task::handle(&self.app, session, ctx).await?;
        } else {
            let path = session.req_header().uri.path().to_string();
            let method = session.req_header().method.clone();
            let route = routes::route(Port::Client, method.as_str(), &path, pages);
            ctx.status = routes::serve(&self.app, session, ctx, Port::Client, route).await?;
        }
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
        routes::count_response("client", ctx, e);
        crate::access_log::log_request(&self.app, session, ctx, "client");
        if let Some(conn) = &ctx.conn {
            conn.request_ended(session.as_downstream_mut().is_body_done(), e);
        }
    }
}

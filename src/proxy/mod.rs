//! The client-facing Pingora service (port 4000): `POST /task` plus the original's
//! `/health` and `/logs`. Every request is answered in `request_filter`; tasks reach
//! Workers through the dispatcher, never through an upstream chosen by Pingora.

pub mod notify;
pub mod task;
pub mod webhook;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::board::TaskBoard;
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::endpoints;
use crate::metrics::METRICS;
use crate::registry::Registry;
use crate::respond;

/// Shared state of the running load balancer.
pub struct App {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Workers and what they report.
    pub registry: Arc<Registry>,
    /// The dispatch path.
    pub dispatcher: Arc<Dispatcher>,
    /// Recent task records and the dashboard's series.
    pub board: Arc<TaskBoard>,
    /// When the process started.
    pub started: std::time::Instant,
    /// Set when shutdown has begun: readiness turns false.
    pub draining: AtomicBool,
    /// Tasks in progress, and the signal to cut them at the end of the grace period.
    pub drain: Arc<crate::drain::Drain>,
    /// The webhook task journal, once open (`tasks.journal`; empty when not configured).
    pub journal: std::sync::OnceLock<Arc<crate::journal::Journal>>,
    /// Woken when [`App::journal`] is set, for tasks that arrive while it opens.
    pub journal_opened: tokio::sync::Notify,
    /// Body bytes of tasks waiting for a slot (`tasks.max_queued_bytes`).
    pub queued_bytes: Arc<crate::budget::ByteBudget>,
}

impl App {
    /// Wires the registry and dispatcher over one scheduler.
    pub fn new(settings: Arc<Settings>) -> Arc<App> {
        let scheduler = crate::scheduler::Scheduler::new(settings.max_queued);
        let registry = Registry::new(settings.clone(), scheduler.clone());
        let dispatcher = Arc::new(Dispatcher::new(settings.clone(), scheduler));
        let board = Arc::new(TaskBoard::with_byte_budget(
            settings.task_records,
            settings.task_records_bytes,
        ));
        Arc::new(App {
            queued_bytes: crate::budget::ByteBudget::new(settings.max_queued_bytes),
            settings,
            registry,
            dispatcher,
            board,
            started: std::time::Instant::now(),
            draining: AtomicBool::new(false),
            drain: Arc::default(),
            journal: std::sync::OnceLock::new(),
            journal_opened: tokio::sync::Notify::new(),
        })
    }

    /// Sets the journal once it is open and wakes the tasks waiting for it.
    pub fn journal_is_open(&self, journal: Arc<crate::journal::Journal>) {
        let _ = self.journal.set(journal);
        self.journal_opened.notify_waiters();
    }

    /// The journal, waiting up to `limit` while it is still opening at start-up
    /// (the client port may accept a task a moment before); `None` if it is not
    /// open by then.
    pub async fn journal_within(
        &self,
        limit: std::time::Duration,
    ) -> Option<Arc<crate::journal::Journal>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let opened = self.journal_opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if let Some(j) = self.journal.get() {
                return Some(j.clone());
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return self.journal.get().cloned();
            }
        }
    }

    /// Refreshes the per-Worker gauges from the registry (stale Workers disappear).
    pub fn refresh_worker_gauges(&self) {
        let m = &METRICS;
        m.worker_up.reset();
        m.worker_slots_used.reset();
        m.worker_slots_limit.reset();
        m.worker_ejected.reset();
        for w in self.registry.gauges() {
            m.worker_ejected
                .with_label_values(&[&w.url])
                .set(i64::from(w.ejected));
            m.worker_up
                .with_label_values(&[&w.url, &w.group])
                .set(i64::from(w.up));
            m.worker_slots_used
                .with_label_values(&[&w.url])
                .set(i64::from(w.in_flight));
            m.worker_slots_limit
                .with_label_values(&[&w.url])
                .set(i64::from(w.limit));
        }
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Per-request state: what was decided, for logging and metrics.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// Route label (`task`, `health`, `logs`, `not_found`).
    pub route: &'static str,
    /// Status sent to the client (499 when the client left first).
    pub status: u16,
    /// Task id, for task requests that got one.
    pub task_id: Option<String>,
}

/// What the client port does with a request.
enum ClientRoute {
    Task,
    TaskWrongMethod,
    Health,
    Logs,
    /// Admin pages (when exposed) or 404.
    Other,
}

/// The client port's `ProxyHttp` implementation.
pub struct ClientProxy {
    /// Shared state.
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for ClientProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(InternalError, "every request is answered in request_filter")
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Decide the route while the header is borrowed; no per-request copy of it.
        let route = {
            let req = session.req_header();
            match (req.method.as_str(), req.uri.path()) {
                ("POST", "/task") => ClientRoute::Task,
                (_, "/task") => ClientRoute::TaskWrongMethod,
                ("GET", "/health") => ClientRoute::Health,
                ("GET", "/logs") => ClientRoute::Logs,
                _ => ClientRoute::Other,
            }
        };
        match route {
            ClientRoute::Task => {
                ctx.route = "task";
                task::handle(&self.app, session, ctx).await?;
            }
            ClientRoute::TaskWrongMethod => {
                ctx.route = "task";
                ctx.status = 405;
                respond::error(session, 405, "Use POST /task", &[("allow", "POST".into())]).await?;
            }
            ClientRoute::Health => {
                ctx.route = "health";
                ctx.status = endpoints::health(&self.app, session).await?;
            }
            ClientRoute::Logs => {
                ctx.route = "logs";
                ctx.status = endpoints::logs(&self.app, session).await?;
            }
            ClientRoute::Other => {
                let admin = if self.app.settings.expose_admin_on_client_port {
                    crate::admin::route(&self.app, session, ctx).await?
                } else {
                    None
                };
                match admin {
                    Some(status) => ctx.status = status,
                    None => {
                        ctx.route = "not_found";
                        ctx.status = 404;
                        respond::error(session, 404, "Not found", &[]).await?;
                    }
                }
            }
        }
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
        crate::admin::count_response("client", ctx, e);
    }
}

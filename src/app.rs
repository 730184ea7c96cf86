//! The shared state of a running load balancer, below both services (client and
//! admin) and above the core (registry, scheduler, dispatch, board, journal).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::sync::OnceLock;

use crate::access_log::AccessLog;
use crate::auth::keys::{KeyRing, Principal, Role};
use crate::auth::quota::RateLimits;
use crate::board::TaskBoard;
use crate::budget::ByteBudget;
use crate::cancel::Cancels;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::drain::Drain;
use crate::idempotency::Idempotency;
use crate::journal::Journal;
use crate::metrics::METRICS;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::upstream::Upstream;

/// Shared state of the running load balancer. Its parts are reached through the
/// methods below, none replaced from outside: what changes after start-up (the key
/// ring, the journal, the access log, draining) changes through a method that says so.
pub(crate) struct App {
    settings: Arc<Settings>,
    registry: Arc<Registry>,
    /// The one scheduler that the registry fills and the dispatcher takes slots from.
    scheduler: Arc<Scheduler>,
    dispatcher: Dispatcher,
    /// Connections for webhook failure notices, apart from the Workers' pool: a
    /// receiver is another host, and its connections are no Worker's to reuse.
    notices: Arc<Upstream>,
    board: Arc<TaskBoard>,
    started: std::time::Instant,
    draining: AtomicBool,
    drain: Arc<Drain>,
    journal: OnceLock<Arc<Journal>>,
    /// Woken when the journal is set, for tasks that arrive while it opens.
    journal_opened: tokio::sync::Notify,
    queued_bytes: Arc<ByteBudget>,
    access_log: OnceLock<AccessLog>,
    /// Who holds which key; replaced when the clients file changes.
    keys: parking_lot::RwLock<Arc<KeyRing>>,
    rate_limits: RateLimits,
    cancels: Arc<Cancels>,
    idempotency: Arc<Idempotency>,
    cluster: Option<Arc<Cluster>>,
}

/// What a request's key may do on an operator route.
#[derive(Debug)]
pub(crate) enum OperatorAccess {
    /// Allowed, with this role.
    Granted(Role),
    /// A valid key that opens no operator surface (or not this one): `403`.
    Forbidden,
    /// No key, or not one of ours: `401`.
    Unauthorized,
}

impl App {
    /// Wires the registry and dispatcher over one scheduler.
    pub(crate) fn new(settings: Arc<Settings>) -> Arc<App> {
        let settings_for_keys = settings.clone();
        let scheduler = Scheduler::new(settings.tasks.max_queued);
        // Before any Worker is registered: every pool is made under the link.
        let cluster = settings
            .cluster
            .as_ref()
            .map(|c| crate::cluster::Cluster::new(c, scheduler.clone()));
        std::sync::LazyLock::force(&crate::cluster::CLUSTER_METRICS);
        let registry = Registry::new(settings.clone(), scheduler.clone());
        let dispatcher = Dispatcher::new(settings.clone(), scheduler.clone());
        let notices = Arc::new(Upstream::new(
            settings.upstream.connect_timeout,
            settings.upstream.pool_idle_timeout,
            settings.upstream.ca_file.as_ref().and_then(|p| p.to_str()),
        ));
        let board = Arc::new(TaskBoard::with_byte_budget(
            settings.admin.task_records,
            settings.admin.task_records_bytes,
        ));
        Arc::new(App {
            queued_bytes: ByteBudget::new(settings.tasks.max_queued_bytes),
            settings,
            registry,
            scheduler,
            dispatcher,
            notices,
            board,
            started: std::time::Instant::now(),
            draining: AtomicBool::new(false),
            drain: Arc::default(),
            journal: OnceLock::new(),
            journal_opened: tokio::sync::Notify::new(),
            access_log: OnceLock::new(),
            keys: parking_lot::RwLock::new(Arc::new(initial_ring(&settings_for_keys))),
            rate_limits: Default::default(),
            cancels: Arc::default(),
            idempotency: Idempotency::new(
                settings_for_keys.tasks.idempotency_ttl,
                settings_for_keys.tasks.idempotency_max_keys,
            ),
            cluster,
        })
    }

    /// The holder of the request's key, if it is one of ours.
    pub(crate) fn principal(&self, session: &pingora::proxy::Session) -> Option<Principal> {
        let ring = self.keys.read().clone();
        crate::auth::identify(session, &ring)
    }

    /// Whether the request's key opens an operator route that needs `need`.
    pub(crate) fn operator_access(
        &self,
        session: &pingora::proxy::Session,
        need: Role,
    ) -> OperatorAccess {
        match self.principal(session) {
            None => OperatorAccess::Unauthorized,
            Some(p) => match p.role {
                Some(role) if role >= need => OperatorAccess::Granted(role),
                _ => OperatorAccess::Forbidden,
            },
        }
    }

    /// Puts a rebuilt key ring in force (the clients file changed).
    pub(crate) fn replace_keys(&self, ring: KeyRing) {
        for client in ring.clients() {
            METRICS.client_configured(&client.name);
        }
        *self.keys.write() = Arc::new(ring);
    }

    /// Sets the journal once it is open and wakes the tasks waiting for it.
    pub(crate) fn journal_is_open(&self, journal: Arc<Journal>) {
        if let Journal::Redis(shared) = &*journal {
            // Another instance's DELETE /task/{id} for a task held here.
            if let Some(mut asked) = shared.cancel_requests() {
                let cancels = self.cancels.clone();
                tokio::spawn(async move {
                    while let Some(id) = asked.recv().await {
                        if cancels.cancel(&id, None) == crate::cancel::CancelOutcome::Cancelled {
                            log::info!("task {id}: cancelled at another instance's request");
                        }
                    }
                });
            }
        }
        let _ = self.journal.set(journal);
        self.journal_opened.notify_waiters();
    }

    /// The journal, waiting up to `limit` while it is still opening at start-up
    /// (the client port may accept a task a moment before); `None` if it is not
    /// open by then.
    pub(crate) async fn journal_within(&self, limit: std::time::Duration) -> Option<Arc<Journal>> {
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
    pub(crate) fn refresh_worker_gauges(&self) {
        METRICS.refresh_workers(&self.registry.gauges());
    }

    /// True once shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Turns readiness false: shutdown has begun (there is no way back).
    pub(crate) fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The validated settings.
    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The Workers and what they report.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Slots and the wait queue (what the registry fills and dispatch takes from).
    pub(crate) fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// The dispatch path: admission and delivery to Workers.
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Connections for webhook failure notices (not the Workers' pool).
    pub(crate) fn notices(&self) -> &Arc<Upstream> {
        &self.notices
    }

    /// Recent task records and the dashboard's series.
    pub(crate) fn board(&self) -> &Arc<TaskBoard> {
        &self.board
    }

    /// How long the process has run.
    pub(crate) fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Tasks in progress, and the signal that cuts them at the end of the grace period.
    pub(crate) fn drain(&self) -> &Arc<Drain> {
        &self.drain
    }

    /// The webhook task journal, once open (`None`: not configured, or still opening).
    pub(crate) fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.get()
    }

    /// Body bytes of tasks waiting for a slot (`tasks.max_queued_bytes`).
    pub(crate) fn queued_bytes(&self) -> &Arc<ByteBudget> {
        &self.queued_bytes
    }

    /// The access log, when `logging.access_log` is set and it is open.
    pub(crate) fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.get()
    }

    /// Puts the access log in force (once, at start-up; a second call is ignored).
    pub(crate) fn set_access_log(&self, log: AccessLog) {
        let _ = self.access_log.set(log);
    }

    /// Named clients' rate limits (`rate`, `burst`).
    pub(crate) fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// Cancel signals of the tasks live here (`DELETE /task/{id}`).
    pub(crate) fn cancels(&self) -> &Arc<Cancels> {
        &self.cancels
    }

    /// `Idempotency-Key`s seen (`tasks.idempotency_ttl_ms`, `tasks.idempotency_max_keys`).
    pub(crate) fn idempotency(&self) -> &Arc<Idempotency> {
        &self.idempotency
    }

    /// Slots and queue shared with other instances (`cluster.redis`); `None`: off.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }
}

/// The key ring at start-up; `main` checked the clients file, so a failure here is
/// a race with an edit: the inline clients and operator keys still hold.
fn initial_ring(settings: &Settings) -> KeyRing {
    let ring = crate::auth::ring_of(settings).unwrap_or_else(|e| {
        log::error!("named clients: {e}; using the inline auth.clients only");
        let a = &settings.auth;
        KeyRing::build(
            settings.lb_key.expose(),
            &a.clients.inline,
            &a.admin_keys,
            &a.viewer_keys,
        )
        .unwrap_or_default()
    });
    for client in ring.clients() {
        METRICS.client_configured(&client.name);
    }
    ring
}

/// Per-request state: what was decided, for logging and metrics.
#[derive(Debug, Default)]
pub(crate) struct RequestCtx {
    /// Route label (`task`, `health`, `logs`, `not_found`).
    pub route: &'static str,
    /// Status sent to the client (499 when the client left first).
    pub status: u16,
    /// Task id, for task requests that got one.
    pub task_id: Option<String>,
    /// When the request began, kept only while the access log is on.
    pub started: Option<std::time::Instant>,
    /// The client's name once its key was accepted (`default`: the LB key).
    pub client: Option<Arc<str>>,
    /// The request's connection (set once its header was read).
    pub conn: Option<crate::conn::ConnHandle>,
    /// The trace id of its task, when tracing is on (for the access log).
    pub trace_id: Option<String>,
}

impl RequestCtx {
    /// A request's context; it reads the clock only when `timed` (the access log).
    pub(crate) fn new(timed: bool) -> RequestCtx {
        RequestCtx {
            started: timed.then(std::time::Instant::now),
            ..RequestCtx::default()
        }
    }
}

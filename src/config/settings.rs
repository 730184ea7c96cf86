//! The validated internal settings the running process reads, grouped by the YAML
//! section they come from (as River keeps its internal configuration apart from
//! the file's). Defaults are the file's (`conf/andera-lb.yaml`); see `file.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{client, cluster, headers, journal, outlier, traces, webhook};
use super::{AccessLogTarget, AuthSettings, Secret, WorkerSource, WELL_KNOWN_DEFAULT_KEY};

/// Validated settings used by the running process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Human description of where the settings came from, for messages.
    pub origin: String,
    /// Values whose meaning was guessed (e.g. `TASK_TIMEOUT="10000ms"`), logged at start-up.
    pub warnings: Vec<String>,
    /// Client listener address (`listen`, `PORT`). Default `0.0.0.0:4000`.
    pub listen: SocketAddr,
    /// The LB key (`auth.lb_key`, `LB_AUTH_KEY`).
    pub lb_key: Secret,
    /// Named clients and operator keys (`auth:`).
    pub auth: AuthSettings,
    /// The sidecar (`admin:`).
    pub admin: AdminSettings,
    /// Where the Worker list comes from, and how often it is read (`workers:`).
    pub workers: WorkerSettings,
    /// `/health` polling (`discovery:`).
    pub discovery: DiscoverySettings,
    /// Live slot feeds (`websocket:`).
    pub websocket: WebSocketSettings,
    /// The data path (`tasks:`).
    pub tasks: TaskSettings,
    /// Connections to Workers and their failures (`upstream:`).
    pub upstream: UpstreamSettings,
    /// Choices that copy the original exactly (`compat:`).
    pub compat: CompatSettings,
    /// Logs (`logging:`).
    pub logging: LoggingSettings,
    /// The process (`server:`).
    pub server: ServerSettings,
    /// Limits on client connections (`client:`).
    pub client: client::ClientLimits,
    /// Failure notices posted to webhooks (`webhook:`).
    pub webhook_notify: webhook::NotifyPolicy,
    /// Slots and queue shared with other instances through Redis (`cluster.redis`);
    /// `None`: this instance counts on its own.
    pub cluster: Option<cluster::ClusterSettings>,
    /// OpenTelemetry traces (`tracing:`, `OTEL_*`); `None`: off (no endpoint).
    pub tracing: Option<traces::TraceSettings>,
}

impl Settings {
    /// True when the LB key is the well-known default, which must be changed.
    pub fn uses_default_key(&self) -> bool {
        self.lb_key.expose() == WELL_KNOWN_DEFAULT_KEY
    }
}

/// `admin:` resolved.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Admin listener address. Default `127.0.0.1:4001`.
    pub listen: SocketAddr,
    /// `/dashboard` enabled. Default true.
    pub dashboard: bool,
    /// `/bull` enabled. Default true.
    pub bull_board: bool,
    /// Answer the admin pages on the client port too. Default false.
    pub expose_on_client_port: bool,
    /// Extra `Host` names the admin port answers (lower-case, without port).
    pub allowed_hosts: Vec<String>,
    /// Task records kept for the task board (at least 1). Default 10000.
    pub task_records: usize,
    /// Byte budget of the task board's records. Default 64 MiB.
    pub task_records_bytes: usize,
}

/// `workers:` resolved.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where the Worker list comes from. Default the file `workers.json`.
    pub source: WorkerSource,
    /// Period of the Worker list file check.
    pub reload_interval: Duration,
    /// Period of the lookups of `dns+` entries (`workers.dns.refresh_ms`). Default 5 s.
    pub dns_refresh: Duration,
    /// DNS server of `dns+` entries (`workers.dns.server`). Default `None`: the system's.
    pub dns_server: Option<SocketAddr>,
}

/// `discovery:` resolved.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// Period of `/health` polls. Default 3 s.
    pub interval: Duration,
    /// Timeout of one `/health` request. Default 3 s.
    pub timeout: Duration,
    /// Retries of a failed poll. Default 10.
    pub retries: u32,
}

/// `websocket:` resolved.
#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    /// Period of WebSocket pings. Default 3 s.
    pub heartbeat_interval: Duration,
    /// Silence after a ping that marks a Worker offline. Default 3 s.
    pub heartbeat_timeout: Duration,
    /// First WebSocket reconnect delay. Default 2 s.
    pub reconnect: Duration,
}

/// `tasks:` resolved.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Total time a task may take, queueing included. Default 300 s.
    pub timeout: Duration,
    /// Tries per task (at least 1). Default 3.
    pub attempts: u32,
    /// Largest request body in bytes. Default 10 MiB.
    pub body_limit: usize,
    /// Most tasks waiting at once. Default 10000.
    pub max_queued: usize,
    /// Total bytes of task bodies waiting for a slot. Default 256 MiB.
    pub max_queued_bytes: usize,
    /// How long a task for a group with no usable Worker waits for one to appear
    /// (`tasks.no_worker_wait_ms` / `NO_WORKER_WAIT_MS`). Default zero: `503` at once.
    pub no_worker_wait: Duration,
    /// `Retry-After` on a full queue, seconds (at least 1). Default 1.
    pub retry_after_s: u64,
    /// How long an accepted webhook task's `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Most `Idempotency-Key`s remembered at once.
    pub idempotency_max_keys: usize,
    /// Check a sync task's input at the edge (`tasks.validate_input`). Default true.
    pub validate_input: bool,
    /// Byte caps on client strings in a task.
    pub limits: crate::task::Limits,
    /// Journal of accepted webhook tasks; `None` keeps them in memory only.
    pub journal: Option<journal::Location>,
    /// Redis journal: silence after which another instance takes a task over.
    pub claim_idle: Duration,
    /// Largest journal database, bytes. Default 1 GiB.
    pub journal_max_bytes: u64,
    /// Re-run webhook tasks a crashed instance sent but never saw confirmed.
    pub redeliver_unconfirmed: bool,
}

/// `upstream:` resolved.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Connect timeout to Workers.
    pub connect_timeout: Duration,
    /// Keep-alive idle timeout of pooled Worker connections.
    pub pool_idle_timeout: Duration,
    /// Private CA for `https://` Workers.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a response header once a task is written; `None`: the task
    /// timeout alone.
    pub response_header_timeout: Option<Duration>,
    /// Longest pause between two body chunks of a Worker's answer. Default 60 s.
    pub body_idle_timeout: Duration,
    /// When Workers that keep failing leave the rotation, and for how long.
    pub outlier: outlier::OutlierPolicy,
    /// Client headers a Worker receives besides the fixed set. Default none.
    pub forward_headers: headers::ForwardList,
}

/// `compat:` resolved.
#[derive(Debug, Clone)]
pub struct CompatSettings {
    /// Answer the load balancer's own 502/503/504 as the original's `500`. Default false.
    pub original_status_codes: bool,
}

/// `logging:` resolved.
#[derive(Debug, Clone)]
pub struct LoggingSettings {
    /// Log level. Default info.
    pub level: log::LevelFilter,
    /// Lines kept for `/logs`. Default 1000.
    pub max_logs: usize,
    /// Byte budget of the lines kept for `/logs`.
    pub max_logs_bytes: usize,
    /// Where the access log goes (`logging.access_log`); `None` when off.
    pub access_log: Option<AccessLogTarget>,
}

/// `server:` resolved.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Client service threads (resolved: never 0).
    pub threads: usize,
    /// Shutdown grace period.
    pub grace_period: Duration,
    /// PID file.
    pub pid_file: String,
    /// Upgrade socket.
    pub upgrade_sock: String,
}

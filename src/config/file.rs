//! The external configuration: what operators write in `conf/andera-lb.yaml`.
//!
//! Every field has a serde default so that an empty file (or no file at all) is a
//! valid configuration; unknown keys are rejected so that typos are caught.

use serde::Deserialize;

/// Top level of `andera-lb.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Client listener (`PORT` overrides the port). Default `0.0.0.0:4000`.
    pub listen: String,
    /// Admin sidecar settings.
    pub admin: AdminSection,
    /// Keys.
    pub auth: AuthSection,
    /// Where the Worker list comes from.
    pub workers: WorkersSection,
    /// Worker `/health` polling.
    pub discovery: DiscoverySection,
    /// Worker WebSocket slot feeds.
    pub websocket: WebSocketSection,
    /// Task handling on the data path.
    pub tasks: TasksSection,
    /// Connections to Workers.
    pub upstream: UpstreamSection,
    /// Log level and the `/logs` ring.
    pub logging: LoggingSection,
    /// Process-level settings handed to Pingora.
    pub server: ServerSection,
    /// Limits on client connections (both ports).
    pub client: ClientSection,
    /// What the load balancer itself posts to task webhooks.
    pub webhook: WebhookSection,
    /// Compatibility with clients written for the original's answers.
    pub compat: CompatSection,
    /// OpenTelemetry traces over OTLP/HTTP; off without an endpoint.
    pub tracing: super::traces::TracingSection,
    /// Several instances sharing Worker slots and one queue through Redis.
    pub cluster: super::cluster::ClusterSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: "0.0.0.0:4000".into(),
            admin: AdminSection::default(),
            auth: AuthSection::default(),
            workers: WorkersSection::default(),
            discovery: DiscoverySection::default(),
            websocket: WebSocketSection::default(),
            tasks: TasksSection::default(),
            upstream: UpstreamSection::default(),
            logging: LoggingSection::default(),
            server: ServerSection::default(),
            client: ClientSection::default(),
            webhook: WebhookSection::default(),
            compat: CompatSection::default(),
            tracing: super::traces::TracingSection::default(),
            cluster: super::cluster::ClusterSection::default(),
        }
    }
}

/// `admin:` — the sidecar service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Admin listener (`ADMIN_PORT` overrides the port). Default `127.0.0.1:4001`.
    pub listen: String,
    /// Serve `/dashboard` (`DASHBOARD_ENABLED`). Default true.
    pub dashboard: bool,
    /// Serve `/bull` (`BULL_BOARD_ENABLED`). Default true.
    pub bull_board: bool,
    /// Also answer `/dashboard`, `/bull` and `/metrics` on the client port. Default false.
    pub expose_on_client_port: bool,
    /// Task records kept for the task board (a ring: memory stays bounded). Default 10000.
    pub task_records: usize,
    /// Byte budget of the task board's records, with kb/mb/gb units. Default `64mb`.
    pub task_records_bytes: String,
    /// Host names the admin port answers besides its own address, `localhost` and IP
    /// literals (DNS rebinding guard). Default empty.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:4001".into(),
            dashboard: true,
            bull_board: true,
            expose_on_client_port: false,
            task_records: 10_000,
            task_records_bytes: "64mb".into(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// `auth:` — the load balancer key, named clients and operator keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// The LB key (`LB_AUTH_KEY`). No default: start-up fails without one. It is
    /// also the client `default`, with no limits.
    pub lb_key: Option<String>,
    /// Named clients, inline. Default none.
    pub clients: Vec<crate::auth::clients::ClientEntry>,
    /// A YAML or JSON file with the same list, re-read when it changes
    /// (`CLIENTS_FILE`). Default none.
    pub clients_file: Option<String>,
    /// Keys that open the operator surfaces (`ADMIN_KEYS`, comma-separated; plain or
    /// `sha256:`). Default none: then the LB key is the admin key.
    pub admin_keys: Vec<String>,
    /// Keys that open the dashboard and the task board read-only. Default none.
    pub viewer_keys: Vec<String>,
}

/// `workers:` — the Worker list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// JSON file holding an array of Worker base URLs (`WORKERS_FILE`). Default `workers.json`.
    pub file: Option<String>,
    /// Inline Worker URLs; when set, `file` is not read.
    pub list: Option<Vec<String>>,
    /// How often the file is checked for changes, ms. Default 1000.
    pub reload_interval_ms: u64,
    /// `dns+http://NAME:PORT` entries: how NAME is looked up.
    pub dns: DnsSection,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            file: None,
            list: None,
            reload_interval_ms: 1000,
            dns: DnsSection::default(),
        }
    }
}

/// `workers.dns:` — Workers found by DNS (`dns+http://NAME:PORT` list entries).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// ms between lookups of every `dns+` entry's name. Default 5000.
    pub refresh_ms: u64,
    /// The DNS server asked, `ip:port` (e.g. `10.96.0.10:53`). Default `null`: the
    /// system's resolver (`/etc/resolv.conf`).
    pub server: Option<String>,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            refresh_ms: 5000,
            server: None,
        }
    }
}

/// `discovery:` — `/health` polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySection {
    /// ms between polls (`WORKER_DISCOVERY_INTERVAL`). Default 3000.
    pub interval_ms: u64,
    /// ms per request (`WORKER_DISCOVERY_TIMEOUT`). Default 3000.
    pub timeout_ms: u64,
    /// Retries per poll (`WORKER_DISCOVERY_RETRIES`). Default 10.
    pub retries: u32,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        DiscoverySection {
            interval_ms: 3000,
            timeout_ms: 3000,
            retries: 10,
        }
    }
}

/// `websocket:` — live slot feeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSection {
    /// ms between pings (`WS_HEARTBEAT_INTERVAL`). Default 3000.
    pub heartbeat_interval_ms: u64,
    /// ms to wait for an answer (`WS_HEARTBEAT_TIMEOUT`). Default 3000.
    pub heartbeat_timeout_ms: u64,
    /// First reconnect delay, ms; doubles up to 30 s. Default 2000.
    pub reconnect_ms: u64,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        WebSocketSection {
            heartbeat_interval_ms: 3000,
            heartbeat_timeout_ms: 3000,
            reconnect_ms: 2000,
        }
    }
}

/// `tasks:` — the data path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksSection {
    /// ms a task may take, waiting included (`TASK_TIMEOUT`). Default 300000.
    pub timeout_ms: u64,
    /// Tries per task (`TASK_ATTEMPTS`). Default 3.
    pub attempts: u32,
    /// Largest body, with kb/mb/gb units (`REQUEST_BODY_LIMIT`). Default `10mb`.
    pub body_limit: String,
    /// Most tasks waiting for a slot at once (`MAX_QUEUED_TASKS`). Default 10000.
    pub max_queued: usize,
    /// `Retry-After` seconds sent when the queue is full. Default 1.
    pub retry_after_s: u64,
    /// Where accepted webhook tasks are journaled before they are acknowledged, so
    /// they survive crashes, restarts and upgrades (`TASK_JOURNAL`): a SQLite file
    /// (one host), or `redis://host:port[/db]` to share one webhook queue between
    /// instances on several hosts (a Redis Stream). Default `null`: in memory only.
    pub journal: Option<String>,
    /// With a Redis journal, how long a task taken by an instance may go without a
    /// sign of life from it (ms) before another instance takes it over. Default 30000.
    pub claim_idle_ms: u64,
    /// Largest size of the journal's database, b/kb/mb/gb; beyond it new webhook tasks
    /// get 503 (as on a full disk). Default `1gb`.
    pub journal_max_size: String,
    /// After a crash, run again webhook tasks that were sent to a Worker but never
    /// confirmed (only for idempotent functions). Default false: they are marked `unknown`.
    pub redeliver_unconfirmed: bool,
    /// Total bytes of task bodies waiting for a slot, with kb/mb/gb units; beyond it
    /// tasks get 503 with `Retry-After`. Default `256mb`.
    pub max_queued_bytes: String,
    /// Longest `group`, `function` and `mode`, in bytes; longer is a 400. Default 256.
    pub max_name_bytes: usize,
    /// Longest `webhook.url`, in bytes; longer is a 400. Default 2048.
    pub max_url_bytes: usize,
    /// The waiting room (`NO_WORKER_WAIT_MS`): ms a task for a group with no usable
    /// Worker at all waits in the queue for one to appear (a rolling update, a
    /// Worker Deployment scaled from zero), within its `timeout_ms`. Default 0: `503`
    /// at once, as the original.
    pub no_worker_wait_ms: u64,
    /// How long an `Idempotency-Key` of an accepted webhook task is remembered (ms).
    /// Default 86400000 (a day).
    pub idempotency_ttl_ms: u64,
    /// Most `Idempotency-Key`s remembered at once (about 224 bytes each); the oldest
    /// are dropped first. Default 100000 (about 22 MB at most).
    pub idempotency_max_keys: usize,
    /// Check a sync task's `input` against its function's published `params` before
    /// it queues, and give the Worker's own `500` at once when it fails
    /// (`TASK_VALIDATE_INPUT`; README "Task control"). Default true.
    pub validate_input: bool,
}

impl Default for TasksSection {
    fn default() -> Self {
        TasksSection {
            timeout_ms: 300_000,
            attempts: 3,
            body_limit: "10mb".into(),
            max_queued: 10_000,
            retry_after_s: 1,
            journal: None,
            claim_idle_ms: 30_000,
            journal_max_size: "1gb".into(),
            redeliver_unconfirmed: false,
            max_queued_bytes: "256mb".into(),
            max_name_bytes: 256,
            max_url_bytes: 2048,
            no_worker_wait_ms: 0,
            idempotency_ttl_ms: crate::idempotency::DEFAULT_TTL_MS,
            idempotency_max_keys: crate::idempotency::DEFAULT_MAX_KEYS,
            validate_input: true,
        }
    }
}

/// `upstream:` — connections to Workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// TCP (and TLS) connect timeout, ms. Default 2000.
    pub connect_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept, ms. Kept below Node's 5 s
    /// keep-alive so that the Worker never closes a connection we are about to use. Default 4000.
    pub pool_idle_timeout_ms: u64,
    /// PEM file of a private CA trusted for `https://` Workers. Default none (system roots).
    pub ca_file: Option<String>,
    /// Longest wait for a Worker's response header once a task is sent, ms. Andera
    /// Workers send it only when a sync function finishes, so this bounds the run time
    /// of a task: any default shorter than `tasks.timeout_ms` would fail long tasks
    /// that the original completed. Default none: `tasks.timeout_ms` alone applies
    /// (a Worker that sits on a task past half of it still counts as failing).
    pub response_header_timeout_ms: Option<u64>,
    /// Longest pause between two chunks of a Worker's answer body, ms (there is no
    /// total cap on a body: a stream may outlast `tasks.timeout_ms`). Default 60000,
    /// like nginx's `proxy_read_timeout`: a function silent for a minute mid-answer
    /// is stuck, and a sync body arrives at once after its header anyway.
    pub body_idle_timeout_ms: u64,
    /// Failures in a row (not delivered, failed mid-task, no answer in time) after
    /// which a Worker is taken out of rotation; 0 never does. Default 3.
    pub max_fails: u32,
    /// How long an ejected Worker stays out, ms; doubles for each ejection without a
    /// success in between, up to 32 times. Default 10000.
    pub fail_timeout_ms: u64,
    /// Client headers passed on to the Worker besides the fixed set the original sent
    /// (its keys, `content-type: application/json`, our task id, trace context);
    /// case-insensitive names, never hop-by-hop ones. Default empty.
    pub forward_headers: Vec<String>,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            connect_timeout_ms: 2000,
            pool_idle_timeout_ms: 4000,
            ca_file: None,
            response_header_timeout_ms: None,
            body_idle_timeout_ms: 60_000,
            max_fails: 3,
            fail_timeout_ms: 10_000,
            forward_headers: Vec::new(),
        }
    }
}

/// `logging:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// debug, info, warn or error (`LOG_LEVEL`). Default info.
    pub level: String,
    /// Lines kept for `/logs` (`MAX_LOGS`). Default 1000.
    pub max_logs: usize,
    /// Byte budget of the lines kept for `/logs`, with kb/mb/gb units. Default `4mb`.
    pub max_logs_bytes: String,
    /// One JSON line per request on both ports, to `stdout`, `stderr` or a file
    /// path (reopened on SIGUSR1 or when renamed). Default off.
    pub access_log: Option<String>,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: "info".into(),
            max_logs: 1000,
            max_logs_bytes: "4mb".into(),
            access_log: None,
        }
    }
}

/// `server:` — process settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Worker threads of the client service; 0 = one per CPU. Default 0.
    pub threads: usize,
    /// Seconds in-flight and queued tasks get to finish on shutdown. Default 30.
    pub grace_period_s: u64,
    /// PID file. Default `/tmp/andera-lb.pid`.
    pub pid_file: String,
    /// Socket used to hand listeners to a new binary on upgrade. Default `/tmp/andera-lb-upgrade.sock`.
    pub upgrade_sock: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: 0,
            grace_period_s: 30,
            pid_file: "/tmp/andera-lb.pid".into(),
            upgrade_sock: "/tmp/andera-lb-upgrade.sock".into(),
        }
    }
}

/// `client:` — limits on client connections, on the client and the admin port
/// (nginx's `client_header_timeout`, `keepalive_timeout`, `client_body_timeout`,
/// `send_timeout` and `large_client_header_buffers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// ms a client has to send a whole request header, from its first byte (or from
    /// accept on a new connection). Default 10000.
    pub header_timeout_ms: u64,
    /// ms an idle keep-alive connection is kept between requests. Default 60000.
    pub idle_timeout_ms: u64,
    /// Longest pause between two reads of a request body, ms. Default 30000.
    pub body_timeout_ms: u64,
    /// Longest time a client may accept no answer bytes, ms; then the task fails and
    /// its Worker connection and slot are freed. Default 30000.
    pub send_timeout_ms: u64,
    /// Largest request header block (request line and headers), bytes. Default 16384.
    pub max_header_bytes: usize,
    /// After the LB closes a connection, ms it keeps reading and discarding what the
    /// client still sends, so the client reads the answer instead of a reset (nginx's
    /// `lingering_time`). Default 30000.
    pub lingering_time_ms: u64,
    /// Longest wait for more bytes during that, ms (nginx's `lingering_timeout`).
    /// Default 5000.
    pub lingering_timeout_ms: u64,
    /// On shutdown or upgrade, ms an idle keep-alive connection stays open for a
    /// request a proxy in front may already be sending on it (answered, with
    /// `Connection: close`, instead of racing a close). Default 2000.
    pub shutdown_idle_ms: u64,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For` / `X-Real-IP` name the
    /// client in the access log, as nginx's `set_real_ip_from`. Default none.
    pub trusted_proxies: Vec<String>,
}

impl Default for ClientSection {
    fn default() -> Self {
        ClientSection {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            send_timeout_ms: 30_000,
            max_header_bytes: 16_384,
            lingering_time_ms: 30_000,
            lingering_timeout_ms: 5_000,
            shutdown_idle_ms: 2_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `webhook:` — what the load balancer itself posts to a task's webhook.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// Post `{"success":false,"error":…}` to a webhook task's URL when the task finally
    /// fails before a Worker took it (the Worker posts every other result). Default false.
    pub notify_failures: bool,
    /// Hosts (`name` or `name:port`) the load balancer may post failures to; the
    /// client names the URL, so nothing else is ever fetched. Default empty.
    pub allowed_hosts: Vec<String>,
}

/// `compat:` — answers shaped for clients written against the original.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSection {
    /// Answer the load balancer's own `502`/`503`/`504` as the original did: `500`
    /// `{"error":"Task timed out"}` (`COMPAT_ORIGINAL_STATUS`). Workers' own answers
    /// are relayed unchanged either way. Default false.
    pub original_status_codes: bool,
}

//! Configuration: the YAML file, the original's environment variables on top, and
//! the validated internal [`Settings`] the rest of the code uses.

pub mod auth;
pub mod client;
pub mod cluster;
mod env;
pub mod file;
pub mod headers;
pub mod journal;
pub mod outlier;
pub mod traces;
pub mod webhook;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{AccessLogTarget, AuthSettings};
use file::FileConfig;

/// Where settings come from when no `--config` file is given (in messages).
const NO_CONFIG_FILE: &str = "built-in defaults (no --config file)";

/// The LB key everybody copies from the original's examples.
pub const WELL_KNOWN_DEFAULT_KEY: &str = "default-lb-auth-key";

/// A configuration problem: which key, where it came from, and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the bad value came from: a file path or `environment`.
    pub origin: String,
    /// The setting, e.g. `TASK_TIMEOUT` or `tasks.timeout_ms`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The LB key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Secret(key.into())
    }
    /// The key itself, for headers and comparisons only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the Worker list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerSource {
    /// A JSON array of base URLs in a file, re-read when it changes.
    File(PathBuf),
    /// URLs given inline in the YAML.
    Inline(Vec<String>),
}

/// Validated settings used by the running process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Human description of where the settings came from, for messages.
    pub origin: String,
    /// Values whose meaning was guessed (e.g. `TASK_TIMEOUT="10000ms"`), logged at start-up.
    pub warnings: Vec<String>,
    /// Client listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// `/dashboard` enabled.
    pub dashboard_enabled: bool,
    /// `/bull` enabled.
    pub bull_board_enabled: bool,
    /// Answer the admin pages on the client port too.
    pub expose_admin_on_client_port: bool,
    /// Extra `Host` names the admin port answers (lower-case, without port).
    pub admin_allowed_hosts: Vec<String>,
    /// Task records kept for the task board.
    pub task_records: usize,
    /// Byte budget of the task board's records.
    pub task_records_bytes: usize,
    /// The LB key.
    pub lb_key: Secret,
    /// Named clients and operator keys (`auth:`).
    pub auth: AuthSettings,
    /// Where the Worker list comes from.
    pub workers: WorkerSource,
    /// Period of the Worker list file check.
    pub workers_reload_interval: Duration,
    /// Period of the lookups of `dns+` entries (`workers.dns.refresh_ms`). Default 5 s.
    pub dns_refresh: Duration,
    /// DNS server of `dns+` entries (`workers.dns.server`). Default `None`: the system's.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Period of `/health` polls.
    pub discovery_interval: Duration,
    /// Timeout of one `/health` request.
    pub discovery_timeout: Duration,
    /// Retries of a failed poll.
    pub discovery_retries: u32,
    /// Period of WebSocket pings.
    pub ws_heartbeat_interval: Duration,
    /// Silence after a ping that marks a Worker offline.
    pub ws_heartbeat_timeout: Duration,
    /// First WebSocket reconnect delay.
    pub ws_reconnect: Duration,
    /// Total time a task may take, queueing included.
    pub task_timeout: Duration,
    /// Tries per task (at least 1).
    pub task_attempts: u32,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Most tasks waiting at once.
    pub max_queued: usize,
    /// How long a task for a group with no usable Worker waits for one to appear
    /// (`tasks.no_worker_wait_ms` / `NO_WORKER_WAIT_MS`). Default zero: `503` at once.
    pub no_worker_wait: Duration,
    /// `Retry-After` on a full queue, seconds.
    pub retry_after_s: u64,
    /// How long an accepted webhook task's `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Most `Idempotency-Key`s remembered at once.
    pub idempotency_max_keys: usize,
    /// Check a sync task's input at the edge (`tasks.validate_input`). Default true.
    pub validate_input: bool,
    /// Journal of accepted webhook tasks; `None` keeps them in memory only.
    pub journal: Option<journal::Location>,
    /// Redis journal: silence after which another instance takes a task over.
    pub claim_idle: Duration,
    /// Largest journal database, bytes.
    pub journal_max_bytes: u64,
    /// Re-run webhook tasks a crashed instance sent but never saw confirmed.
    pub redeliver_unconfirmed: bool,
    /// Slots and queue shared with other instances through Redis (`cluster.redis`);
    /// `None`: this instance counts on its own.
    pub cluster: Option<cluster::ClusterSettings>,
    /// Total bytes of task bodies waiting for a slot.
    pub max_queued_bytes: usize,
    /// Byte caps on client strings in a task.
    pub task_limits: crate::task::Limits,
    /// Connect timeout to Workers.
    pub connect_timeout: Duration,
    /// Keep-alive idle timeout of pooled Worker connections.
    pub pool_idle_timeout: Duration,
    /// Private CA for `https://` Workers.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a response header once a task is written; `None`: the task
    /// timeout alone.
    pub response_header_timeout: Option<Duration>,
    /// Longest pause between two body chunks of a Worker's answer.
    pub body_idle_timeout: Duration,
    /// When Workers that keep failing leave the rotation, and for how long.
    pub outlier: outlier::OutlierPolicy,
    /// Client headers a Worker receives besides the fixed set. Default none.
    pub forward_headers: headers::ForwardList,
    /// Answer the load balancer's own 502/503/504 as the original's `500`. Default false.
    pub original_status_codes: bool,
    /// Log level.
    pub log_level: log::LevelFilter,
    /// Lines kept for `/logs`.
    pub max_logs: usize,
    /// Byte budget of the lines kept for `/logs`.
    pub max_logs_bytes: usize,
    /// Where the access log goes (`logging.access_log`); `None` when off.
    pub access_log: Option<AccessLogTarget>,
    /// Client service threads (resolved: never 0).
    pub threads: usize,
    /// Shutdown grace period.
    pub grace_period: Duration,
    /// PID file.
    pub pid_file: String,
    /// Upgrade socket.
    pub upgrade_sock: String,
    /// Limits on client connections.
    pub client: client::ClientLimits,
    /// Failure notices posted to webhooks.
    pub webhook_notify: webhook::NotifyPolicy,
    /// OpenTelemetry traces (`tracing:`, `OTEL_*`); `None`: off (no endpoint).
    pub tracing: Option<traces::TraceSettings>,
}

impl Settings {
    /// True when the LB key is the well-known default, which must be changed.
    pub fn uses_default_key(&self) -> bool {
        self.lb_key.expose() == WELL_KNOWN_DEFAULT_KEY
    }
}

/// Loads settings from an optional YAML file and the environment given by `env`.
///
/// With no file, defaults apply and the Worker list is `./workers.json` (or
/// `WORKERS_FILE`), exactly like the original.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let (mut cfg, origin) = match path {
        Some(p) => {
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                origin: origin.clone(),
                key: String::new(),
                reason: format!("cannot read: {e}"),
            })?;
            let cfg: FileConfig = if text.trim().is_empty() {
                FileConfig::default()
            } else {
                serde_yaml::from_str(&text).map_err(|e| ConfigError {
                    origin: origin.clone(),
                    key: String::new(),
                    reason: e.to_string(),
                })?
            };
            (cfg, origin)
        }
        None => (FileConfig::default(), NO_CONFIG_FILE.to_string()),
    };
    let warnings = env::apply_env(&mut cfg, env)?;
    let mut settings = resolve(cfg, origin)?;
    settings.warnings = warnings;
    Ok(settings)
}

/// Parses `10mb`, `512kb`, `1gb`, `100b` or a bare byte count (1 kb = 1024 bytes, as in Express).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("expected a size such as 10mb, got {text:?}"))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "kb" | "k" => 1024.0,
        "mb" | "m" => 1024.0 * 1024.0,
        "gb" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("unknown unit in {text:?}: use b, kb, mb or gb")),
    };
    let bytes = num * mult;
    if !(1.0..=(u32::MAX as f64) * 4.0).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as usize)
}

fn resolve(cfg: FileConfig, origin: String) -> Result<Settings, ConfigError> {
    let err = |key: &str, reason: String| ConfigError {
        origin: origin.clone(),
        key: key.into(),
        reason,
    };
    let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
        v.parse().map_err(|_| {
            err(
                key,
                format!("expected host:port with an IP address, got {v:?}"),
            )
        })
    };
    let positive = |key: &str, v: u64| -> Result<Duration, ConfigError> {
        if v == 0 {
            Err(err(key, "must be greater than 0".into()))
        } else {
            Ok(Duration::from_millis(v))
        }
    };
    let auth = AuthSettings::resolve(&cfg.auth).map_err(|(key, r)| err(key, r))?;
    let lb_key = match cfg.auth.lb_key {
        Some(k) if !k.trim().is_empty() => {
            let k = k.trim();
            if let Some(pos) = k.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
                // The key itself is never echoed: only where the bad character is.
                return Err(ConfigError {
                    origin: origin.clone(),
                    key: "LB_AUTH_KEY (auth.lb_key)".into(),
                    reason: format!(
                        "character {} cannot be sent in an HTTP header (a space, control or non-ASCII character); use printable ASCII without spaces",
                        pos + 1
                    ),
                });
            }
            Secret::new(k)
        }
        _ => {
            return Err(ConfigError {
                origin: "environment".into(),
                key: "LB_AUTH_KEY".into(),
                reason: if origin == NO_CONFIG_FILE {
                    "not set: the load balancer refuses to start without a key (set LB_AUTH_KEY \
                     in the environment or .env, or auth.lb_key in a --config file)"
                        .to_string()
                } else {
                    format!(
                        "not set: the load balancer refuses to start without a key (set LB_AUTH_KEY \
                         in the environment or .env, or auth.lb_key in {origin})"
                    )
                },
            })
        }
    };
    let workers = match (cfg.workers.list, cfg.workers.file) {
        (Some(list), _) => WorkerSource::Inline(list),
        (None, Some(file)) => WorkerSource::File(PathBuf::from(file)),
        (None, None) => WorkerSource::File(PathBuf::from("workers.json")),
    };
    if let WorkerSource::Inline(list) = &workers {
        for url in list {
            crate::worker_url::check_entry(url).map_err(|r| err("workers.list", r))?;
        }
    }
    let log_level = match cfg.logging.level.trim().to_ascii_lowercase().as_str() {
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" | "warning" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        "trace" => log::LevelFilter::Trace,
        other => {
            return Err(err(
                "logging.level / LOG_LEVEL",
                format!("expected debug, info, warn or error, got {other:?}"),
            ))
        }
    };
    let body_limit = parse_size(&cfg.tasks.body_limit).map_err(|r| err("tasks.body_limit", r))?;
    if cfg.tasks.attempts == 0 {
        return Err(err(
            "tasks.attempts / TASK_ATTEMPTS",
            "must be at least 1".into(),
        ));
    }
    if cfg.tasks.max_queued == 0 {
        return Err(err("tasks.max_queued", "must be at least 1".into()));
    }
    let max_queued_bytes =
        parse_size(&cfg.tasks.max_queued_bytes).map_err(|r| err("tasks.max_queued_bytes", r))?;
    let task_records_bytes = parse_size(&cfg.admin.task_records_bytes)
        .map_err(|r| err("admin.task_records_bytes", r))?;
    let max_logs_bytes =
        parse_size(&cfg.logging.max_logs_bytes).map_err(|r| err("logging.max_logs_bytes", r))?;
    for (key, v) in [
        ("tasks.max_name_bytes", cfg.tasks.max_name_bytes),
        ("tasks.max_url_bytes", cfg.tasks.max_url_bytes),
    ] {
        if v == 0 {
            return Err(err(key, "must be at least 1".into()));
        }
    }
    if cfg.logging.max_logs == 0 {
        return Err(err(
            "logging.max_logs / MAX_LOGS",
            "must be at least 1".into(),
        ));
    }
    let threads = if cfg.server.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.server.threads
    };
    Ok(Settings {
        listen: addr("listen", &cfg.listen)?,
        admin_listen: addr("admin.listen", &cfg.admin.listen)?,
        dashboard_enabled: cfg.admin.dashboard,
        bull_board_enabled: cfg.admin.bull_board,
        expose_admin_on_client_port: cfg.admin.expose_on_client_port,
        admin_allowed_hosts: cfg
            .admin
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        warnings: Vec::new(),
        task_records: cfg.admin.task_records.max(1),
        task_records_bytes,
        lb_key,
        auth,
        workers,
        workers_reload_interval: positive(
            "workers.reload_interval_ms",
            cfg.workers.reload_interval_ms,
        )?,
        dns_refresh: positive("workers.dns.refresh_ms", cfg.workers.dns.refresh_ms)?,
        dns_server: cfg
            .workers
            .dns
            .server
            .as_deref()
            .map(|s| {
                s.trim().parse().map_err(|_| {
                    err(
                        "workers.dns.server",
                        format!("expected ip:port of a DNS server (e.g. 10.96.0.10:53), got {s:?}"),
                    )
                })
            })
            .transpose()?,
        discovery_interval: positive("discovery.interval_ms", cfg.discovery.interval_ms)?,
        discovery_timeout: positive("discovery.timeout_ms", cfg.discovery.timeout_ms)?,
        discovery_retries: cfg.discovery.retries,
        ws_heartbeat_interval: positive(
            "websocket.heartbeat_interval_ms",
            cfg.websocket.heartbeat_interval_ms,
        )?,
        ws_heartbeat_timeout: positive(
            "websocket.heartbeat_timeout_ms",
            cfg.websocket.heartbeat_timeout_ms,
        )?,
        ws_reconnect: positive("websocket.reconnect_ms", cfg.websocket.reconnect_ms)?,
        task_timeout: positive("tasks.timeout_ms / TASK_TIMEOUT", cfg.tasks.timeout_ms)?,
        task_attempts: cfg.tasks.attempts,
        body_limit,
        max_queued: cfg.tasks.max_queued,
        no_worker_wait: Duration::from_millis(cfg.tasks.no_worker_wait_ms),
        retry_after_s: cfg.tasks.retry_after_s.max(1),
        idempotency_ttl: positive("tasks.idempotency_ttl_ms", cfg.tasks.idempotency_ttl_ms)?,
        idempotency_max_keys: cfg.tasks.idempotency_max_keys.max(1),
        validate_input: cfg.tasks.validate_input,
        journal: cfg
            .tasks
            .journal
            .as_deref()
            .map(journal::Location::parse)
            .transpose()
            .map_err(|r| err("tasks.journal / TASK_JOURNAL", r))?,
        claim_idle: positive("tasks.claim_idle_ms", cfg.tasks.claim_idle_ms)?,
        journal_max_bytes: parse_size(&cfg.tasks.journal_max_size)
            .map_err(|r| err("tasks.journal_max_size", r))? as u64,
        redeliver_unconfirmed: cfg.tasks.redeliver_unconfirmed,
        cluster: cfg.cluster.resolve().map_err(|(key, r)| err(key, r))?,
        max_queued_bytes,
        task_limits: crate::task::Limits {
            max_name_bytes: cfg.tasks.max_name_bytes,
            max_url_bytes: cfg.tasks.max_url_bytes,
        },
        connect_timeout: positive(
            "upstream.connect_timeout_ms",
            cfg.upstream.connect_timeout_ms,
        )?,
        pool_idle_timeout: positive(
            "upstream.pool_idle_timeout_ms",
            cfg.upstream.pool_idle_timeout_ms,
        )?,
        ca_file: cfg.upstream.ca_file.map(PathBuf::from),
        response_header_timeout: match cfg.upstream.response_header_timeout_ms {
            None => None,
            Some(ms) => Some(positive("upstream.response_header_timeout_ms", ms)?),
        },
        body_idle_timeout: positive(
            "upstream.body_idle_timeout_ms",
            cfg.upstream.body_idle_timeout_ms,
        )?,
        outlier: outlier::OutlierPolicy {
            max_fails: cfg.upstream.max_fails,
            fail_timeout: positive("upstream.fail_timeout_ms", cfg.upstream.fail_timeout_ms)?,
        },
        forward_headers: headers::ForwardList::resolve(&cfg.upstream.forward_headers)
            .map_err(|r| err("upstream.forward_headers", r))?,
        original_status_codes: cfg.compat.original_status_codes,
        log_level,
        max_logs: cfg.logging.max_logs,
        max_logs_bytes,
        access_log: cfg
            .logging
            .access_log
            .as_deref()
            .map(AccessLogTarget::parse),
        threads,
        grace_period: Duration::from_secs(cfg.server.grace_period_s),
        pid_file: cfg.server.pid_file,
        upgrade_sock: cfg.server.upgrade_sock,
        client: client::ClientLimits::resolve(&cfg.client).map_err(|(key, r)| err(key, r))?,
        webhook_notify: webhook::NotifyPolicy::resolve(&cfg.webhook)
            .map_err(|(key, r)| err(key, r))?,
        tracing: cfg.tracing.resolve().map_err(|(key, r)| err(key, r))?,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_original() {
        let s = load(None, &env_of(&[("LB_AUTH_KEY", "k")])).unwrap();
        assert_eq!(s.listen.port(), 4000);
        assert_eq!(s.admin_listen.to_string(), "127.0.0.1:4001");
        assert_eq!(s.workers, WorkerSource::File("workers.json".into()));
        assert_eq!(s.task_timeout, Duration::from_secs(300));
        assert_eq!(s.body_limit, 10 * 1024 * 1024);
        assert_eq!(s.max_logs, 1000);
        assert_eq!(s.max_queued_bytes, 256 << 20);
        assert_eq!(s.task_limits, crate::task::Limits::default());
        assert!(!s.uses_default_key());
    }

    #[test]
    fn missing_key_refuses() {
        let e = load(None, &env_of(&[])).unwrap_err();
        assert_eq!(e.key, "LB_AUTH_KEY");
        for bad in ["se cret", "caf\u{e9}", "a\u{7f}b"] {
            let e = load(None, &env_of(&[("LB_AUTH_KEY", bad)])).unwrap_err();
            assert!(
                e.to_string().contains("cannot be sent in an HTTP header"),
                "{e}"
            );
            assert!(!e.to_string().contains(bad), "the key is never echoed: {e}");
        }
    }

    #[test]
    fn env_overrides_and_names_bad_values() {
        let s = load(
            None,
            &env_of(&[
                ("LB_AUTH_KEY", "k"),
                ("PORT", "5000"),
                ("REQUEST_BODY_LIMIT", "1kb"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen.port(), 5000);
        assert_eq!(s.body_limit, 1024);
        let e = load(
            None,
            &env_of(&[("LB_AUTH_KEY", "k"), ("TASK_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("environment", "TASK_TIMEOUT")
        );
    }

    #[test]
    fn yaml_typos_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lb.yaml");
        std::fs::write(&p, "tasks:\n  timeout_msx: 5\n").unwrap();
        let e = load(Some(&p), &env_of(&[("LB_AUTH_KEY", "k")])).unwrap_err();
        assert!(e.to_string().contains("lb.yaml"), "{e}");
        assert!(e.to_string().contains("timeout_msx"), "{e}");
    }

    #[test]
    fn upstream_fault_settings() {
        let s = load(None, &env_of(&[("LB_AUTH_KEY", "k")])).unwrap();
        assert_eq!(s.response_header_timeout, None);
        assert_eq!(s.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(s.outlier.max_fails, 3);
        assert_eq!(s.outlier.fail_timeout, Duration::from_secs(10));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lb.yaml");
        std::fs::write(&p, "upstream:\n  response_header_timeout_ms: 0\n").unwrap();
        let e = load(Some(&p), &env_of(&[("LB_AUTH_KEY", "k")])).unwrap_err();
        assert_eq!(e.key, "upstream.response_header_timeout_ms");
        std::fs::write(&p, "upstream:\n  response_header_timeout_ms: 250\n").unwrap();
        let s = load(Some(&p), &env_of(&[("LB_AUTH_KEY", "k")])).unwrap();
        assert_eq!(s.response_header_timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn byte_budgets_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lb.yaml");
        let env = env_of(&[("LB_AUTH_KEY", "k")]);
        for (yaml, key) in [
            (
                "tasks:\n  max_queued_bytes: lots\n",
                "tasks.max_queued_bytes",
            ),
            ("tasks:\n  max_name_bytes: 0\n", "tasks.max_name_bytes"),
            ("logging:\n  max_logs_bytes: 0\n", "logging.max_logs_bytes"),
            (
                "admin:\n  task_records_bytes: 1tb\n",
                "admin.task_records_bytes",
            ),
        ] {
            std::fs::write(&p, yaml).unwrap();
            assert_eq!(load(Some(&p), &env).unwrap_err().key, key, "{yaml}");
        }
        std::fs::write(&p, "tasks:\n  max_queued_bytes: 1kb\n  max_url_bytes: 9\n").unwrap();
        let s = load(Some(&p), &env).unwrap();
        assert_eq!((s.max_queued_bytes, s.task_limits.max_url_bytes), (1024, 9));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10mb"), Ok(10 << 20));
        assert_eq!(parse_size("100kb"), Ok(100 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("10 parsecs").is_err());
    }
}

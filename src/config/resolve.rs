//! From the file's sections (with the environment applied) to [`Settings`]: each
//! section is checked and converted by its own function, and every refusal names
//! its key and where the value came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{
    AdminSection, DiscoverySection, FileConfig, LoggingSection, ServerSection, TasksSection,
    UpstreamSection, WebSocketSection, WorkersSection,
};
use super::settings::*;
use super::NO_CONFIG_FILE;
use super::{client, headers, journal, outlier, webhook};
use super::{parse_size, AccessLogTarget, AuthSettings, ConfigError, Secret, WorkerSource};

/// Builds [`ConfigError`]s that name where the values came from.
struct Resolver {
    origin: String,
}

impl Resolver {
    fn err(&self, key: &str, reason: String) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: key.into(),
            reason,
        }
    }

    fn addr(&self, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
        v.parse().map_err(|_| {
            self.err(
                key,
                format!("expected host:port with an IP address, got {v:?}"),
            )
        })
    }

    fn positive(&self, key: &str, ms: u64) -> Result<Duration, ConfigError> {
        if ms == 0 {
            Err(self.err(key, "must be greater than 0".into()))
        } else {
            Ok(Duration::from_millis(ms))
        }
    }

    fn size(&self, key: &str, text: &str) -> Result<usize, ConfigError> {
        parse_size(text).map_err(|r| self.err(key, r))
    }

    fn at_least_one(&self, key: &str, n: u64) -> Result<(), ConfigError> {
        if n == 0 {
            return Err(self.err(key, "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Checks and converts every section.
pub(super) fn resolve(cfg: FileConfig, origin: String) -> Result<Settings, ConfigError> {
    let r = Resolver { origin };
    let keyed = |(key, reason): (&str, String)| r.err(key, reason);
    Ok(Settings {
        listen: r.addr("listen", &cfg.listen)?,
        lb_key: lb_key(&r, cfg.auth.lb_key.as_deref())?,
        auth: AuthSettings::resolve(&cfg.auth).map_err(keyed)?,
        admin: admin(&r, &cfg.admin)?,
        workers: workers(&r, cfg.workers)?,
        discovery: discovery(&r, &cfg.discovery)?,
        websocket: websocket(&r, &cfg.websocket)?,
        tasks: tasks(&r, &cfg.tasks)?,
        upstream: upstream(&r, &cfg.upstream)?,
        compat: CompatSettings {
            original_status_codes: cfg.compat.original_status_codes,
        },
        logging: logging(&r, &cfg.logging)?,
        server: server(cfg.server),
        client: client::ClientLimits::resolve(&cfg.client).map_err(keyed)?,
        webhook_notify: webhook::NotifyPolicy::resolve(&cfg.webhook).map_err(keyed)?,
        cluster: cfg.cluster.resolve().map_err(keyed)?,
        tracing: cfg.tracing.resolve().map_err(keyed)?,
        warnings: Vec::new(),
        origin: r.origin,
    })
}

/// The LB key: required, and sendable in an HTTP header. It is never echoed, only
/// where a bad character is.
fn lb_key(r: &Resolver, key: Option<&str>) -> Result<Secret, ConfigError> {
    let key = key.map(str::trim).filter(|k| !k.is_empty());
    let Some(k) = key else {
        let where_ = if r.origin == NO_CONFIG_FILE {
            "a --config file".to_string()
        } else {
            r.origin.clone()
        };
        return Err(ConfigError {
            origin: "environment".into(),
            key: "LB_AUTH_KEY".into(),
            reason: format!(
                "not set: the load balancer refuses to start without a key (set LB_AUTH_KEY \
                 in the environment or .env, or auth.lb_key in {where_})"
            ),
        });
    };
    if let Some(pos) = k.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(r.err(
            "LB_AUTH_KEY (auth.lb_key)",
            format!(
                "character {} cannot be sent in an HTTP header (a space, control or \
                 non-ASCII character); use printable ASCII without spaces",
                pos + 1
            ),
        ));
    }
    Ok(Secret::new(k))
}

fn admin(r: &Resolver, a: &AdminSection) -> Result<AdminSettings, ConfigError> {
    Ok(AdminSettings {
        listen: r.addr("admin.listen", &a.listen)?,
        dashboard: a.dashboard,
        bull_board: a.bull_board,
        expose_on_client_port: a.expose_on_client_port,
        allowed_hosts: a
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        task_records: a.task_records.max(1),
        task_records_bytes: r.size("admin.task_records_bytes", &a.task_records_bytes)?,
    })
}

fn workers(r: &Resolver, w: WorkersSection) -> Result<WorkerSettings, ConfigError> {
    let source = match (w.list, w.file) {
        (Some(list), _) => WorkerSource::Inline(list),
        (None, Some(file)) => WorkerSource::File(PathBuf::from(file)),
        (None, None) => WorkerSource::File(PathBuf::from("workers.json")),
    };
    if let WorkerSource::Inline(list) = &source {
        for url in list {
            crate::worker_url::check_entry(url).map_err(|e| r.err("workers.list", e))?;
        }
    }
    let dns_server = w
        .dns
        .server
        .as_deref()
        .map(|s| {
            s.trim().parse().map_err(|_| {
                r.err(
                    "workers.dns.server",
                    format!("expected ip:port of a DNS server (e.g. 10.96.0.10:53), got {s:?}"),
                )
            })
        })
        .transpose()?;
    Ok(WorkerSettings {
        source,
        reload_interval: r.positive("workers.reload_interval_ms", w.reload_interval_ms)?,
        dns_refresh: r.positive("workers.dns.refresh_ms", w.dns.refresh_ms)?,
        dns_server,
    })
}

fn discovery(r: &Resolver, d: &DiscoverySection) -> Result<DiscoverySettings, ConfigError> {
    Ok(DiscoverySettings {
        interval: r.positive("discovery.interval_ms", d.interval_ms)?,
        timeout: r.positive("discovery.timeout_ms", d.timeout_ms)?,
        retries: d.retries,
    })
}

fn websocket(r: &Resolver, w: &WebSocketSection) -> Result<WebSocketSettings, ConfigError> {
    Ok(WebSocketSettings {
        heartbeat_interval: r
            .positive("websocket.heartbeat_interval_ms", w.heartbeat_interval_ms)?,
        heartbeat_timeout: r.positive("websocket.heartbeat_timeout_ms", w.heartbeat_timeout_ms)?,
        reconnect: r.positive("websocket.reconnect_ms", w.reconnect_ms)?,
    })
}

fn tasks(r: &Resolver, t: &TasksSection) -> Result<TaskSettings, ConfigError> {
    r.at_least_one("tasks.attempts / TASK_ATTEMPTS", u64::from(t.attempts))?;
    r.at_least_one("tasks.max_queued", t.max_queued as u64)?;
    r.at_least_one("tasks.max_name_bytes", t.max_name_bytes as u64)?;
    r.at_least_one("tasks.max_url_bytes", t.max_url_bytes as u64)?;
    Ok(TaskSettings {
        timeout: r.positive("tasks.timeout_ms / TASK_TIMEOUT", t.timeout_ms)?,
        attempts: t.attempts,
        body_limit: r.size("tasks.body_limit", &t.body_limit)?,
        max_queued: t.max_queued,
        max_queued_bytes: r.size("tasks.max_queued_bytes", &t.max_queued_bytes)?,
        no_worker_wait: Duration::from_millis(t.no_worker_wait_ms),
        retry_after_s: t.retry_after_s.max(1),
        idempotency_ttl: r.positive("tasks.idempotency_ttl_ms", t.idempotency_ttl_ms)?,
        idempotency_max_keys: t.idempotency_max_keys.max(1),
        validate_input: t.validate_input,
        limits: crate::task::Limits {
            max_name_bytes: t.max_name_bytes,
            max_url_bytes: t.max_url_bytes,
        },
        journal: t
            .journal
            .as_deref()
            .map(journal::Location::parse)
            .transpose()
            .map_err(|e| r.err("tasks.journal / TASK_JOURNAL", e))?,
        claim_idle: r.positive("tasks.claim_idle_ms", t.claim_idle_ms)?,
        journal_max_bytes: r.size("tasks.journal_max_size", &t.journal_max_size)? as u64,
        redeliver_unconfirmed: t.redeliver_unconfirmed,
    })
}

fn upstream(r: &Resolver, u: &UpstreamSection) -> Result<UpstreamSettings, ConfigError> {
    let response_header_timeout = u
        .response_header_timeout_ms
        .map(|ms| r.positive("upstream.response_header_timeout_ms", ms))
        .transpose()?;
    Ok(UpstreamSettings {
        connect_timeout: r.positive("upstream.connect_timeout_ms", u.connect_timeout_ms)?,
        pool_idle_timeout: r.positive("upstream.pool_idle_timeout_ms", u.pool_idle_timeout_ms)?,
        ca_file: u.ca_file.as_ref().map(PathBuf::from),
        response_header_timeout,
        body_idle_timeout: r.positive("upstream.body_idle_timeout_ms", u.body_idle_timeout_ms)?,
        outlier: outlier::OutlierPolicy {
            max_fails: u.max_fails,
            fail_timeout: r.positive("upstream.fail_timeout_ms", u.fail_timeout_ms)?,
        },
        forward_headers: headers::ForwardList::resolve(&u.forward_headers)
            .map_err(|e| r.err("upstream.forward_headers", e))?,
    })
}

fn logging(r: &Resolver, l: &LoggingSection) -> Result<LoggingSettings, ConfigError> {
    let level = match l.level.trim().to_ascii_lowercase().as_str() {
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" | "warning" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        "trace" => log::LevelFilter::Trace,
        other => {
            return Err(r.err(
                "logging.level / LOG_LEVEL",
                format!("expected debug, info, warn or error, got {other:?}"),
            ))
        }
    };
    r.at_least_one("logging.max_logs / MAX_LOGS", l.max_logs as u64)?;
    Ok(LoggingSettings {
        level,
        max_logs: l.max_logs,
        max_logs_bytes: r.size("logging.max_logs_bytes", &l.max_logs_bytes)?,
        access_log: l.access_log.as_deref().map(AccessLogTarget::parse),
    })
}

fn server(s: ServerSection) -> ServerSettings {
    let threads = if s.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        s.threads
    };
    ServerSettings {
        threads,
        grace_period: Duration::from_secs(s.grace_period_s),
        pid_file: s.pid_file,
        upgrade_sock: s.upgrade_sock,
    }
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use std::time::Duration;

    fn load_yaml(yaml: &str) -> Result<super::Settings, super::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.yaml");
        std::fs::write(&path, yaml).unwrap();
        load(Some(&path), &|k| {
            (k == "LB_AUTH_KEY").then(|| "k".to_string())
        })
    }

    #[test]
    fn each_section_lands_in_its_own_group() {
        let s = load_yaml(
            "admin:\n  listen: 127.0.0.1:7001\n  task_records: 0\n\
             workers:\n  list: [\"http://127.0.0.1:9\"]\n  reload_interval_ms: 1500\n\
             discovery:\n  retries: 4\n\
             websocket:\n  reconnect_ms: 700\n\
             tasks:\n  attempts: 2\n  retry_after_s: 0\n\
             upstream:\n  connect_timeout_ms: 900\n\
             compat:\n  original_status_codes: true\n\
             logging:\n  level: warn\n  max_logs: 7\n\
             server:\n  threads: 3\n  grace_period_s: 4\n",
        )
        .unwrap();
        assert_eq!(s.admin.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(s.admin.task_records, 1, "at least one record is kept");
        assert_eq!(s.workers.reload_interval, Duration::from_millis(1500));
        assert!(matches!(s.workers.source, super::WorkerSource::Inline(ref l) if l.len() == 1));
        assert_eq!(s.discovery.retries, 4);
        assert_eq!(s.websocket.reconnect, Duration::from_millis(700));
        assert_eq!((s.tasks.attempts, s.tasks.retry_after_s), (2, 1));
        assert_eq!(s.upstream.connect_timeout, Duration::from_millis(900));
        assert!(s.compat.original_status_codes);
        assert_eq!(
            (s.logging.level, s.logging.max_logs),
            (log::LevelFilter::Warn, 7)
        );
        assert_eq!(
            (s.server.threads, s.server.grace_period),
            (3, Duration::from_secs(4))
        );
    }

    #[test]
    fn a_refusal_names_the_key_of_its_section() {
        for (yaml, key) in [
            ("admin:\n  listen: nowhere\n", "admin.listen"),
            (
                "workers:\n  reload_interval_ms: 0\n",
                "workers.reload_interval_ms",
            ),
            ("discovery:\n  timeout_ms: 0\n", "discovery.timeout_ms"),
            (
                "websocket:\n  heartbeat_timeout_ms: 0\n",
                "websocket.heartbeat_timeout_ms",
            ),
            ("tasks:\n  attempts: 0\n", "tasks.attempts / TASK_ATTEMPTS"),
            (
                "upstream:\n  fail_timeout_ms: 0\n",
                "upstream.fail_timeout_ms",
            ),
            ("logging:\n  level: loud\n", "logging.level / LOG_LEVEL"),
        ] {
            let e = load_yaml(yaml).unwrap_err();
            assert_eq!(e.key, key, "{yaml}");
            assert!(e.origin.ends_with("lb.yaml"), "{e}");
        }
    }
}

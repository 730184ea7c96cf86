//! The original's environment variables, read the way the original read them:
//! numbers like JavaScript's `parseInt` (`10000ms` is 10000), booleans in any case,
//! an empty value as unset. Every guess is reported as a warning, logged at start-up.

use super::file::FileConfig;
use super::{parse_size, ConfigError};

/// Reads variables through `env` and keeps the warnings about guessed meanings.
pub(super) struct EnvReader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    /// What was guessed, one line each, e.g. `TASK_TIMEOUT="10s" read as 10`.
    pub warnings: Vec<String>,
}

fn env_err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        origin: "environment".into(),
        key: key.into(),
        reason: reason.into(),
    }
}

impl<'a> EnvReader<'a> {
    pub(super) fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        EnvReader {
            env,
            warnings: Vec::new(),
        }
    }

    /// The value, `None` when unset or blank (the original's default applies).
    fn text(&self, key: &str) -> Option<String> {
        (self.env)(key).filter(|v| !v.trim().is_empty())
    }

    /// A non-negative integer read like `parseInt`: the leading digits, after an
    /// optional `+`; anything after them is ignored with a warning. A value with no
    /// leading digit, a negative one, or one too large for the setting is refused.
    pub(super) fn num<T: TryFrom<u64>>(&mut self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.text(key) else {
            return Ok(None);
        };
        let t = raw.trim();
        let unsigned = t.strip_prefix('+').unwrap_or(t);
        let digits = unsigned
            .find(|c: char| !c.is_ascii_digit())
            .map_or(unsigned, |end| &unsigned[..end]);
        if digits.is_empty() {
            let why = if t.starts_with('-') {
                "must not be negative"
            } else {
                "expected a non-negative integer"
            };
            return Err(env_err(key, format!("{why}, got {raw:?}")));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| env_err(key, format!("{raw:?} is too large")))?;
        let value = T::try_from(n).map_err(|_| env_err(key, format!("{raw:?} is too large")))?;
        if digits != t {
            self.warnings.push(format!(
                "{key}={raw:?} read as {n} (the leading digits, like the original's parseInt; units are not understood)"
            ));
        }
        Ok(Some(value))
    }

    /// A boolean: `true`/`false` as is; `TRUE`, `False`, `1`/`0`, `yes`/`no`, `on`/`off`
    /// in any case with a warning; anything else leaves the default, with a warning.
    pub(super) fn boolean(&mut self, key: &str) -> Option<bool> {
        let raw = self.text(key)?;
        let value = match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        };
        match value {
            Some(v) if raw.trim() == v.to_string() => {}
            Some(v) => self.warnings.push(format!("{key}={raw:?} read as {v}")),
            None => self.warnings.push(format!(
                "{key}={raw:?} is not a boolean (true/false); the default applies"
            )),
        }
        value
    }
}

fn with_port(addr: &str, port: u16) -> String {
    match addr.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => format!("{addr}:{port}"),
    }
}

/// Applies the original's environment variables over the file; returns the warnings.
pub(super) fn apply_env(
    cfg: &mut FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let mut e = EnvReader::new(env);
    if let Some(port) = e.num::<u16>("PORT")? {
        cfg.listen = with_port(&cfg.listen, port);
    }
    if let Some(port) = e.num::<u16>("ADMIN_PORT")? {
        cfg.admin.listen = with_port(&cfg.admin.listen, port);
    }
    if let Some(key) = env("LB_AUTH_KEY") {
        cfg.auth.lb_key = Some(key);
    }
    if let Some(file) = e.text("WORKERS_FILE") {
        cfg.workers.file = Some(file);
        cfg.workers.list = None;
    }
    let d = &mut cfg.discovery;
    d.interval_ms = e.num("WORKER_DISCOVERY_INTERVAL")?.unwrap_or(d.interval_ms);
    d.timeout_ms = e.num("WORKER_DISCOVERY_TIMEOUT")?.unwrap_or(d.timeout_ms);
    d.retries = e.num("WORKER_DISCOVERY_RETRIES")?.unwrap_or(d.retries);
    let w = &mut cfg.websocket;
    w.heartbeat_interval_ms = e
        .num("WS_HEARTBEAT_INTERVAL")?
        .unwrap_or(w.heartbeat_interval_ms);
    w.heartbeat_timeout_ms = e
        .num("WS_HEARTBEAT_TIMEOUT")?
        .unwrap_or(w.heartbeat_timeout_ms);
    let a = &mut cfg.admin;
    a.dashboard = e.boolean("DASHBOARD_ENABLED").unwrap_or(a.dashboard);
    a.bull_board = e.boolean("BULL_BOARD_ENABLED").unwrap_or(a.bull_board);
    a.expose_on_client_port = e
        .boolean("ADMIN_ON_CLIENT_PORT")
        .unwrap_or(a.expose_on_client_port);
    if let Some(level) = e.text("LOG_LEVEL") {
        cfg.logging.level = level;
    }
    cfg.logging.max_logs = e.num("MAX_LOGS")?.unwrap_or(cfg.logging.max_logs);
    let t = &mut cfg.tasks;
    t.timeout_ms = e.num("TASK_TIMEOUT")?.unwrap_or(t.timeout_ms);
    t.attempts = e.num("TASK_ATTEMPTS")?.unwrap_or(t.attempts);
    t.max_queued = e.num("MAX_QUEUED_TASKS")?.unwrap_or(t.max_queued);
    if let Some(path) = env("TASK_JOURNAL") {
        t.journal = Some(path).filter(|p| !p.trim().is_empty());
    }
    if let Some(limit) = e.text("REQUEST_BODY_LIMIT") {
        parse_size(&limit).map_err(|r| env_err("REQUEST_BODY_LIMIT", r))?;
        t.body_limit = limit;
    }
    Ok(e.warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |_| Some(value.to_string())
    }

    #[test]
    fn numbers_read_like_parse_int() {
        for (raw, want, warned) in [
            ("10000", Some(10000u64), false),
            (" 42 ", Some(42), false),
            ("10000ms", Some(10000), true),
            ("+7", Some(7), true),
            ("1.5", Some(1), true),
            ("", None, false),
            ("   ", None, false),
        ] {
            let env = reader(raw);
            let mut r = EnvReader::new(&env);
            assert_eq!(r.num::<u64>("X").unwrap(), want, "{raw:?}");
            assert_eq!(r.warnings.len(), usize::from(warned), "{raw:?}");
        }
        for raw in ["soon", "-5", "ms10", "99999999999999999999999"] {
            let env = reader(raw);
            assert!(EnvReader::new(&env).num::<u64>("X").is_err(), "{raw:?}");
        }
        let env = reader("70000");
        assert!(EnvReader::new(&env).num::<u16>("PORT").is_err());
    }

    #[test]
    fn booleans_in_any_case() {
        for (raw, want, warned) in [
            ("true", Some(true), false),
            ("false", Some(false), false),
            ("TRUE", Some(true), true),
            ("False", Some(false), true),
            ("1", Some(true), true),
            ("no", Some(false), true),
            ("Yes", Some(true), true),
            ("maybe", None, true),
            ("", None, false),
        ] {
            let env = reader(raw);
            let mut r = EnvReader::new(&env);
            assert_eq!(r.boolean("X"), want, "{raw:?}");
            assert_eq!(r.warnings.len(), usize::from(warned), "{raw:?}");
        }
    }
}

//! The original's environment variables, read the way the original read them:
//! numbers like JavaScript's `parseInt` (`10000ms` is 10000), booleans in any case,
//! an empty value as unset. Millisecond variables also understand the obvious units
//! (`10s` is 10000 ms, where the original read 10). Every guess is reported as a
//! warning, logged at start-up and printed by `-t`.

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

    /// A number of milliseconds. A bare number is read like [`EnvReader::num`]; a
    /// number followed by `ms`, `s`, `m` or `h` (any case, fractions allowed: `1.5s`)
    /// is read with its unit, with a warning saying what the original's `parseInt`
    /// read (`10s`: 10000 ms here, 10 ms there; `500ms`: 500 ms in both). Another
    /// suffix is read like `parseInt`, with a warning.
    pub(super) fn millis(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        let Some(raw) = self.text(key) else {
            return Ok(None);
        };
        let Some((ms, original)) = with_unit(&raw) else {
            return self.num(key);
        };
        self.warnings.push(if ms == original {
            format!("{key}={raw:?} read as {ms} ms, as the original read it")
        } else {
            format!(
                "{key}={raw:?}: read as {ms} ms; the original load balancer would read {original} ms"
            )
        });
        Ok(Some(ms))
    }

    /// A boolean: `true`/`false` as is; `TRUE`, `False`, `1`/`0`, `yes`/`no`, `on`/`off`
    /// in any case with a warning; anything else is read as `default`, with a warning.
    pub(super) fn boolean(&mut self, key: &str, default: bool) -> bool {
        let Some(raw) = self.text(key) else {
            return default;
        };
        let value = match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        };
        match value {
            Some(v) if raw.trim() == v.to_string() => {}
            Some(v) => self.warnings.push(format!("{key}={raw:?} read as {v}")),
            None => self.warnings.push(format!(
                "{key}={raw:?} is not a boolean (true or false): read as {default}, the default"
            )),
        }
        value.unwrap_or(default)
    }
}

/// `10s`, `500ms`, `1.5m`, `1h` as milliseconds, with what `parseInt` makes of the
/// same text; `None` when the text is not a number followed by one of these units.
fn with_unit(raw: &str) -> Option<(u64, u64)> {
    let t = raw.trim();
    let end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(end);
    let scale: f64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    if !number.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let ms = number.parse::<f64>().ok()? * scale;
    // Whole milliseconds within a year: anything else is a typo, left to `num`.
    if !(ms.is_finite() && ms.fract() == 0.0 && ms <= 31_536_000_000.0) {
        return None;
    }
    let digits = number.find('.').map_or(number, |dot| &number[..dot]);
    Some((ms as u64, digits.parse().ok()?))
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
    if let Some(file) = e.text("CLIENTS_FILE") {
        cfg.auth.clients_file = Some(file);
    }
    if let Some(keys) = env("ADMIN_KEYS") {
        cfg.auth.admin_keys = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
    }
    if let Some(file) = e.text("WORKERS_FILE") {
        cfg.workers.file = Some(file);
        cfg.workers.list = None;
    }
    let d = &mut cfg.discovery;
    d.interval_ms = e
        .millis("WORKER_DISCOVERY_INTERVAL")?
        .unwrap_or(d.interval_ms);
    d.timeout_ms = e
        .millis("WORKER_DISCOVERY_TIMEOUT")?
        .unwrap_or(d.timeout_ms);
    d.retries = e.num("WORKER_DISCOVERY_RETRIES")?.unwrap_or(d.retries);
    let w = &mut cfg.websocket;
    w.heartbeat_interval_ms = e
        .millis("WS_HEARTBEAT_INTERVAL")?
        .unwrap_or(w.heartbeat_interval_ms);
    w.heartbeat_timeout_ms = e
        .millis("WS_HEARTBEAT_TIMEOUT")?
        .unwrap_or(w.heartbeat_timeout_ms);
    let a = &mut cfg.admin;
    a.dashboard = e.boolean("DASHBOARD_ENABLED", a.dashboard);
    a.bull_board = e.boolean("BULL_BOARD_ENABLED", a.bull_board);
    a.expose_on_client_port = e.boolean("ADMIN_ON_CLIENT_PORT", a.expose_on_client_port);
    cfg.compat.original_status_codes =
        e.boolean("COMPAT_ORIGINAL_STATUS", cfg.compat.original_status_codes);
    if let Some(level) = e.text("LOG_LEVEL") {
        cfg.logging.level = level;
    }
    cfg.logging.max_logs = e.num("MAX_LOGS")?.unwrap_or(cfg.logging.max_logs);
    let t = &mut cfg.tasks;
    t.timeout_ms = e.millis("TASK_TIMEOUT")?.unwrap_or(t.timeout_ms);
    t.attempts = e.num("TASK_ATTEMPTS")?.unwrap_or(t.attempts);
    t.max_queued = e.num("MAX_QUEUED_TASKS")?.unwrap_or(t.max_queued);
    t.no_worker_wait_ms = e
        .millis("NO_WORKER_WAIT_MS")?
        .unwrap_or(t.no_worker_wait_ms);
    t.validate_input = e.boolean("TASK_VALIDATE_INPUT", t.validate_input);
    if let Some(url) = env("CLUSTER_REDIS") {
        cfg.cluster.redis = Some(url).filter(|u| !u.trim().is_empty());
    }
    if let Some(path) = env("TASK_JOURNAL") {
        t.journal = Some(path).filter(|p| !p.trim().is_empty());
    }
    super::traces::apply_env(&mut cfg.tracing, env)?;
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
            ("true", true, false),
            ("false", false, false),
            ("TRUE", true, true),
            ("False", false, true),
            ("1", true, true),
            ("no", false, true),
            ("Yes", true, true),
            ("maybe", true, true),
            ("", true, false),
        ] {
            let env = reader(raw);
            let mut r = EnvReader::new(&env);
            assert_eq!(r.boolean("X", true), want, "{raw:?}");
            assert_eq!(r.warnings.len(), usize::from(warned), "{raw:?}");
        }
        let env = reader("maybe");
        let mut r = EnvReader::new(&env);
        assert!(!r.boolean("DASHBOARD_ENABLED", false));
        assert_eq!(
            r.warnings,
            [
                r#"DASHBOARD_ENABLED="maybe" is not a boolean (true or false): read as false, the default"#
            ]
        );
    }

    #[test]
    fn milliseconds_with_units() {
        for (raw, want, parse_int) in [
            ("10s", 10_000u64, Some(10u64)),
            ("10 S", 10_000, Some(10)),
            ("1.5s", 1_500, Some(1)),
            ("500ms", 500, Some(500)),
            ("5m", 300_000, Some(5)),
            ("1h", 3_600_000, Some(1)),
            ("3000", 3000, None),
        ] {
            let env = reader(raw);
            let mut r = EnvReader::new(&env);
            assert_eq!(r.millis("TASK_TIMEOUT").unwrap(), Some(want), "{raw:?}");
            match parse_int {
                None => assert!(r.warnings.is_empty(), "{raw:?}: {:?}", r.warnings),
                Some(n) if n == want => assert_eq!(
                    r.warnings,
                    [format!("TASK_TIMEOUT={raw:?} read as {want} ms, as the original read it")]
                ),
                Some(n) => assert_eq!(
                    r.warnings,
                    [format!("TASK_TIMEOUT={raw:?}: read as {want} ms; the original load balancer would read {n} ms")]
                ),
            }
        }
        // Anything else is parseInt's reading, with its warning, or refused as before.
        let env = reader("10sec");
        let mut r = EnvReader::new(&env);
        assert_eq!(r.millis("X").unwrap(), Some(10));
        assert!(r.warnings[0].contains("parseInt"), "{:?}", r.warnings);
        for raw in ["s", "-1s", ".5s"] {
            let env = reader(raw);
            assert!(EnvReader::new(&env).millis("X").is_err(), "{raw:?}");
        }
    }
}

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
mod resolve;
mod settings;
pub mod traces;
pub mod webhook;

use std::fmt;
use std::path::{Path, PathBuf};

pub use auth::{AccessLogTarget, AuthSettings};
use file::FileConfig;
pub use settings::{
    AdminSettings, CompatSettings, DiscoverySettings, LoggingSettings, ServerSettings, Settings,
    TaskSettings, UpstreamSettings, WebSocketSettings, WorkerSettings,
};

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
    let mut settings = resolve::resolve(cfg, origin)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

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
        assert_eq!(s.admin.listen.to_string(), "127.0.0.1:4001");
        assert_eq!(s.workers.source, WorkerSource::File("workers.json".into()));
        assert_eq!(s.tasks.timeout, Duration::from_secs(300));
        assert_eq!(s.tasks.body_limit, 10 * 1024 * 1024);
        assert_eq!(s.logging.max_logs, 1000);
        assert_eq!(s.tasks.max_queued_bytes, 256 << 20);
        assert_eq!(s.tasks.limits, crate::task::Limits::default());
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
        assert_eq!(s.tasks.body_limit, 1024);
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
        assert_eq!(s.upstream.response_header_timeout, None);
        assert_eq!(s.upstream.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(s.upstream.outlier.max_fails, 3);
        assert_eq!(s.upstream.outlier.fail_timeout, Duration::from_secs(10));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lb.yaml");
        std::fs::write(&p, "upstream:\n  response_header_timeout_ms: 0\n").unwrap();
        let e = load(Some(&p), &env_of(&[("LB_AUTH_KEY", "k")])).unwrap_err();
        assert_eq!(e.key, "upstream.response_header_timeout_ms");
        std::fs::write(&p, "upstream:\n  response_header_timeout_ms: 250\n").unwrap();
        let s = load(Some(&p), &env_of(&[("LB_AUTH_KEY", "k")])).unwrap();
        assert_eq!(
            s.upstream.response_header_timeout,
            Some(Duration::from_millis(250))
        );
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
        assert_eq!(
            (s.tasks.max_queued_bytes, s.tasks.limits.max_url_bytes),
            (1024, 9)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10mb"), Ok(10 << 20));
        assert_eq!(parse_size("100kb"), Ok(100 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("10 parsecs").is_err());
    }
}

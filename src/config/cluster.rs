//! `cluster:`: several instances sharing Worker slots and one priority queue through
//! Redis (`CLUSTER_REDIS`). Off by default: each instance counts slots on its own.

use std::time::Duration;

use serde::Deserialize;

/// `cluster:` in the YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `redis://host:port[/db]` shared by the instances (`CLUSTER_REDIS`; may be the
    /// same URL as a Redis `tasks.journal`). Default `null`: instances are independent.
    pub redis: Option<String>,
    /// How long a slot lease lives unless its instance renews it (ms): a dead
    /// instance's slots come back within this. Default 10000.
    pub lease_ttl_ms: u64,
    /// Longest wait for one Redis answer (ms) before the instance falls back to
    /// counting slots on its own. Default 250.
    pub timeout_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis: None,
            lease_ttl_ms: 10_000,
            timeout_ms: 250,
        }
    }
}

/// The resolved `cluster:` settings (present only when `cluster.redis` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The Redis URL (with its credentials; log [`crate::journal::redact`] of it).
    pub redis: String,
    /// Lease lifetime without renewal.
    pub lease_ttl: Duration,
    /// Bound on one Redis answer.
    pub timeout: Duration,
}

impl ClusterSection {
    /// The settings, `None` when `redis` is unset or blank; an error names the key.
    pub fn resolve(&self) -> Result<Option<ClusterSettings>, (&'static str, String)> {
        let Some(url) = self
            .redis
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://"))
            || redis::Client::open(url).is_err()
        {
            return Err((
                "cluster.redis / CLUSTER_REDIS",
                format!(
                    "{} is not a valid redis:// URL",
                    crate::journal::redact(url)
                ),
            ));
        }
        if self.lease_ttl_ms < 500 {
            return Err((
                "cluster.lease_ttl_ms",
                format!("must be at least 500, got {}", self.lease_ttl_ms),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms >= self.lease_ttl_ms {
            return Err((
                "cluster.timeout_ms",
                format!(
                    "must be above 0 and below cluster.lease_ttl_ms ({}), got {}",
                    self.lease_ttl_ms, self.timeout_ms
                ),
            ));
        }
        Ok(Some(ClusterSettings {
            redis: url.to_string(),
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            timeout: Duration::from_millis(self.timeout_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_a_redis_url_is_given() {
        assert_eq!(ClusterSection::default().resolve(), Ok(None));
        let blank = ClusterSection {
            redis: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(blank.resolve(), Ok(None));
        let on = ClusterSection {
            redis: Some("redis://127.0.0.1:6379/2".into()),
            ..Default::default()
        };
        let s = on.resolve().unwrap().unwrap();
        assert_eq!(s.lease_ttl, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_name_their_key_and_hide_the_password() {
        let bad = ClusterSection {
            redis: Some("http://u:secret@h:1".into()),
            ..Default::default()
        };
        let (key, why) = bad.resolve().unwrap_err();
        assert_eq!(key, "cluster.redis / CLUSTER_REDIS");
        assert!(!why.contains("secret"), "{why}");
        let short = ClusterSection {
            redis: Some("redis://h:1".into()),
            lease_ttl_ms: 100,
            ..Default::default()
        };
        assert_eq!(short.resolve().unwrap_err().0, "cluster.lease_ttl_ms");
        let slow = ClusterSection {
            redis: Some("redis://h:1".into()),
            timeout_ms: 20_000,
            ..Default::default()
        };
        assert_eq!(slow.resolve().unwrap_err().0, "cluster.timeout_ms");
    }
}

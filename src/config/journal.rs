//! Where the webhook task journal lives (`tasks.journal` / `TASK_JOURNAL`): a
//! setting, so it is read here with the rest of the configuration; the engines in
//! `crate::journal` open it.

use std::path::PathBuf;

/// Where the journal lives (`tasks.journal` / `TASK_JOURNAL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local SQLite file.
    File(PathBuf),
    /// A Redis server, `redis://[user:password@]host:port[/db]`.
    Redis(String),
}

impl Location {
    /// Reads a `tasks.journal` value: a `redis://` URL or a file path.
    pub fn parse(text: &str) -> Result<Location, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("rediss://") {
            return Err(
                "rediss:// (TLS to Redis) is not supported; use redis:// on a private network"
                    .into(),
            );
        }
        if lower.starts_with("redis://") {
            redis::parse_redis_url(t)
                .ok_or_else(|| format!("{} is not a valid redis:// URL", redact(t)))?;
            return Ok(Location::Redis(t.to_string()));
        }
        Ok(Location::File(PathBuf::from(t)))
    }
}

impl std::fmt::Display for Location {
    /// The file, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Redis(url) => f.write_str(&redact(url)),
        }
    }
}

/// A Redis URL with its credentials replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_told_apart_and_passwords_never_shown() {
        assert_eq!(
            Location::parse("/var/lib/andera-lb/tasks.db").unwrap(),
            Location::File("/var/lib/andera-lb/tasks.db".into())
        );
        let r = Location::parse("redis://:s3cret@10.0.0.5:6379/2").unwrap();
        assert!(matches!(r, Location::Redis(_)));
        assert_eq!(r.to_string(), "redis://***@10.0.0.5:6379/2");
        assert!(Location::parse("rediss://h:6379").is_err());
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}

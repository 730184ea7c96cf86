//! Worker base URLs: parsed once, so that the data path never parses a string.

use std::fmt;

/// A Worker base URL such as `http://10.0.0.5:3000` or `https://w1.internal/base`.
///
/// Two URLs that differ only by a trailing `/` are the same Worker: equality and
/// hashing leave [`WorkerUrl::listed`] out.
#[derive(Clone)]
pub struct WorkerUrl {
    /// The URL as written in the Worker list (trailing `/` removed): the Worker's identity.
    pub raw: String,
    /// The URL exactly as listed (trailing `/` kept), shown by `/health` like the original.
    pub listed: String,
    /// `https` when true.
    pub tls: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path prefix without trailing `/`, e.g. `` or `/base`.
    pub base_path: String,
}

impl PartialEq for WorkerUrl {
    fn eq(&self, other: &Self) -> bool {
        (self.tls, &self.host, self.port, &self.base_path, &self.raw)
            == (
                other.tls,
                &other.host,
                other.port,
                &other.base_path,
                &other.raw,
            )
    }
}

impl Eq for WorkerUrl {}

impl std::hash::Hash for WorkerUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.tls, &self.host, self.port, &self.base_path, &self.raw).hash(state);
    }
}

impl WorkerUrl {
    /// Parses an `http://` or `https://` base URL (WHATWG rules, by the `url` crate);
    /// rejects anything else, credentials, queries and fragments with a reason.
    pub fn parse(text: &str) -> Result<WorkerUrl, String> {
        let listed = text.trim().to_string();
        let raw = listed.trim_end_matches('/').to_string();
        let url = url::Url::parse(&listed).map_err(|e| format!("{text:?}: {e}"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(format!("{text:?} is not an http:// or https:// URL")),
        };
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(format!(
                "{text:?}: credentials, queries and fragments are not allowed"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(format!("{text:?}: no host")),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let base_path = url.path().trim_end_matches('/').to_string();
        Ok(WorkerUrl {
            tls,
            host,
            port,
            base_path,
            raw,
            listed,
        })
    }

    /// `host:port` suitable for a socket address lookup.
    pub fn authority(&self) -> String {
        let mut authority = String::with_capacity(self.host.len() + 8);
        let _ = self.write_authority(&mut authority);
        authority
    }

    /// Writes `host:port` (an IPv6 literal in brackets) to `out`.
    fn write_authority(&self, out: &mut impl fmt::Write) -> fmt::Result {
        if self.host.contains(':') {
            write!(out, "[{}]:{}", self.host, self.port)
        } else {
            write!(out, "{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let mut host = String::with_capacity(self.host.len() + 8);
        let _ = self.write_host_header(&mut host);
        host
    }

    /// Writes the `Host` header value to `out` (the data path's way: no allocation).
    pub fn write_host_header(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            out.write_str(&self.host)
        } else {
            self.write_authority(out)
        }
    }

    /// Request path for an endpoint such as `/task`.
    pub fn path(&self, endpoint: &str) -> String {
        format!("{}{}", self.base_path, endpoint)
    }

    /// The WebSocket slot feed URL for the advertised port: `ws://host:port/` or `wss://`.
    pub fn websocket(&self, ws_port: u16) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{ws_port}/")
    }
}

impl fmt::Display for WorkerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for WorkerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerUrl({})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let u = WorkerUrl::parse("http://10.0.0.5:3000/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("10.0.0.5", 3000, false));
        assert_eq!(u.path("/task"), "/task");
        assert_eq!(u.websocket(3001), "ws://10.0.0.5:3001/");
        assert_eq!(
            (u.raw.as_str(), u.listed.as_str()),
            ("http://10.0.0.5:3000", "http://10.0.0.5:3000/")
        );
        assert_eq!(u, WorkerUrl::parse("http://10.0.0.5:3000").unwrap());
        let s = WorkerUrl::parse("https://w.example/base").unwrap();
        assert_eq!((s.port, s.path("/health").as_str()), (443, "/base/health"));
        assert_eq!(s.websocket(3001), "wss://w.example:3001/");
        let v6 = WorkerUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(v6.authority(), "[::1]:8080");
    }

    #[test]
    fn rejects_non_http() {
        assert!(WorkerUrl::parse("ftp://x").is_err());
        assert!(WorkerUrl::parse("http://user:pw@x").is_err());
        assert!(WorkerUrl::parse("http://:80").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1500))]

        #[test]
        fn parsing_never_panics(
            scheme in "(http://|https://|ftp://|http:/|)",
            rest in "([a-z0-9.]|\\[|\\]|:|/|@|\\?|#|é|%){0,30}",
        ) {
            if let Ok(u) = WorkerUrl::parse(&format!("{scheme}{rest}")) {
                proptest::prop_assert!(!u.host.is_empty());
                let _ = (u.authority(), u.host_header(), u.path("/task"), u.websocket(1));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = WorkerUrl::parse(&text);
        }
    }
}

//! Worker base URLs: parsed once, so that the data path never parses a string.

use std::fmt;

/// A Worker base URL such as `http://10.0.0.5:3000` or `https://w1.internal/base`.
///
/// Spellings of one address are one Worker: the scheme and host are lowercased,
/// IPv4 forms (`127.000.000.001`, `0x7f.1`, `2130706433`) and IPv4-mapped IPv6
/// (`[::ffff:127.0.0.1]`) are read as the dotted IPv4 address, a default port is
/// dropped and so is a trailing `/`. Equality and hashing use that canonical form
/// ([`WorkerUrl::raw`]), never [`WorkerUrl::listed`].
#[derive(Clone)]
pub struct WorkerUrl {
    /// The canonical form, e.g. `http://127.0.0.1:3000`: the Worker's identity
    /// (registry key, metrics label, logs).
    pub raw: String,
    /// The URL exactly as listed (trailing `/` kept), shown by `/health` like the original.
    pub listed: String,
    /// `https` when true.
    pub tls: bool,
    /// Host name (lowercase) or IP literal (without brackets).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path prefix without trailing `/`, e.g. `` or `/base`.
    pub base_path: String,
    /// The IP literal connected to instead of resolving `host`: set for a Worker found
    /// by a `dns+https://NAME` entry, which keeps NAME for SNI, the certificate check
    /// and `Host`. Default `None`: `host` is connected to.
    pub dial: Option<String>,
}

impl PartialEq for WorkerUrl {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for WorkerUrl {}

impl std::hash::Hash for WorkerUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.hash(state);
    }
}

/// A Worker list entry shown with its userinfo (`user:password@`), query and
/// fragment masked as `***`: what every message and API shows of an entry, refused
/// or not. `http://admin:PassW0rd@h/?token=x` is shown `http://***@h/?***`.
pub struct Redacted<'a>(pub &'a str);

/// `text` as [`Redacted`] shows it.
pub fn redacted(text: &str) -> Redacted<'_> {
    Redacted(text)
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        // The authority follows the scheme's `:` and any slashes (WHATWG parsers
        // accept `http:host`, `http:\\host`). Everything up to the last `@` is masked,
        // wherever it is: a password may hold `/`, `?` or `#` (an `@` in a path is
        // masked with it, which hides more than needed, never less).
        let scheme_end = text
            .find(':')
            .filter(|&i| {
                let scheme = &text[..i];
                scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            })
            .map_or(0, |i| i + 1);
        let start = scheme_end
            + text[scheme_end..]
                .find(|c| c != '/' && c != '\\')
                .unwrap_or(text.len() - scheme_end);
        f.write_str(&text[..start])?;
        let rest = match text[start..].rfind('@') {
            Some(at) => {
                f.write_str("***")?;
                &text[start + at..]
            }
            None => &text[start..],
        };
        // Everything from the first `?` or `#` on is a query or fragment.
        match rest.find(['?', '#']) {
            Some(i) => write!(f, "{}{}***", &rest[..i], &rest[i..=i]),
            None => f.write_str(rest),
        }
    }
}

impl WorkerUrl {
    /// Parses an `http://` or `https://` base URL (WHATWG rules, by the `url` crate)
    /// into its canonical form; rejects anything else, credentials, queries and
    /// fragments with a reason that shows the entry [`redacted`].
    pub fn parse(text: &str) -> Result<WorkerUrl, String> {
        let listed = text.trim().to_string();
        let shown = redacted(&listed).to_string();
        let url = url::Url::parse(&listed).map_err(|e| format!("{shown:?}: {e}"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(format!("{shown:?} is not an http:// or https:// URL")),
        };
        let refused = if !url.username().is_empty() || url.password().is_some() {
            Some("credentials (user:password@) are not allowed in a Worker URL; the Workers' keys are LB_AUTH_KEY and the clients' x-wr-auth")
        } else if url.query().is_some() {
            Some("a query (?...) is not allowed in a Worker URL")
        } else if url.fragment().is_some() {
            Some("a fragment (#...) is not allowed in a Worker URL")
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(format!("{shown:?}: {why}"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => ip.to_string(),
            },
            _ => return Err(format!("{shown:?}: no host")),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let base_path = url.path().trim_end_matches('/').to_string();
        let mut worker = WorkerUrl {
            tls,
            host,
            port,
            base_path,
            raw: String::new(),
            listed,
            dial: None,
        };
        worker.raw = worker.canonical();
        Ok(worker)
    }

    /// The host connected to: [`WorkerUrl::dial`] if set, else `host`.
    pub fn dial_host(&self) -> &str {
        self.dial.as_deref().unwrap_or(&self.host)
    }

    /// `scheme://host[:port]/base`, the port only when not the scheme's default.
    fn canonical(&self) -> String {
        let mut out = String::from(if self.tls { "https://" } else { "http://" });
        let _ = self.write_host_header(&mut out);
        out.push_str(&self.base_path);
        out
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
        if self.port == default && self.host.contains(':') {
            write!(out, "[{}]", self.host)
        } else if self.port == default {
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

/// Checks one Worker list entry: a Worker URL or a `dns+` entry; the reason of a
/// refusal shows the entry [`redacted`].
pub fn check_entry(text: &str) -> Result<(), String> {
    if DnsEntry::is_dns(text) {
        DnsEntry::parse(text).map(|_| ())
    } else {
        WorkerUrl::parse(text).map(|_| ())
    }
}

/// A Worker list entry `dns+http://NAME[:PORT][/base]` or `dns+https://…`: one
/// Worker per A/AAAA record of NAME, kept up to date by the registry
/// (`registry/dns.rs`). Credentials, queries and fragments are refused as in any
/// Worker URL, and so is an IP literal (nothing to look up).
#[derive(Clone, Debug)]
pub struct DnsEntry {
    /// The canonical form, e.g. `dns+http://workers.default.svc:3000`: the entry's
    /// identity in logs, metrics and `/health`.
    pub raw: String,
    /// What each record's Worker is built from (its host is NAME).
    template: WorkerUrl,
}

impl DnsEntry {
    /// Parses a `dns+http://` or `dns+https://` entry; the reason of a refusal shows
    /// the entry [`redacted`].
    pub fn parse(text: &str) -> Result<DnsEntry, String> {
        let listed = text.trim();
        let shown = redacted(listed).to_string();
        let rest = listed
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("dns+"))
            .map(|_| &listed[4..])
            .ok_or_else(|| format!("{shown:?} is not a dns+http:// or dns+https:// entry"))?;
        let template = WorkerUrl::parse(rest).map_err(|e| format!("dns+ entry: {e}"))?;
        if template.host.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "{shown:?}: a dns+ entry names a host to look up, not an IP address (list {:?} instead)",
                template.raw
            ));
        }
        let mut raw = format!("dns+{}://", if template.tls { "https" } else { "http" });
        let _ = template.write_authority(&mut raw);
        raw.push_str(&template.base_path);
        Ok(DnsEntry { raw, template })
    }

    /// True when `text` is spelled as a `dns+` entry (whether or not it is valid).
    pub fn is_dns(text: &str) -> bool {
        text.trim()
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("dns+"))
    }

    /// The name looked up.
    pub fn name(&self) -> &str {
        &self.template.host
    }

    /// The Worker at one of NAME's addresses: `http://IP:PORT/base` for `dns+http`;
    /// for `dns+https`, `https://IP:PORT/base` connected to at IP but with NAME for
    /// SNI, the certificate check and `Host`.
    pub fn worker_at(&self, ip: std::net::IpAddr) -> WorkerUrl {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        let mut at = self.template.clone();
        at.host = ip.to_string();
        at.raw = at.canonical();
        at.listed = at.raw.clone();
        if at.tls {
            at.host = self.template.host.clone();
            at.dial = Some(ip.to_string());
        }
        at
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
    fn spellings_of_one_address_are_one_worker() {
        let canonical = WorkerUrl::parse("http://127.0.0.1:4100").unwrap();
        for spelling in [
            "HTTP://127.0.0.1:4100",
            "http://127.000.000.001:4100",
            "http://0x7f.0.0.1:4100",
            "http://2130706433:4100/",
            "http://[::ffff:127.0.0.1]:4100",
            "http://[::FFFF:7F00:1]:4100",
            " http://127.0.0.1:4100// ",
        ] {
            let u = WorkerUrl::parse(spelling).unwrap();
            assert_eq!(u, canonical, "{spelling}");
            assert_eq!(u.raw, "http://127.0.0.1:4100", "{spelling}");
            assert_eq!(u.host, "127.0.0.1", "{spelling}");
        }
        let named = WorkerUrl::parse("HTTPS://W1.Example:443/Base/").unwrap();
        assert_eq!(named.raw, "https://w1.example/Base");
        assert_eq!(named, WorkerUrl::parse("https://w1.example/Base").unwrap());
        assert_eq!(WorkerUrl::parse("http://h:80").unwrap().raw, "http://h");
        assert_ne!(
            canonical,
            WorkerUrl::parse("https://127.0.0.1:4100").unwrap()
        );
        assert_eq!(
            WorkerUrl::parse("http://[::1]:80").unwrap().raw,
            "http://[::1]"
        );
    }

    #[test]
    fn credentials_queries_and_fragments_are_refused_and_never_shown() {
        for (entry, shown, why) in [
            (
                "http://admin:PassW0rd@10.0.0.5:3000/",
                "http://***@10.0.0.5:3000/",
                "credentials",
            ),
            ("http://admin@h", "http://***@h", "credentials"),
            (
                "http://h:3000/?token=s3cr3t",
                "http://h:3000/?***",
                "a query",
            ),
            ("http://h:3000#s3cr3t", "http://h:3000#***", "a fragment"),
            ("http:admin:PassW0rd@h", "http:***@h", "credentials"),
        ] {
            let err = WorkerUrl::parse(entry).unwrap_err();
            assert!(err.contains(&format!("{shown:?}")), "{entry}: {err}");
            assert!(err.contains(why), "{entry}: {err}");
            assert!(
                !err.contains("PassW0rd") && !err.contains("s3cr3t"),
                "{err}"
            );
        }
        // Unparsable entries are masked too.
        let err = WorkerUrl::parse("http://admin:PassW0rd@[bad/").unwrap_err();
        assert!(!err.contains("PassW0rd"), "{err}");
        assert_eq!(redacted("ftp://u:p@h?q").to_string(), "ftp://***@h?***");
        assert_eq!(redacted("u:p@h").to_string(), "u:***@h");
        assert_eq!(redacted("http://h/a/b").to_string(), "http://h/a/b");
        // A password holding `/`, `?` or `#` is masked whole.
        assert_eq!(
            redacted("http://u:P/a?s#s@h/x").to_string(),
            "http://***@h/x"
        );
        assert_eq!(redacted("http://h/?t=s3cr3t").to_string(), "http://h/?***");
    }

    #[test]
    fn dns_entries_give_one_worker_per_address() {
        let e = DnsEntry::parse(" DNS+HTTP://Workers.Svc:3000/ ").unwrap();
        assert_eq!(
            (e.raw.as_str(), e.name()),
            ("dns+http://workers.svc:3000", "workers.svc")
        );
        let w = e.worker_at("10.0.0.7".parse().unwrap());
        assert_eq!(
            (w.raw.as_str(), w.host.as_str(), w.dial_host()),
            ("http://10.0.0.7:3000", "10.0.0.7", "10.0.0.7")
        );
        let s = DnsEntry::parse("dns+https://w.svc:8443/base").unwrap();
        let w = s.worker_at("fd00::1".parse().unwrap());
        assert_eq!(w.raw, "https://[fd00::1]:8443/base");
        assert_eq!((w.host.as_str(), w.dial_host()), ("w.svc", "fd00::1"));
        assert_eq!(w.host_header(), "w.svc:8443");
        let mapped = s.worker_at("::ffff:10.0.0.8".parse().unwrap());
        assert_eq!(mapped.raw, "https://10.0.0.8:8443/base");
        for (bad, why) in [
            ("dns+http://10.0.0.5:3000", "not an IP address"),
            ("dns+ftp://h", "not an http:// or https://"),
            ("dns+http://u:PassW0rd@h:1", "credentials"),
            ("dns+http://h:1/?token=T0ken", "a query"),
        ] {
            let err = DnsEntry::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("PassW0rd") && !err.contains("T0ken"), "{err}");
        }
        assert!(DnsEntry::is_dns("dns+http://x") && !DnsEntry::is_dns("http://x"));
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
            let text = format!("{scheme}{rest}");
            let _ = redacted(&text).to_string();
            if let Ok(u) = WorkerUrl::parse(&text) {
                proptest::prop_assert!(!u.host.is_empty());
                proptest::prop_assert_eq!(&WorkerUrl::parse(&u.raw).unwrap(), &u);
                let _ = (u.authority(), u.host_header(), u.path("/task"), u.websocket(1));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = WorkerUrl::parse(&text);
            let _ = redacted(&text).to_string();
        }
    }
}

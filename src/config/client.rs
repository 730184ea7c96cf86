//! Validated limits on client connections (the `client:` YAML section).

use std::time::Duration;

use super::file::ClientSection;

/// Smallest accepted `client.max_header_bytes`: a request line and a few headers.
const MIN_HEADER_BYTES: usize = 1024;

/// Pingora refuses request headers above 1 MiB whatever we allow.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Limits applied to every client connection, on both ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time to send a whole request header. Default 10 s.
    pub header_timeout: Duration,
    /// Idle time allowed between keep-alive requests. Default 60 s.
    pub idle_timeout: Duration,
    /// Longest pause between two reads of a request body. Default 30 s.
    pub body_timeout: Duration,
    /// Longest time without write progress towards the client. Default 30 s.
    pub send_timeout: Duration,
    /// Largest request header block in bytes. Default 16384.
    pub max_header_bytes: usize,
    /// Longest time a closed connection's remaining input is read and discarded.
    /// Default 30 s.
    pub lingering_time: Duration,
    /// Longest wait for more input during that. Default 5 s.
    pub lingering_timeout: Duration,
    /// How long idle keep-alive connections stay open once shutdown begins. Default 2 s.
    pub shutdown_idle: Duration,
    /// Proxies whose forwarded-address headers are believed. Default none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits::resolve(&ClientSection::default()).expect("defaults are valid")
    }
}

impl ClientLimits {
    /// Validates the YAML section; an error names the key.
    pub fn resolve(c: &ClientSection) -> Result<ClientLimits, (&'static str, String)> {
        let ms = |key: &'static str, v: u64| {
            if v == 0 {
                Err((key, "must be greater than 0".to_string()))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&c.max_header_bytes) {
            return Err((
                "client.max_header_bytes",
                format!(
                    "must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}, got {}",
                    c.max_header_bytes
                ),
            ));
        }
        Ok(ClientLimits {
            header_timeout: ms("client.header_timeout_ms", c.header_timeout_ms)?,
            idle_timeout: ms("client.idle_timeout_ms", c.idle_timeout_ms)?,
            body_timeout: ms("client.body_timeout_ms", c.body_timeout_ms)?,
            send_timeout: ms("client.send_timeout_ms", c.send_timeout_ms)?,
            max_header_bytes: c.max_header_bytes,
            lingering_time: ms("client.lingering_time_ms", c.lingering_time_ms)?,
            lingering_timeout: ms("client.lingering_timeout_ms", c.lingering_timeout_ms)?,
            // 0 is allowed: close idle connections at once, as nginx does.
            shutdown_idle: Duration::from_millis(c.shutdown_idle_ms),
            trusted_proxies: c
                .trusted_proxies
                .iter()
                .map(|p| parse_net(p))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A CIDR (`10.0.0.0/8`, `::1/128`) or a bare address (one host).
fn parse_net(text: &str) -> Result<ipnet::IpNet, (&'static str, String)> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            (
                "client.trusted_proxies",
                format!("{text:?} is not an address or a CIDR (e.g. 10.0.0.0/8)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_nginx_scale() {
        let l = ClientLimits::default();
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.max_header_bytes, 16_384);
    }

    #[test]
    fn zero_timeout_names_its_key() {
        let c = ClientSection {
            send_timeout_ms: 0,
            ..ClientSection::default()
        };
        let (key, _) = ClientLimits::resolve(&c).unwrap_err();
        assert_eq!(key, "client.send_timeout_ms");
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let c = ClientSection {
            trusted_proxies: vec!["10.0.0.0/8".into(), "127.0.0.1".into(), "::1".into()],
            ..ClientSection::default()
        };
        let l = ClientLimits::resolve(&c).unwrap();
        assert_eq!(l.trusted_proxies.len(), 3);
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.trusted_proxies[1].contains(&local));
        let bad = ClientSection {
            trusted_proxies: vec!["10.0.0.0/33".into()],
            ..ClientSection::default()
        };
        let (key, _) = ClientLimits::resolve(&bad).unwrap_err();
        assert_eq!(key, "client.trusted_proxies");
    }

    #[test]
    fn tiny_header_cap_is_refused() {
        let c = ClientSection {
            max_header_bytes: 10,
            ..ClientSection::default()
        };
        let (key, _) = ClientLimits::resolve(&c).unwrap_err();
        assert_eq!(key, "client.max_header_bytes");
    }
}

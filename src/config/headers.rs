//! Which client headers reach a Worker (`upstream.forward_headers` in the YAML).
//!
//! The original sent a Worker a fixed set of headers, never the client's own; an
//! operator may list more. Names are checked once, at load: a hop-by-hop header or
//! one the load balancer writes itself is refused, naming the key.

use http::HeaderName;

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and never
/// cross the load balancer, in either direction (nor do those a `Connection`
/// header names).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the load balancer writes to a Worker itself, or never sends on: keys,
/// framing, `content-type` (always `application/json`) and its own task id.
pub const WRITTEN_BY_LB: &[&str] = &[
    "authorization",
    "x-wr-auth",
    "x-lb-auth",
    "proxy-authorization",
    "host",
    "content-length",
    "content-type",
    "expect",
    "x-andera-task-id",
];

/// Client headers always passed on: W3C trace context, so that a Worker can join
/// the client's trace.
pub static TRACE_CONTEXT: [HeaderName; 2] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The extra client headers a Worker receives, validated. Default: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardList(Vec<HeaderName>);

impl ForwardList {
    /// Validates `upstream.forward_headers` (case-insensitive names); the error says
    /// which name and why.
    pub fn resolve(names: &[String]) -> Result<ForwardList, String> {
        let mut list: Vec<HeaderName> = Vec::with_capacity(names.len());
        for raw in names {
            let name = HeaderName::from_bytes(raw.trim().as_bytes())
                .map_err(|_| format!("{raw:?} is not a header name"))?;
            let s = name.as_str();
            if HOP_BY_HOP.contains(&s) {
                return Err(format!(
                    "{raw:?} is a hop-by-hop header: it never crosses the load balancer"
                ));
            }
            if WRITTEN_BY_LB.contains(&s) {
                return Err(format!(
                    "{raw:?} is written by the load balancer itself and cannot be forwarded"
                ));
            }
            if !TRACE_CONTEXT.contains(&name) && !list.contains(&name) {
                list.push(name);
            }
        }
        Ok(ForwardList(list))
    }

    /// The listed names, lower-case, each once (trace context left out: it is always sent).
    pub fn names(&self) -> &[HeaderName] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(names: &[&str]) -> Result<ForwardList, String> {
        ForwardList::resolve(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_are_checked_and_lowercased() {
        let list = resolve(&["X-Custom", "x-custom", "Accept-Language", "traceparent"]).unwrap();
        let names: Vec<&str> = list.names().iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-custom", "accept-language"]);
        for (bad, why) in [
            ("Connection", "hop-by-hop"),
            ("transfer-encoding", "hop-by-hop"),
            ("Authorization", "written by the load balancer"),
            ("content-type", "written by the load balancer"),
            ("x-wr-auth", "written by the load balancer"),
            ("bad name", "not a header name"),
            ("", "not a header name"),
        ] {
            let e = resolve(&[bad]).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(resolve(&[]).unwrap().names().is_empty());
    }
}

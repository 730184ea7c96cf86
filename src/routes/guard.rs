//! What both ports refuse before routing: request heads whose framing is ambiguous
//! ([`crate::conn::framing`]), and on the admin port a `Host` that does not name it.
//!
//! The admin port answers only `Host` values that name it: its listen address, an
//! IP literal, `localhost`, or one of `admin.allowed_hosts`. A browser on the
//! operator's machine that a hostile page points at `127.0.0.1:4001` through DNS
//! rebinding sends the hostile page's name, and is refused (as Prometheus exporters
//! and Consul do), so `/metrics` and the dashboard cannot be read cross-origin.

use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use super::Port;
use crate::app::{App, RequestCtx};
use crate::conn::framing;
use crate::respond;

/// A request body up to this many bytes that an early answer (`401`, `404`) leaves
/// unread is read and discarded after the answer, so the connection stays open, as
/// nginx does; a larger or chunked one closes the connection instead.
pub(crate) const DISCARD_LIMIT: usize = 64 * 1024;

/// Answers a request refused before routing and returns `true`, or returns `false`
/// for a request that may be routed.
pub(crate) async fn refuse_before_routing(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    port: Port,
) -> Result<bool> {
    let small_body = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
        .is_some_and(|len| len <= DISCARD_LIMIT);
    if small_body {
        // Pingora drains it when the connection is reused (within the drain timeout).
        session
            .as_downstream_mut()
            .set_close_on_response_before_downstream_finish(false);
    }
    if let Some(refused) = framing::refusal(session.req_header()) {
        // The body's framing is in doubt: nothing after this head can be trusted.
        session.set_keepalive(None);
        ctx.route = "refused";
        ctx.status = refused.status;
        respond::error(session, refused.status, refused.message, &[]).await?;
        return Ok(true);
    }
    if port == Port::Admin {
        let host = request_host(session);
        if !admin_host_allowed(host.as_deref(), &app.settings().admin.allowed_hosts) {
            ctx.route = "refused";
            ctx.status = 421;
            let message = format!(
                "Host {:?} is not served on the admin port; list it in admin.allowed_hosts",
                host.as_deref().unwrap_or_default()
            );
            let body = json!({ "error": message, "reason": crate::reason::Reason::HostNotAllowed.as_str() });
            respond::json(session, 421, &body, &[]).await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The request's host name, lower-case and without its port (from `Host`, or from
/// an absolute-form target).
fn request_host(session: &Session) -> Option<String> {
    let req = session.req_header();
    let authority = match req.headers.get(http::header::HOST) {
        Some(v) => v.to_str().ok()?.to_string(),
        None => req.uri.authority()?.as_str().to_string(),
    };
    Some(host_of(&authority).to_ascii_lowercase())
}

/// `authority` without its port: `[::1]:4001` → `[::1]`, `a.b:80` → `a.b`.
fn host_of(authority: &str) -> &str {
    let authority = authority.trim();
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether the admin port answers `host` (`None`: no Host, as from HTTP/1.0 tools,
/// which no browser sends). IP literals cannot be rebound, so they always pass.
pub(crate) fn admin_host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || bare.parse::<std::net::IpAddr>().is_ok()
        || allowed.iter().any(|a| a == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_port_answers_its_own_names_only() {
        let allowed = vec!["lb.internal".to_string()];
        let ok = |h: &str| admin_host_allowed(Some(host_of(h)), &allowed);
        for host in [
            "127.0.0.1:4001",
            "localhost:4001",
            "localhost",
            "[::1]:4001",
            "10.1.2.3",
            "lb.internal:4001",
        ] {
            assert!(ok(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:4001",
            "lb.internal.evil",
            "",
        ] {
            assert!(!ok(host), "{host}");
        }
        assert!(admin_host_allowed(None, &[]), "no Host at all (HTTP/1.0)");
    }
}

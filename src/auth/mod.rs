//! Key checks: bare or `Bearer` keys, compared in constant time; who holds a key
//! ([`keys`]), and the named clients ([`clients`]).

pub(crate) mod clients;
pub(crate) mod keys;
pub(crate) mod quota;
pub(crate) mod watch;

/// Strips an optional `Bearer ` prefix (case-insensitive) and surrounding blanks.
pub(crate) fn bare_key(value: &[u8]) -> &[u8] {
    let v = value.trim_ascii();
    if v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
        v[7..].trim_ascii()
    } else {
        v
    }
}

/// The key ring of `settings`: the LB key, the inline clients, the clients file's
/// (read now) and the operator keys. The error names the file or setting at fault.
pub(crate) fn ring_of(settings: &crate::config::Settings) -> Result<keys::KeyRing, String> {
    let auth = &settings.auth;
    let mut clients = auth.clients.inline.clone();
    if let Some(path) = &auth.clients.file {
        clients.extend(clients::load_file(path)?);
    }
    keys::KeyRing::build(
        settings.lb_key.expose(),
        &clients,
        &auth.admin_keys,
        &auth.viewer_keys,
    )
    .map_err(|e| match &auth.clients.file {
        Some(path) => format!("{} (with auth.clients): {e}", path.display()),
        None => format!("auth.clients: {e}"),
    })
}

/// The holder of the key in `Authorization` or `x-lb-auth`, if either names one.
pub(crate) fn identify(
    session: &pingora::proxy::Session,
    ring: &keys::KeyRing,
) -> Option<keys::Principal> {
    let h = &session.req_header().headers;
    ["authorization", "x-lb-auth"]
        .iter()
        .filter_map(|name| h.get(*name))
        .find_map(|v| ring.identify(v.as_bytes()))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_bearer() {
        assert_eq!(bare_key(b"secret"), b"secret");
        assert_eq!(bare_key(b"Bearer secret"), b"secret");
        assert_eq!(bare_key(b"bearer  secret "), b"secret");
        assert_eq!(bare_key(b"Bearer"), b"Bearer");
        assert_eq!(bare_key(b""), b"");
    }
}

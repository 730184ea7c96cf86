//! Key checks: bare or `Bearer` keys, compared in constant time.

use subtle::ConstantTimeEq;

/// Strips an optional `Bearer ` prefix (case-insensitive) and surrounding blanks.
pub fn bare_key(value: &[u8]) -> &[u8] {
    let v = value.trim_ascii();
    if v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
        v[7..].trim_ascii()
    } else {
        v
    }
}

/// True when `presented` (bare or Bearer) equals `expected`, in constant time for equal lengths.
pub fn key_matches(presented: &[u8], expected: &str) -> bool {
    let k = bare_key(presented);
    // Length is not secret-dependent beyond what `ct_eq` already reveals.
    k.len() == expected.len() && bool::from(k.ct_eq(expected.as_bytes()))
}

/// True if `Authorization` or `x-lb-auth` carries the LB key.
pub fn lb_authorized(session: &pingora::proxy::Session, key: &str) -> bool {
    let h = &session.req_header().headers;
    ["authorization", "x-lb-auth"]
        .iter()
        .filter_map(|name| h.get(*name))
        .any(|v| key_matches(v.as_bytes(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_bearer() {
        assert!(key_matches(b"secret", "secret"));
        assert!(key_matches(b"Bearer secret", "secret"));
        assert!(key_matches(b"bearer  secret ", "secret"));
        assert!(!key_matches(b"Bearer secreT", "secret"));
        assert!(!key_matches(b"", "secret"));
        assert!(!key_matches(b"secret2", "secret"));
    }
}

//! Who a presented key belongs to: the [`KeyRing`] maps the SHA-256 of every
//! configured key (the LB key, named clients' keys, operator keys) to its
//! [`Principal`].
//!
//! A presented key is hashed and looked up by its digest: the time taken depends on
//! neither how many keys there are nor which one matched, and the configuration may
//! hold `sha256:<hex>` digests instead of the keys themselves.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::clients::ClientSpec;

/// The SHA-256 of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest of a short key can be brute-forced: never printed either.
        f.write_str("KeyDigest(<redacted>)")
    }
}

impl KeyDigest {
    /// The digest of `key` as presented (already stripped of `Bearer `).
    pub fn of(key: &[u8]) -> KeyDigest {
        let d = ring::digest::digest(&ring::digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        KeyDigest(out)
    }

    /// A configured key: `sha256:<64 hex digits>` (the key's digest, so the file
    /// need not hold the key), or the key itself (printable ASCII, no spaces, so that
    /// a client can send it in a header). The error never quotes the key.
    pub fn parse(spec: &str) -> Result<KeyDigest, String> {
        let spec = spec.trim();
        if let Some(hex) = spec.strip_prefix("sha256:") {
            let bytes = decode_hex(hex).ok_or_else(|| {
                "a sha256: key must be followed by 64 hexadecimal digits".to_string()
            })?;
            return Ok(KeyDigest(bytes));
        }
        if spec.is_empty() {
            return Err("a key is empty".into());
        }
        if let Some(pos) = spec.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(format!(
                "character {} of a key cannot be sent in an HTTP header (a space, control \
                 or non-ASCII character)",
                pos + 1
            ));
        }
        Ok(KeyDigest::of(spec.as_bytes()))
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// What a key may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Read-only operator pages: the dashboard and the task board, without actions.
    Viewer,
    /// Every operator surface: the pages and their actions, `/logs`, keyed `/health`.
    Admin,
}

impl Role {
    /// `viewer` or `admin`, as the pages show it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// The holder of a key: a client that may run tasks, an operator, or both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Principal {
    /// The client it runs tasks as (`default` for the LB key).
    pub client: Option<Arc<ClientSpec>>,
    /// Its operator role, if any.
    pub role: Option<Role>,
}

impl Principal {
    /// The client's name, for logs, metrics and the board.
    pub(crate) fn client_name(&self) -> Option<&Arc<str>> {
        self.client.as_ref().map(|c| &c.name)
    }
}

/// Every configured key by its digest.
#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    by_digest: HashMap<KeyDigest, Principal>,
    clients: Vec<Arc<ClientSpec>>,
}

/// The name the LB key runs tasks as.
pub(crate) const DEFAULT_CLIENT: &str = "default";

impl KeyRing {
    /// Builds the ring. The LB key is the client `default` with no limits, and the
    /// admin key when `admin_keys` is empty (so a deployment with only
    /// `LB_AUTH_KEY` behaves as before). Two clients with one name, or one key
    /// given to two clients, are refused (naming the clients, never the key).
    pub(crate) fn build(
        lb_key: &str,
        clients: &[ClientSpec],
        admin_keys: &[KeyDigest],
        viewer_keys: &[KeyDigest],
    ) -> Result<KeyRing, String> {
        let mut ring = KeyRing::default();
        let default = Arc::new(ClientSpec::unlimited(DEFAULT_CLIENT));
        ring.insert_client(&default, &[KeyDigest::of(lb_key.as_bytes())])?;
        for client in clients {
            if ring.clients.iter().any(|c| c.name == client.name) {
                return Err(format!("client {:?} is named twice", &*client.name));
            }
            let client = Arc::new(client.clone());
            ring.insert_client(&client, &client.keys)?;
        }
        let lb_is_admin = admin_keys.is_empty();
        if lb_is_admin {
            ring.grant(KeyDigest::of(lb_key.as_bytes()), Role::Admin);
        }
        for &key in viewer_keys {
            ring.grant(key, Role::Viewer);
        }
        for &key in admin_keys {
            ring.grant(key, Role::Admin);
        }
        Ok(ring)
    }

    fn insert_client(
        &mut self,
        client: &Arc<ClientSpec>,
        keys: &[KeyDigest],
    ) -> Result<(), String> {
        for key in keys {
            if let Some(other) = self.by_digest.get(key).and_then(Principal::client_name) {
                return Err(format!(
                    "a key of client {:?} is also a key of client {:?}",
                    &*client.name, &**other
                ));
            }
            self.by_digest.insert(
                *key,
                Principal {
                    client: Some(client.clone()),
                    role: None,
                },
            );
        }
        self.clients.push(client.clone());
        Ok(())
    }

    /// Gives `key` at least `role` (an operator key may also be a client's key).
    fn grant(&mut self, key: KeyDigest, role: Role) {
        let p = self.by_digest.entry(key).or_default();
        p.role = p.role.max(Some(role));
    }

    /// The holder of `presented` (a header value, bare or `Bearer`), if any.
    pub(crate) fn identify(&self, presented: &[u8]) -> Option<&Principal> {
        let digest = KeyDigest::of(super::bare_key(presented));
        let (stored, principal) = self.by_digest.get_key_value(&digest)?;
        // The map compared the digests already; the constant-time check keeps that
        // true whatever the map's own comparison does.
        bool::from(stored.0.ct_eq(&digest.0)).then_some(principal)
    }

    /// The configured clients, `default` first.
    pub(crate) fn clients(&self) -> &[Arc<ClientSpec>] {
        &self.clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, keys: &[&str]) -> ClientSpec {
        let mut c = ClientSpec::unlimited(name);
        c.keys = keys.iter().map(|k| KeyDigest::parse(k).unwrap()).collect();
        c
    }

    #[test]
    fn the_lb_key_alone_is_the_default_client_and_the_admin() {
        let ring = KeyRing::build("lb", &[], &[], &[]).unwrap();
        let p = ring.identify(b"Bearer lb").unwrap();
        assert_eq!(p.client_name().map(|n| &**n), Some("default"));
        assert_eq!(p.role, Some(Role::Admin));
        assert!(ring.identify(b"other").is_none());
    }

    #[test]
    fn clients_operators_and_digests() {
        let digest = {
            let d = KeyDigest::of(b"k2");
            let hex: String = d.0.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        };
        let clients = [client("billing", &["k1", &digest])];
        let admin = [KeyDigest::parse("ops").unwrap()];
        let viewer = [
            KeyDigest::parse("eyes").unwrap(),
            KeyDigest::parse("k1").unwrap(),
        ];
        let ring = KeyRing::build("lb", &clients, &admin, &viewer).unwrap();
        for key in [&b"k1"[..], b"k2"] {
            let p = ring.identify(key).unwrap();
            assert_eq!(p.client_name().map(|n| &**n), Some("billing"));
        }
        assert_eq!(
            ring.identify(b"k2").unwrap().role,
            None,
            "a client key is no operator key"
        );
        assert_eq!(
            ring.identify(b"k1").unwrap().role,
            Some(Role::Viewer),
            "unless listed"
        );
        assert_eq!(ring.identify(b"ops").unwrap().role, Some(Role::Admin));
        assert!(ring.identify(b"ops").unwrap().client.is_none());
        assert_eq!(ring.identify(b"eyes").unwrap().role, Some(Role::Viewer));
        assert_eq!(
            ring.identify(b"lb").unwrap().role,
            None,
            "admin_keys take over"
        );
    }

    #[test]
    fn a_name_or_a_key_given_twice_is_refused_without_the_key() {
        let twice = [client("a", &["k"]), client("a", &["j"])];
        assert!(KeyRing::build("lb", &twice, &[], &[])
            .unwrap_err()
            .contains("named twice"));
        let shared = [client("a", &["secret-k"]), client("b", &["secret-k"])];
        let err = KeyRing::build("lb", &shared, &[], &[]).unwrap_err();
        assert!(err.contains("\"b\"") && err.contains("\"a\""), "{err}");
        assert!(!err.contains("secret-k"));
        let lb = [client("a", &["lb"])];
        assert!(KeyRing::build("lb", &lb, &[], &[]).is_err());
        assert!(KeyDigest::parse("sha256:xyz").is_err());
        assert!(!KeyDigest::parse("has space")
            .unwrap_err()
            .contains("has space"));
    }
}

//! Validated `auth:` (named clients, operator keys) and `logging.access_log`
//! settings.

use std::path::PathBuf;

/// Named clients and operator keys, validated (`auth:` without `lb_key`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// Inline clients and the clients file.
    pub clients: crate::auth::clients::ClientsSource,
    /// Operator keys (`auth.admin_keys`); empty: the LB key is the admin key.
    pub admin_keys: Vec<crate::auth::keys::KeyDigest>,
    /// Read-only operator keys (`auth.viewer_keys`).
    pub viewer_keys: Vec<crate::auth::keys::KeyDigest>,
}

impl AuthSettings {
    pub(super) fn resolve(
        a: &super::file::AuthSection,
    ) -> Result<AuthSettings, (&'static str, String)> {
        use crate::auth::keys::KeyDigest;
        let digests = |key: &'static str, list: &[String]| {
            list.iter()
                .map(|k| KeyDigest::parse(k).map_err(|e| (key, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(AuthSettings {
            clients: crate::auth::clients::ClientsSource {
                inline: crate::auth::clients::resolve_all(&a.clients)
                    .map_err(|e| ("auth.clients", e))?,
                file: a.clients_file.as_ref().map(PathBuf::from),
            },
            admin_keys: digests("auth.admin_keys (ADMIN_KEYS)", &a.admin_keys)?,
            viewer_keys: digests("auth.viewer_keys", &a.viewer_keys)?,
        })
    }

    /// True when more than the LB key is configured (named clients or operator
    /// keys): the operator surfaces then tell clients and operators apart.
    pub fn multi_tenant(&self) -> bool {
        !self.clients.inline.is_empty()
            || self.clients.file.is_some()
            || !self.admin_keys.is_empty()
            || !self.viewer_keys.is_empty()
    }
}

/// Where the access log is written (`logging.access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
    /// Any other value: a file, appended to, reopened on SIGUSR1 or when renamed.
    File(PathBuf),
}

impl AccessLogTarget {
    /// `stdout`, `stderr`, or a path.
    pub fn parse(text: &str) -> AccessLogTarget {
        match text.trim() {
            "stdout" | "-" => AccessLogTarget::Stdout,
            "stderr" => AccessLogTarget::Stderr,
            path => AccessLogTarget::File(PathBuf::from(path)),
        }
    }
}

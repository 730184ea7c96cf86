//! Named clients (`auth.clients`, or `auth.clients_file` / `CLIENTS_FILE`): their
//! names, keys and limits as configured, validated, and the file re-read when it
//! changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::keys::KeyDigest;

/// One client as written in YAML or JSON (`auth.clients[]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// `[a-z0-9_-]{1,64}`: shown on metrics, the board and logs.
    pub name: String,
    /// Its keys, plain or `sha256:<hex>`; several at once let a key be rotated.
    pub keys: Vec<String>,
    /// Tasks holding a Worker slot at once; 0 = no limit. Default 0.
    #[serde(default)]
    pub max_running: u32,
    /// Tasks waiting at once; 0 = no limit. Default 0.
    #[serde(default)]
    pub max_queued: u32,
    /// Tasks per second, sustained; 0 = no limit. Default 0.
    #[serde(default)]
    pub rate: f64,
    /// Tasks above the rate at once (token bucket depth); 0 = `rate`. Default 0.
    #[serde(default)]
    pub burst: u32,
    /// The most urgent priority it may use; a more urgent one is served as this.
    /// Default 1.
    #[serde(default = "one")]
    pub max_priority: u32,
    /// Share of dispatch when several clients wait at one priority. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A validated client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSpec {
    /// Its name.
    pub name: Arc<str>,
    /// Digests of its keys.
    pub keys: Vec<KeyDigest>,
    /// Running tasks at once (0: no limit).
    pub max_running: u32,
    /// Waiting tasks at once (0: no limit).
    pub max_queued: u32,
    /// Tasks per second (0: no limit).
    pub rate: f64,
    /// Bucket depth (`rate` when 0).
    pub burst: u32,
    /// Most urgent priority allowed (1 = any).
    pub max_priority: u32,
    /// Dispatch weight (at least 1).
    pub weight: u32,
}

impl ClientSpec {
    /// A client without keys or limits (the LB key's `default`).
    pub fn unlimited(name: &str) -> ClientSpec {
        ClientSpec {
            name: name.into(),
            keys: Vec::new(),
            max_running: 0,
            max_queued: 0,
            rate: 0.0,
            burst: 0,
            max_priority: 1,
            weight: 1,
        }
    }

    /// Validates an entry; the error names the client (never a key).
    pub fn resolve(entry: &ClientEntry) -> Result<ClientSpec, String> {
        let name = entry.name.as_str();
        let valid_name = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(format!(
                "client name {name:?} must be 1 to 64 of a-z, 0-9, _ and -"
            ));
        }
        if name == super::keys::DEFAULT_CLIENT {
            return Err("client name \"default\" is the LB key's (LB_AUTH_KEY)".into());
        }
        if entry.keys.is_empty() {
            return Err(format!("client {name:?} has no keys"));
        }
        let keys = entry
            .keys
            .iter()
            .map(|k| KeyDigest::parse(k).map_err(|e| format!("client {name:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if !(entry.rate.is_finite() && entry.rate >= 0.0) {
            return Err(format!("client {name:?}: rate must be 0 or more"));
        }
        if entry.max_priority == 0 || entry.weight == 0 {
            return Err(format!(
                "client {name:?}: max_priority and weight must be at least 1"
            ));
        }
        Ok(ClientSpec {
            name: name.into(),
            keys,
            max_running: entry.max_running,
            max_queued: entry.max_queued,
            rate: entry.rate,
            burst: entry.burst,
            max_priority: entry.max_priority,
            weight: entry.weight,
        })
    }
}

/// Validates a list of entries.
pub(crate) fn resolve_all(entries: &[ClientEntry]) -> Result<Vec<ClientSpec>, String> {
    entries.iter().map(ClientSpec::resolve).collect()
}

/// Where the client list comes from, beside the inline `auth.clients`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientsSource {
    /// `auth.clients`, validated.
    pub inline: Vec<ClientSpec>,
    /// `auth.clients_file` (`CLIENTS_FILE`), re-read when it changes.
    pub file: Option<PathBuf>,
}

/// Reads and validates a clients file: a YAML or JSON list of clients (or a map
/// with a `clients:` list). The error names the file and the problem.
pub(crate) fn load_file(path: &Path) -> Result<Vec<ClientSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_text(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the text of a clients file.
pub(crate) fn parse_text(text: &str) -> Result<Vec<ClientSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        clients: Vec<ClientEntry>,
    }
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    // Decoded by shape, so that an error names the field at fault.
    let entries = if value.is_sequence() {
        serde_yaml::from_value::<Vec<ClientEntry>>(value)
    } else {
        serde_yaml::from_value::<Section>(value).map(|s| s.clients)
    }
    .map_err(|e| e.to_string())?;
    resolve_all(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_file_is_a_list_or_a_section_in_yaml_or_json() {
        let yaml = "- name: billing\n  keys: [k1]\n  max_running: 2\n";
        let json = r#"{"clients": [{"name": "billing", "keys": ["k1"], "max_running": 2}]}"#;
        for text in [yaml, json] {
            let list = parse_text(text).unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(&*list[0].name, "billing");
            assert_eq!(
                (list[0].max_running, list[0].max_priority, list[0].weight),
                (2, 1, 1)
            );
        }
    }

    #[test]
    fn bad_entries_name_the_client_and_the_problem() {
        for (text, expect) in [
            ("- name: Billing\n  keys: [k]\n", "a-z"),
            ("- name: default\n  keys: [k]\n", "LB key"),
            ("- name: b\n  keys: []\n", "no keys"),
            ("- name: b\n  keys: [k]\n  weight: 0\n", "weight"),
            ("- name: b\n  keys: [k]\n  colour: red\n", "colour"),
            ("- name: b\n  keys: [\"a key\"]\n", "character 2"),
        ] {
            let err = parse_text(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}

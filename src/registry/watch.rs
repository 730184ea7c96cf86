//! Loading the Worker list and picking up changes to its file without a restart.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::dns::LiveList;
use super::Registry;
use crate::config::{ConfigError, WorkerSource};
use crate::worker_url::{redacted, DnsEntry, WorkerUrl};

/// An entry that names a Worker already listed under another (or the same) spelling.
pub struct Merged {
    /// The entry as written.
    pub entry: String,
    /// The earlier entry it reaches the same Worker as, as written.
    pub kept: String,
    /// The address both reach, e.g. `127.0.0.1:3000`.
    pub target: String,
}

/// A Worker list as read: each Worker once, in order, and the entries that repeated
/// one (used once; worth a warning).
pub struct ListedWorkers {
    /// The Workers, each once.
    pub urls: Vec<WorkerUrl>,
    /// `dns+http://NAME:PORT` entries, each once: one Worker per address of NAME.
    pub dns: Vec<DnsEntry>,
    /// Entries that named a Worker already listed.
    pub merged: Vec<Merged>,
}

impl ListedWorkers {
    /// Warnings about a list that loads but is likely not what the operator meant:
    /// no Worker at all (every task would get 503), or a Worker listed twice, under
    /// one spelling or two (both are named).
    pub fn warnings(&self, origin: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.urls.is_empty() && self.dns.is_empty() {
            warnings.push(format!(
                "{origin}: the Worker list is empty: every task will be refused with 503 until Workers are listed"
            ));
        }
        for m in &self.merged {
            let (entry, kept) = (
                redacted(&m.entry).to_string(),
                redacted(&m.kept).to_string(),
            );
            if entry.trim_end_matches('/') == kept.trim_end_matches('/') {
                warnings.push(format!(
                    "{origin}: Worker {entry:?} is listed more than once; it is used once"
                ));
            } else {
                warnings.push(format!(
                    "{origin}: Worker {entry:?} is the same Worker as {kept:?} (both reach {}); it is used once, as {kept:?}",
                    m.target
                ));
            }
        }
        warnings
    }
}

/// What decides that two entries are one Worker: scheme, the address the load
/// balancer connects to, port and base path. IP literals are canonical already;
/// `localhost` (and `*.localhost`, RFC 6761) is resolved here, as the connector would
/// (first address), since it never leaves the host. Other names are kept as names:
/// DNS answers change, and the list is not the place to pin them.
fn reach(url: &WorkerUrl) -> (bool, String, u16, String) {
    let host = &url.host;
    let local = host == "localhost" || host.ends_with(".localhost");
    let address = local
        .then(|| (host.as_str(), url.port).to_socket_addrs().ok()?.next())
        .flatten()
        .map(|a| match a.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
            ip => ip.to_string(),
        })
        .unwrap_or_else(|| host.clone());
    (url.tls, address, url.port, url.base_path.clone())
}

/// `address:port` for a warning (an IPv6 address in brackets).
fn target(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Parses `entries`, keeping each Worker once; `err` explains the bad entries (each
/// of them, shown [`redacted`]).
fn parse_entries<'a>(
    entries: impl IntoIterator<Item = &'a str>,
    err: impl Fn(String) -> ConfigError,
) -> Result<ListedWorkers, ConfigError> {
    let mut list = ListedWorkers {
        urls: Vec::new(),
        dns: Vec::new(),
        merged: Vec::new(),
    };
    let mut seen: HashMap<(bool, String, u16, String), usize> = HashMap::new();
    let mut refused = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if DnsEntry::is_dns(entry) {
            match DnsEntry::parse(entry) {
                Ok(dns) => add_dns(&mut list, entry, dns),
                Err(reason) => refused.push(format!("entry {i} refused: {reason}")),
            }
            continue;
        }
        let url = match WorkerUrl::parse(entry) {
            Ok(url) => url,
            Err(reason) => {
                refused.push(format!("entry {i} refused: {reason}"));
                continue;
            }
        };
        let key = reach(&url);
        match seen.get(&key) {
            Some(&at) => list.merged.push(Merged {
                entry: entry.trim().to_string(),
                kept: list.urls[at].listed.clone(),
                target: target(&key.1, key.2),
            }),
            None => {
                seen.insert(key, list.urls.len());
                list.urls.push(url);
            }
        }
    }
    if refused.is_empty() {
        Ok(list)
    } else {
        Err(err(refused.join("; ")))
    }
}

/// Adds a `dns+` entry unless it is listed already (then it is used once, with a
/// warning).
fn add_dns(list: &mut ListedWorkers, entry: &str, dns: DnsEntry) {
    match list.dns.iter().find(|d| d.raw == dns.raw) {
        Some(kept) => list.merged.push(Merged {
            entry: entry.trim().to_string(),
            kept: kept.raw.clone(),
            target: dns.name().to_string(),
        }),
        None => list.dns.push(dns),
    }
}

fn parse_file_list(text: &str, origin: &str) -> Result<ListedWorkers, ConfigError> {
    let err = |reason: String| ConfigError {
        origin: origin.to_string(),
        key: String::new(),
        reason,
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| err(format!("expected a JSON array of Worker URLs: {e}")))?;
    let entries = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // Not echoed: a non-string entry may hold anything, secrets included.
            v.as_str()
                .ok_or_else(|| err(format!("entry {i} is not a string (a Worker URL)")))
        })
        .collect::<Result<Vec<&str>, ConfigError>>()?;
    parse_entries(entries, err)
}

/// Reads the Worker list from its source, with the entries that repeated a Worker.
pub(crate) fn load_listed(source: &WorkerSource) -> Result<ListedWorkers, ConfigError> {
    match source {
        WorkerSource::Inline(list) => {
            parse_entries(list.iter().map(String::as_str), |reason| ConfigError {
                origin: "configuration".into(),
                key: "workers.list".into(),
                reason,
            })
        }
        WorkerSource::File(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                origin: origin.clone(),
                key: String::new(),
                reason: format!("cannot read the Worker list: {e}"),
            })?;
            parse_file_list(&text, &origin)
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// Background service: registers the initial list, then re-reads the file when it
/// changes and looks the `dns+` entries up every `workers.dns.refresh_ms`.
pub(crate) struct ListWatcher {
    /// The registry to feed.
    pub registry: Arc<Registry>,
    /// The list loaded at start-up.
    pub initial: Vec<WorkerUrl>,
}

#[async_trait]
impl BackgroundService for ListWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let registry = &self.registry;
        let settings = registry.settings.clone();
        // `initial` holds the URLs; the `dns+` entries are read again from the source.
        let dns = load_listed(&settings.workers.source).map_or_else(|_| Vec::new(), |l| l.dns);
        let mut list = LiveList::new(self.initial.clone(), dns, &settings);
        if list.has_dns() {
            list.refresh(&registry.dns).await;
        }
        let mut running = list.workers();
        registry.set_list(&running);
        log::info!("watching {} worker(s)", running.len());
        // On shutdown the Worker polls and feeds keep running: tasks being drained wait
        // for slots the Workers report freed. The drainer stops them when it is done.
        let mut file = match &settings.workers.source {
            WorkerSource::File(path) => Some(FileWatch::new(path)),
            WorkerSource::Inline(_) => None,
        };
        let mut file_tick = tokio::time::interval(settings.workers.reload_interval);
        let mut dns_tick = tokio::time::interval(settings.workers.dns_refresh);
        // A round of lookups that ran long (timeouts) is not followed by a burst.
        dns_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        dns_tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = file_tick.tick(), if file.is_some() => {
                    let Some(listed) = file.as_mut().and_then(FileWatch::changed) else {
                        continue;
                    };
                    list.set_entries(listed.urls, listed.dns);
                    if list.has_dns() {
                        list.refresh(&registry.dns).await;
                    }
                }
                _ = dns_tick.tick(), if list.has_dns() => list.refresh(&registry.dns).await,
            }
            let now = list.workers();
            if now != running {
                registry.set_list(&now);
                running = now;
            }
        }
    }
}

/// The Worker list file, re-read when its modification time or size changes.
struct FileWatch {
    path: std::path::PathBuf,
    stamp: Option<(SystemTime, u64)>,
    text: String,
}

impl FileWatch {
    fn new(path: &Path) -> FileWatch {
        FileWatch {
            path: path.to_path_buf(),
            stamp: stamp(path),
            text: std::fs::read_to_string(path).unwrap_or_default(),
        }
    }

    /// The new list if the file changed and parses; a file that cannot be read or
    /// parsed is logged and the current list kept.
    fn changed(&mut self) -> Option<ListedWorkers> {
        let now = stamp(&self.path);
        if now == self.stamp {
            return None;
        }
        self.stamp = now;
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            log::error!(
                "{}: cannot read the Worker list; keeping the current one",
                self.path.display()
            );
            return None;
        };
        if text == self.text {
            return None;
        }
        let origin = self.path.display().to_string();
        match parse_file_list(&text, &origin) {
            Ok(listed) => {
                log::info!(
                    "{origin}: Worker list changed, {} worker(s), {} dns+ entr(ies)",
                    listed.urls.len(),
                    listed.dns.len()
                );
                for w in listed.warnings(&origin) {
                    log::warn!("{w}");
                }
                self.text = text;
                Some(listed)
            }
            Err(e) => {
                log::error!("{e}; keeping the current Worker list");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_worker_merge_with_a_warning_naming_both() {
        let text = r#"["http://127.0.0.1:4100", "HTTP://127.0.0.1:4100/", "http://[::ffff:127.0.0.1]:4100",
            "http://127.0.0.1:4100", "http://127.0.0.1:4101", "https://127.0.0.1:4100"]"#;
        let listed = parse_file_list(text, "w.json").unwrap();
        let urls: Vec<&str> = listed.urls.iter().map(|u| u.raw.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:4100",
                "http://127.0.0.1:4101",
                "https://127.0.0.1:4100"
            ]
        );
        let warnings = listed.warnings("w.json");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains(
            r#"Worker "HTTP://127.0.0.1:4100/" is the same Worker as "http://127.0.0.1:4100" (both reach 127.0.0.1:4100)"#
        ));
        assert!(warnings[1].contains("[::ffff:127.0.0.1]"), "{warnings:?}");
        assert!(
            warnings[2].contains("is listed more than once"),
            "{warnings:?}"
        );
    }

    #[test]
    fn every_refused_entry_is_named_redacted() {
        let text = r#"["http://u:PassW0rd@h", "http://ok:1", "http://h/?token=T0ken", 5]"#;
        let err = parse_file_list(text, "w.json")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry 3 is not a string"), "{err}");
        let text = r#"["http://u:PassW0rd@h", "http://ok:1", "http://h/?token=T0ken"]"#;
        let err = parse_file_list(text, "w.json")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("entry 0 refused") && err.contains("entry 2 refused"),
            "{err}"
        );
        assert!(!err.contains("PassW0rd") && !err.contains("T0ken"), "{err}");
    }
}

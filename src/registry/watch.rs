//! Loading the Worker list and picking up changes to its file without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Registry;
use crate::config::{ConfigError, WorkerSource};
use crate::worker_url::WorkerUrl;

/// Parses the Worker list file: a JSON array of base URLs.
pub fn parse_list(text: &str, origin: &str) -> Result<Vec<WorkerUrl>, ConfigError> {
    parse_file_list(text, origin).map(|list| list.urls)
}

/// A Worker list as read: each Worker once, in order, and the entries that repeated
/// one (used once; worth a warning).
pub struct ListedWorkers {
    /// The Workers, each once.
    pub urls: Vec<WorkerUrl>,
    /// Entries, as written, that named a Worker already listed.
    pub repeated: Vec<String>,
}

impl ListedWorkers {
    /// Warnings about a list that loads but is likely not what the operator meant:
    /// no Worker at all (every task would get 503), or a Worker listed twice.
    pub fn warnings(&self, origin: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.urls.is_empty() {
            warnings.push(format!(
                "{origin}: the Worker list is empty: every task will be refused with 503 until Workers are listed"
            ));
        }
        for entry in &self.repeated {
            warnings.push(format!(
                "{origin}: Worker {entry:?} is listed more than once; it is used once"
            ));
        }
        warnings
    }
}

/// Parses `entries`, keeping each Worker once; `err` explains a bad entry.
fn parse_entries<'a>(
    entries: impl IntoIterator<Item = &'a str>,
    err: impl Fn(String) -> ConfigError,
) -> Result<ListedWorkers, ConfigError> {
    let mut list = ListedWorkers {
        urls: Vec::new(),
        repeated: Vec::new(),
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let url = WorkerUrl::parse(entry).map_err(|r| err(format!("entry {i}: {r}")))?;
        if list.urls.contains(&url) {
            list.repeated.push(entry.to_string());
        } else {
            list.urls.push(url);
        }
    }
    Ok(list)
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
            v.as_str()
                .ok_or_else(|| err(format!("entry {i} is not a string: {v}")))
        })
        .collect::<Result<Vec<&str>, ConfigError>>()?;
    parse_entries(entries, err)
}

/// Reads the Worker list from its source.
pub fn load_list(source: &WorkerSource) -> Result<Vec<WorkerUrl>, ConfigError> {
    load_listed(source).map(|list| list.urls)
}

/// Reads the Worker list from its source, with the entries that repeated a Worker.
pub fn load_listed(source: &WorkerSource) -> Result<ListedWorkers, ConfigError> {
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

/// Background service: registers the initial list, then re-reads the file when it changes.
pub struct ListWatcher {
    /// The registry to feed.
    pub registry: Arc<Registry>,
    /// The list loaded at start-up.
    pub initial: Vec<WorkerUrl>,
}

#[async_trait]
impl BackgroundService for ListWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let registry = &self.registry;
        registry.set_list(&self.initial);
        log::info!("watching {} worker(s)", self.initial.len());
        let source = registry.settings.workers.clone();
        // On shutdown the Worker polls and feeds keep running: tasks being drained wait
        // for slots the Workers report freed. The drainer stops them when it is done.
        let WorkerSource::File(path) = source else {
            let _ = shutdown.changed().await;
            return;
        };
        let mut last_stamp = stamp(&path);
        let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut ticker = tokio::time::interval(registry.settings.workers_reload_interval);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticker.tick() => {}
            }
            let now = stamp(&path);
            if now == last_stamp {
                continue;
            }
            last_stamp = now;
            let Ok(text) = std::fs::read_to_string(&path) else {
                log::error!(
                    "{}: cannot read the Worker list; keeping the current one",
                    path.display()
                );
                continue;
            };
            if text == last_text {
                continue;
            }
            match parse_list(&text, &path.display().to_string()) {
                Ok(list) => {
                    log::info!(
                        "{}: Worker list changed, {} worker(s)",
                        path.display(),
                        list.len()
                    );
                    registry.set_list(&list);
                    last_text = text;
                }
                Err(e) => log::error!("{e}; keeping the current Worker list"),
            }
        }
    }
}

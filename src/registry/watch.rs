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
    let err = |reason: String| ConfigError {
        origin: origin.to_string(),
        key: String::new(),
        reason,
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| err(format!("expected a JSON array of Worker URLs: {e}")))?;
    let mut out: Vec<WorkerUrl> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let s = v
            .as_str()
            .ok_or_else(|| err(format!("entry {i} is not a string: {v}")))?;
        let url = WorkerUrl::parse(s).map_err(|r| err(format!("entry {i}: {r}")))?;
        if !out.contains(&url) {
            out.push(url);
        }
    }
    Ok(out)
}

/// Reads the Worker list from its source.
pub fn load_list(source: &WorkerSource) -> Result<Vec<WorkerUrl>, ConfigError> {
    match source {
        WorkerSource::Inline(list) => list
            .iter()
            .map(|u| {
                WorkerUrl::parse(u).map_err(|reason| ConfigError {
                    origin: "configuration".into(),
                    key: "workers.list".into(),
                    reason,
                })
            })
            .collect(),
        WorkerSource::File(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                origin: origin.clone(),
                key: String::new(),
                reason: format!("cannot read the Worker list: {e}"),
            })?;
            parse_list(&text, &origin)
        }
    }
}

/// Warnings about a Worker list that loads but is likely not what the operator meant:
/// no Worker at all (every task would get 503), or a Worker listed more than once
/// (it is used once). Empty when the list is fine or cannot be read (that is an error
/// reported by [`load_list`]).
pub fn list_warnings(source: &WorkerSource) -> Vec<String> {
    let (origin, entries): (String, Vec<String>) = match source {
        WorkerSource::Inline(list) => ("workers.list".into(), list.clone()),
        WorkerSource::File(path) => {
            let Ok(text) = std::fs::read_to_string(path) else {
                return Vec::new();
            };
            let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
                return Vec::new();
            };
            let entries = list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            (path.display().to_string(), entries)
        }
    };
    let mut warnings = Vec::new();
    if entries.is_empty() {
        warnings.push(format!(
            "{origin}: the Worker list is empty: every task will be refused with 503 until Workers are listed"
        ));
    }
    let mut seen: Vec<WorkerUrl> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let Ok(url) = WorkerUrl::parse(entry) else {
            continue;
        };
        if seen.contains(&url) {
            warnings.push(format!(
                "{origin}: Worker {entry:?} is listed more than once; it is used once"
            ));
        } else {
            seen.push(url);
        }
    }
    warnings
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

//! The Worker registry: the current Worker list, what each Worker last reported,
//! contract conflict detection, and the background tasks (poll + slot feed) that
//! keep it current.

pub mod discovery;
pub mod feed;
pub mod record;
pub mod url;
pub mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::scheduler::{Scheduler, WorkerId};
use crate::upstream::Upstream;
use record::{FeedState, HealthReport, WorkerRecord};
use url::WorkerUrl;

/// One Worker's figures for the metrics gauges.
#[derive(Debug, Clone)]
pub struct WorkerGauge {
    /// Base URL.
    pub url: String,
    /// Group, or `unknown` before the first poll.
    pub group: String,
    /// May take tasks.
    pub up: bool,
    /// Slots this load balancer holds.
    pub in_flight: u32,
    /// Slot limit.
    pub limit: u32,
}

#[derive(Default)]
struct State {
    workers: HashMap<WorkerId, WorkerRecord>,
    by_url: HashMap<String, WorkerId>,
    tasks: HashMap<WorkerId, Vec<JoinHandle<()>>>,
}

/// Shared registry of Workers. Cheap to clone through `Arc`.
pub struct Registry {
    state: RwLock<State>,
    next_id: AtomicU64,
    /// Slot accounting fed by this registry.
    pub scheduler: Arc<Scheduler>,
    /// Client used for polls and log fetches (its own pool, apart from tasks).
    pub upstream: Upstream,
    /// Settings (intervals, keys).
    pub settings: Arc<Settings>,
    /// TLS settings of `wss://` slot feeds.
    pub ws_tls: Arc<pingora::tls::ClientConfig>,
}

impl Registry {
    /// An empty registry.
    pub fn new(settings: Arc<Settings>, scheduler: Arc<Scheduler>) -> Arc<Registry> {
        let upstream = Upstream::new(
            settings.discovery_timeout,
            settings.pool_idle_timeout,
            settings.ca_file.as_ref().and_then(|p| p.to_str()),
        );
        // Validated at start-up (see `main`): a bad CA file never gets this far.
        let ws_tls = crate::upstream::tls_client_config(settings.ca_file.as_deref())
            .unwrap_or_else(|_| crate::upstream::tls_client_config(None).expect("platform roots"));
        Arc::new(Registry {
            ws_tls,
            state: RwLock::new(State::default()),
            next_id: AtomicU64::new(1),
            scheduler,
            upstream,
            settings,
        })
    }

    /// Replaces the Worker list: new URLs start being polled, removed ones stop.
    /// Tasks in flight on removed Workers are left to finish.
    pub fn set_list(self: &Arc<Self>, urls: &[WorkerUrl]) {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        {
            let mut st = self.state.write();
            let keep: HashMap<&str, usize> = urls
                .iter()
                .enumerate()
                .map(|(i, u)| (u.raw.as_str(), i))
                .collect();
            let gone: Vec<String> = st
                .by_url
                .keys()
                .filter(|u| !keep.contains_key(u.as_str()))
                .cloned()
                .collect();
            for u in gone {
                if let Some(id) = st.by_url.remove(&u) {
                    st.workers.remove(&id);
                    for t in st.tasks.remove(&id).unwrap_or_default() {
                        t.abort();
                    }
                    removed.push((id, u));
                }
            }
            for (i, u) in urls.iter().enumerate() {
                if let Some(id) = st.by_url.get(&u.raw).copied() {
                    if let Some(w) = st.workers.get_mut(&id) {
                        w.index = i;
                    }
                    continue;
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let url = Arc::new(u.clone());
                st.by_url.insert(u.raw.clone(), id);
                st.workers.insert(id, WorkerRecord::new(id, url.clone(), i));
                added.push((id, url));
            }
        }
        for (id, u) in removed {
            log::info!("worker removed from the list: {u}");
            self.scheduler.remove_worker(id);
        }
        self.revalidate_all();
        for (id, url) in added {
            log::info!("worker added to the list: {url}");
            let poll = tokio::spawn(discovery::poll_loop(self.clone(), id, url.clone()));
            let feed = tokio::spawn(feed::feed_loop(self.clone(), id, url));
            self.state.write().tasks.insert(id, vec![poll, feed]);
        }
    }

    /// Stops every background task (shutdown).
    pub fn stop(&self) {
        let mut st = self.state.write();
        for (_, tasks) in st.tasks.drain() {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// Records a successful poll.
    pub(crate) fn on_health(&self, id: WorkerId, report: HealthReport) {
        let pool_changed = {
            let mut st = self.state.write();
            let Some(w) = st.workers.get_mut(&id) else {
                return;
            };
            let changed = w.health.as_ref().is_none_or(|h| {
                h.group != report.group
                    || h.contract != report.contract
                    || h.fingerprint != report.fingerprint
            });
            if w.health.as_ref().is_some_and(|h| h.status != report.status) {
                log::info!("worker {} is now {}", w.url, report.status);
            }
            w.apply_health(report);
            changed
        };
        if pool_changed {
            self.revalidate_all();
        } else {
            self.push(id, true);
        }
    }

    /// Records a failed poll (after its retries).
    pub(crate) fn on_poll_failed(&self, id: WorkerId, why: String) {
        {
            let mut st = self.state.write();
            let Some(w) = st.workers.get_mut(&id) else {
                return;
            };
            crate::metrics::METRICS
                .discovery_errors
                .with_label_values(&[&w.url.raw])
                .inc();
            if w.http_up || w.poll_error.is_none() {
                log::warn!("worker {} unreachable: {why}", w.url);
            }
            w.http_up = false;
            w.poll_error = Some(why);
        }
        self.push(id, false);
    }

    /// Records a slot feed message.
    pub(crate) fn on_feed_message(&self, id: WorkerId, msg: &Value) {
        {
            let mut st = self.state.write();
            let Some(w) = st.workers.get_mut(&id) else {
                return;
            };
            w.apply_feed(msg);
        }
        self.push(id, true);
    }

    /// Records a slot feed state change; `offline` marks the Worker unusable until it answers.
    pub(crate) fn on_feed_state(
        &self,
        id: WorkerId,
        state: FeedState,
        error: Option<String>,
        offline: bool,
    ) {
        {
            let mut st = self.state.write();
            let Some(w) = st.workers.get_mut(&id) else {
                return;
            };
            if error.is_some() {
                crate::metrics::METRICS
                    .websocket_errors
                    .with_label_values(&[&w.url.raw])
                    .inc();
            }
            w.feed = state;
            w.feed_error = error;
            w.offline |= offline;
        }
        self.push(id, false);
    }

    /// The advertised slot feed port of a Worker, once known.
    pub(crate) fn ws_port(&self, id: WorkerId) -> Option<u16> {
        self.state
            .read()
            .workers
            .get(&id)
            .and_then(|w| w.health.as_ref())
            .and_then(|h| h.websocket_port)
    }

    fn push(&self, id: WorkerId, with_report: bool) {
        let view = self
            .state
            .read()
            .workers
            .get(&id)
            .and_then(|w| w.slots_view(with_report));
        if let Some(v) = view {
            self.scheduler.upsert_worker(id, v);
        }
    }

    /// Recomputes contract conflicts for every pool, then refreshes the scheduler.
    fn revalidate_all(&self) {
        let views: Vec<_> = {
            let mut st = self.state.write();
            let mut reference: HashMap<(Arc<str>, u64), (usize, u64, String)> = HashMap::new();
            for w in st.workers.values() {
                if let Some(h) = &w.health {
                    let key = (h.group.clone(), h.contract);
                    let cand = (w.index, h.fingerprint, w.url.raw.clone());
                    reference
                        .entry(key)
                        .and_modify(|r| {
                            if cand.0 < r.0 {
                                *r = cand.clone();
                            }
                        })
                        .or_insert(cand);
                }
            }
            for w in st.workers.values_mut() {
                let Some(h) = &w.health else { continue };
                let r = &reference[&(h.group.clone(), h.contract)];
                let reason = (r.1 != h.fingerprint).then(|| {
                    format!(
                        "functions differ from {} (the reference of group {:?} contract {})",
                        r.2, &*h.group, h.contract
                    )
                });
                if reason.is_some() && w.invalid_reason.is_none() {
                    log::warn!(
                        "worker {} excluded: {}",
                        w.url,
                        reason.as_deref().unwrap_or("")
                    );
                }
                w.invalid_reason = reason;
            }
            st.workers
                .values()
                .filter_map(|w| w.slots_view(true).map(|v| (w.id, v)))
                .collect()
        };
        for (id, v) in views {
            self.scheduler.upsert_worker(id, v);
        }
    }

    /// Looks a Worker up by its exact base URL (used to refuse URLs not in the list).
    pub fn find_by_url(&self, url: &str) -> Option<Arc<WorkerUrl>> {
        let st = self.state.read();
        let id = st.by_url.get(url.trim_end_matches('/'))?;
        st.workers.get(id).map(|w| w.url.clone())
    }

    /// `(workers, invalidWorkers)` as JSON records, in list order.
    pub fn snapshot(&self) -> (Vec<Value>, Vec<Value>) {
        let mut records: Vec<WorkerRecord> = self.state.read().workers.values().cloned().collect();
        records.sort_by_key(|w| w.index);
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for w in &records {
            let in_flight = self.scheduler.usage(w.id).map_or(0, |u| u.in_flight);
            let json = w.to_json(in_flight);
            if w.invalid_reason.is_some() {
                invalid.push(json);
            } else {
                valid.push(json);
            }
        }
        (valid, invalid)
    }

    /// Per-Worker figures for the metrics gauges.
    pub fn gauges(&self) -> Vec<WorkerGauge> {
        let st = self.state.read();
        st.workers
            .values()
            .map(|w| {
                let usage = self.scheduler.usage(w.id).unwrap_or_default();
                WorkerGauge {
                    url: w.url.raw.clone(),
                    group: w
                        .health
                        .as_ref()
                        .map_or_else(|| "unknown".to_string(), |h| h.group.to_string()),
                    up: w.eligible(),
                    in_flight: usage.in_flight,
                    limit: w.slots.map_or(0, |s| s.limit),
                }
            })
            .collect()
    }

    /// `(registered, eligible)` Worker counts.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.state.read();
        let up = st.workers.values().filter(|w| w.eligible()).count();
        (st.workers.len(), up)
    }
}

//! The Worker registry: the current Worker list, what each Worker last reported,
//! contract conflict detection, and the background tasks (poll + slot feed) that
//! keep it current.

pub(crate) mod conflicts;
pub(crate) mod discovery;
pub(crate) mod dns;
pub(crate) mod feed;
pub(crate) mod record;
pub(crate) mod schemas;
pub(crate) mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::scheduler::{Scheduler, WorkerId};
use crate::task::schema::Schema;
use crate::upstream::Upstream;
use crate::worker_url::WorkerUrl;
use record::{FeedState, HealthReport, WorkerRecord};

/// One Worker's figures for the metrics gauges.
pub(crate) use crate::metrics::WorkerGauge;

#[derive(Default)]
struct State {
    workers: HashMap<WorkerId, WorkerRecord>,
    by_url: HashMap<String, WorkerId>,
    tasks: HashMap<WorkerId, Vec<JoinHandle<()>>>,
    pools: conflicts::Pools,
    schemas: schemas::PoolSchemas,
}

/// Shared registry of Workers. Cheap to clone through `Arc`.
pub(crate) struct Registry {
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
    /// What the `dns+` entries of the list last resolved to (keyed `/health`).
    pub dns: dns::DnsState,
    /// True once every Worker of the list has been polled at least once.
    warm: tokio::sync::watch::Sender<bool>,
    /// When the first Worker list was set, so when polling began: after an upgrade
    /// that is once the old process handed the listeners over, which may be long
    /// after this registry was made.
    watching_since: std::sync::OnceLock<tokio::time::Instant>,
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new(settings: Arc<Settings>, scheduler: Arc<Scheduler>) -> Arc<Registry> {
        let upstream = Upstream::new(
            settings.discovery.timeout,
            settings.upstream.pool_idle_timeout,
            settings.upstream.ca_file.as_ref().and_then(|p| p.to_str()),
        );
        // Validated at start-up (see `main`): a bad CA file never gets this far.
        let ws_tls = crate::upstream::tls_client_config(settings.upstream.ca_file.as_deref())
            .unwrap_or_else(|_| crate::upstream::tls_client_config(None).expect("platform roots"));
        // The registry is what makes Workers appear: it sets how long the scheduler
        // holds tasks of a group that has none (the waiting room).
        scheduler.set_no_worker_wait(settings.tasks.no_worker_wait);
        // The per-group queue, running and free figures on /metrics are read from the
        // scheduler on each scrape (the process has one registry; a second one, in unit
        // tests, is ignored).
        let queue = Arc::downgrade(&scheduler);
        crate::metrics::METRICS.set_queue_source(Box::new(move || {
            queue.upgrade().map(|s| s.group_load()).unwrap_or_default()
        }));
        Arc::new(Registry {
            dns: dns::DnsState::default(),
            warm: tokio::sync::watch::channel(false).0,
            watching_since: std::sync::OnceLock::new(),
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
    pub(crate) fn set_list(self: &Arc<Self>, urls: &[WorkerUrl]) {
        self.watching_since.get_or_init(tokio::time::Instant::now);
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
                let Some(id) = st.by_url.remove(&u) else {
                    continue;
                };
                for t in st.tasks.remove(&id).unwrap_or_default() {
                    t.abort();
                }
                removed.extend(st.workers.remove(&id));
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
        self.release_removed(removed);
        self.revalidate_all();
        self.check_warm();
        for (id, url) in added {
            log::info!("worker added to the list: {url}");
            crate::metrics::METRICS.init_worker(&url.raw);
            let poll = tokio::spawn(discovery::poll_loop(self.clone(), id, url.clone()));
            let feed = tokio::spawn(feed::feed_loop(self.clone(), id, url));
            self.state.write().tasks.insert(id, vec![poll, feed]);
        }
    }

    /// Releases what Workers taken off the list held, once their records are gone
    /// (so no poll or feed event can count for them again): their slots, metric
    /// series and cached peers (polls), and the room the maps kept for them when the
    /// list shrank a lot (10,000 entries reverted to 1 keep no 10,000 entries' room).
    fn release_removed(&self, removed: Vec<WorkerRecord>) {
        if removed.is_empty() {
            return;
        }
        for w in &removed {
            log::info!("worker removed from the list: {}", w.url);
            self.scheduler.remove_worker(w.id);
            let group = w.health.as_ref().map_or("unknown", |h| &*h.group);
            crate::metrics::METRICS.forget_worker(&w.url.raw, group);
            self.upstream.forget(&w.url);
        }
        let mut st = self.state.write();
        if st.workers.capacity() > 4 * st.workers.len().max(16) {
            st.workers.shrink_to_fit();
            st.by_url.shrink_to_fit();
            st.tasks.shrink_to_fit();
            drop(st);
            give_back_freed_memory();
        }
    }

    /// Stops every background task (shutdown).
    pub(crate) fn stop(&self) {
        let mut st = self.state.write();
        for (_, tasks) in st.tasks.drain() {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// Records a successful poll.
    pub(crate) fn on_health(&self, id: WorkerId, report: HealthReport) {
        let mut touched = vec![id];
        {
            let mut st = self.state.write();
            let State {
                workers,
                pools,
                schemas,
                ..
            } = &mut *st;
            let Some(w) = workers.get_mut(&id) else {
                return;
            };
            if w.health.as_ref().is_some_and(|h| h.status != report.status) {
                log::info!("worker {} is now {}", w.url, report.status);
            }
            let old_key = conflicts::pool_of(w);
            let old_fp = w.health.as_ref().map(|h| h.fingerprint);
            let index = w.index;
            w.apply_health(report);
            let new_key = conflicts::pool_of(w).expect("a record with health has a pool");
            let new_fp = w.health.as_ref().map(|h| h.fingerprint);
            if old_key.as_ref() != Some(&new_key) || old_fp != new_fp {
                if let Some(old) = &old_key {
                    let was_reference = pools.reference(old) == Some(id);
                    pools.remove(old, index);
                    if was_reference && *old != new_key {
                        let members = pools.members(old);
                        touched.extend(conflicts::validate(workers, pools, old, &members));
                    }
                }
                let reference_before = pools.reference(&new_key);
                pools.insert(new_key.clone(), index, id);
                let reference_now = pools.reference(&new_key);
                // A new reference (or the reference's own list changing) re-judges the pool.
                let ids = if reference_now != reference_before || reference_now == Some(id) {
                    pools.members(&new_key)
                } else {
                    vec![id]
                };
                touched.extend(conflicts::validate(workers, pools, &new_key, &ids));
                if let Some(old) = old_key.filter(|old| *old != new_key) {
                    schemas.refresh(workers, pools, &old);
                }
                schemas.refresh(workers, pools, &new_key);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            self.push(id, true);
        }
        self.check_warm();
    }

    /// Records that a poll's first attempt failed: shown `offline` until an answer.
    pub(crate) fn on_poll_attempt_failed(&self, id: WorkerId) {
        if let Some(w) = self.state.write().workers.get_mut(&id) {
            w.poll_failing = true;
        }
    }

    /// Records a failed poll (after its retries).
    pub(crate) fn on_poll_failed(&self, id: WorkerId, why: String) {
        self.update(id, false, |w| {
            crate::metrics::METRICS
                .workers
                .discovery_errors
                .with_label_values(&[&w.url.raw])
                .inc();
            if w.http_up || w.poll_error.is_none() {
                log::warn!("worker {} unreachable: {why}", w.url);
            }
            w.http_up = false;
            w.polled = true;
            w.poll_error = Some(why);
        });
        self.check_warm();
    }

    /// Marks the registry warm once every listed Worker has been polled.
    fn check_warm(&self) {
        if *self.warm.borrow() {
            return;
        }
        if self.state.read().workers.values().all(|w| w.polled) {
            self.warm.send_replace(true);
        }
    }

    /// True once every Worker of the list has been polled at least once. Until then
    /// "no Worker for this group" may only mean "not polled yet".
    pub(crate) fn is_warm(&self) -> bool {
        *self.warm.borrow()
    }

    /// Waits until the registry is warm, `deadline` passes, or one discovery timeout
    /// (plus a second) after polling began: by then every live Worker has answered
    /// once, and a dead one must not hold tasks back.
    pub(crate) async fn wait_warm(&self, deadline: tokio::time::Instant) {
        let mut rx = self.warm.subscribe();
        let until = deadline.min(self.warm_up_end());
        let _ = tokio::time::timeout_at(until, rx.wait_for(|warm| *warm)).await;
    }

    /// When the warm-up ends: one discovery timeout plus a second after polling
    /// began (from now while no list is set yet).
    fn warm_up_end(&self) -> tokio::time::Instant {
        let since = self
            .watching_since
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        since + self.settings.discovery.timeout + Duration::from_secs(1)
    }

    /// Records a slot feed message.
    pub(crate) fn on_feed_message(&self, id: WorkerId, msg: &Value) {
        self.update(id, true, |w| w.apply_feed(msg));
    }

    /// Records a slot feed state change; `offline` marks the Worker unusable until it answers.
    pub(crate) fn on_feed_state(
        &self,
        id: WorkerId,
        state: FeedState,
        error: Option<String>,
        offline: bool,
    ) {
        self.update(id, false, |w| {
            if error.is_some() {
                crate::metrics::METRICS
                    .workers
                    .websocket_errors
                    .with_label_values(&[&w.url.raw])
                    .inc();
            }
            w.feed = state;
            w.feed_error = error;
            w.offline |= offline;
        });
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

    /// Changes one record and hands the scheduler its new view, under one lock.
    /// `with_report` says whether the change carries the Worker's own slot figures.
    fn update(&self, id: WorkerId, with_report: bool, change: impl FnOnce(&mut WorkerRecord)) {
        let view = {
            let mut st = self.state.write();
            let Some(w) = st.workers.get_mut(&id) else {
                return;
            };
            change(w);
            w.slots_view(with_report)
        };
        if let Some(v) = view {
            self.scheduler.upsert_worker(id, v);
        }
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

    /// Rebuilds the pools after a list change and re-judges every Worker.
    fn revalidate_all(&self) {
        let touched: Vec<WorkerId> = {
            let mut st = self.state.write();
            let State {
                workers,
                pools,
                schemas,
                ..
            } = &mut *st;
            *pools = conflicts::Pools::rebuild(workers);
            let mut touched = Vec::new();
            for key in pools.keys() {
                let members = pools.members(&key);
                touched.extend(conflicts::validate(workers, pools, &key, &members));
            }
            schemas.rebuild(workers, pools);
            touched
        };
        for id in touched {
            self.push(id, true);
        }
    }

    /// The published `params` schema of `function` for tasks of `group` and
    /// `contract`: `Some` only when every valid Worker of that pool publishes the
    /// same one and it is well formed (the edge input check).
    pub(crate) fn schema(&self, group: &str, contract: u64, function: &str) -> Option<Arc<Schema>> {
        self.state.read().schemas.get(group, contract, function)
    }

    /// Looks a Worker up by its base URL, in any spelling of a listed one (used to
    /// refuse URLs not in the list).
    pub(crate) fn find_by_url(&self, url: &str) -> Option<Arc<WorkerUrl>> {
        let canonical = WorkerUrl::parse(url).ok()?;
        let st = self.state.read();
        let id = st.by_url.get(&canonical.raw)?;
        st.workers.get(id).map(|w| w.url.clone())
    }

    /// `(workers, invalidWorkers)` as JSON records, in list order.
    pub(crate) fn snapshot(&self) -> (Vec<Value>, Vec<Value>) {
        let mut records: Vec<WorkerRecord> = self.state.read().workers.values().cloned().collect();
        records.sort_by_key(|w| w.index);
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for w in &records {
            let in_flight = self.scheduler.usage(w.id).map_or(0, |u| u.in_flight);
            let mut json = w.to_json(in_flight);
            if let (Some(e), Some(fields)) = (self.scheduler.ejection(w.id), json.as_object_mut()) {
                fields.insert("ejected".into(), ejection_json(&e));
            }
            if w.invalid_reason.is_some() {
                invalid.push(json);
            } else {
                valid.push(json);
            }
        }
        (valid, invalid)
    }

    /// Per-Worker figures for the metrics gauges.
    pub(crate) fn gauges(&self) -> Vec<WorkerGauge> {
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
                    ejected: self.scheduler.ejection(w.id).is_some(),
                    in_flight: usage.in_flight,
                    limit: w.slots.map_or(0, |s| s.limit),
                    free: usage
                        .limit
                        .saturating_sub(usage.in_flight.saturating_add(usage.external)),
                    reported_used: w.slots.map(|s| s.used),
                    reported_queue: w.slots.map(|s| s.queue),
                    cpu_load: w.system.get("cpuLoad").and_then(Value::as_f64),
                    memory_used_percent: w.system.get("usedMemoryPercent").and_then(Value::as_f64),
                    functions: w
                        .health
                        .as_ref()
                        .filter(|_| w.invalid_reason.is_none())
                        .map(|h| h.function_names.clone()),
                }
            })
            .collect()
    }

    /// `(registered, available)` Worker counts: available ones are eligible and not
    /// ejected for failing tasks.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.state.read();
        let up = st
            .workers
            .values()
            .filter(|w| w.eligible() && self.scheduler.ejection(w.id).is_none())
            .count();
        (st.workers.len(), up)
    }
}

/// Hands the heap pages freed by a list that shrank a lot back to the system, once
/// the removed Workers' aborted tasks have been dropped: glibc keeps freed memory
/// in its arenas, so RSS would otherwise stay at the long list's size.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        // Twice: a task aborted while busy is dropped when it is next polled.
        for wait in [1, 4] {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            // SAFETY: malloc_trim only returns free pages of glibc's heaps to the
            // system; it touches no memory in use.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

/// The `ejected` field of a Worker record on `/health`.
fn ejection_json(e: &crate::scheduler::Ejection) -> Value {
    serde_json::json!({
        "until": humantime::format_rfc3339_millis(e.until_wall).to_string(),
        "backoffMs": u64::try_from(e.backoff.as_millis()).unwrap_or(u64::MAX),
        "reason": e.reason,
        "consecutiveFailures": e.consecutive_failures,
    })
}

#[cfg(test)]
mod warm_up_tests {
    use super::*;

    /// After an upgrade the listeners (and the Worker list) come long after the
    /// process started: the warm-up counts from the list, not from start.
    #[tokio::test(start_paused = true)]
    async fn the_warm_up_counts_from_when_polling_began() {
        let env = |k: &str| (k == "LB_AUTH_KEY").then(|| "k".to_string());
        let settings = Arc::new(crate::config::load(None, &env).unwrap());
        let scheduler = crate::scheduler::Scheduler::new(16);
        let registry = Registry::new(settings.clone(), scheduler);
        let window = settings.discovery.timeout + Duration::from_secs(1);
        tokio::time::advance(Duration::from_secs(6)).await;
        registry.set_list(&[]);
        let began = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(registry.warm_up_end(), began + window);
    }
}

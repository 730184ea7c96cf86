//! The shared state of one running simulated Worker.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::http::HeaderValue;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::faults::FaultCell;
use super::functions::{catalog, catalog_json, FunctionDef};
use super::slots::Slots;
use super::stats::{Counters, SimStatsSnapshot};
use super::SimConfig;

/// Lines kept for `GET /logs`.
const MAX_LOG_LINES: usize = 200;

/// Everything the HTTP and WebSocket handlers share.
pub(crate) struct SimState {
    pub cfg: SimConfig,
    pub functions: Vec<FunctionDef>,
    pub slots: Arc<Slots>,
    pub websocket_port: u16,
    pub ws_connections: AtomicUsize,
    pub webhook_client: reqwest::Client,
    /// How `POST /task` misbehaves.
    pub faults: Arc<FaultCell>,
    status: RwLock<String>,
    started: Instant,
    counters: Mutex<Counters>,
    logs: Mutex<VecDeque<String>>,
    shutdown: watch::Sender<bool>,
}

impl SimState {
    /// Builds the state for `cfg`; `websocket_port` is what `/health` reports.
    pub(crate) fn new(cfg: SimConfig, websocket_port: u16) -> Arc<Self> {
        let webhook_client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| {
                log::warn!("sim: webhook client with defaults ({e})");
                reqwest::Client::new()
            });
        let (shutdown, _) = watch::channel(false);
        Arc::new(SimState {
            functions: catalog(cfg.function_set, &cfg.custom_functions),
            slots: Slots::new(cfg.slots),
            status: RwLock::new(cfg.status.clone()),
            websocket_port,
            ws_connections: AtomicUsize::new(0),
            webhook_client,
            faults: FaultCell::new(cfg.task_fault),
            started: Instant::now(),
            counters: Mutex::new(Counters::default()),
            logs: Mutex::new(VecDeque::with_capacity(MAX_LOG_LINES)),
            shutdown,
            cfg,
        })
    }

    /// Appends a line to the `/logs` ring and to the process log.
    pub(crate) fn log(&self, level: log::Level, msg: &str) {
        log::log!(level, "sim[{}]: {msg}", self.cfg.group);
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        let line = format!("[{time}] [{}] {msg}", level.as_str().to_ascii_uppercase());
        let mut logs = self.logs.lock();
        if logs.len() >= MAX_LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(line);
    }

    /// The kept log lines, oldest first.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.logs.lock().iter().cloned().collect()
    }

    /// The current status (`ready`, `maintenance`, ...).
    pub(crate) fn status(&self) -> String {
        self.status.read().clone()
    }

    /// Switches the status and pushes it to WebSocket listeners.
    pub(crate) fn set_status(&self, status: &str) {
        *self.status.write() = status.to_string();
        self.log(log::Level::Info, &format!("status set to {status}"));
        self.slots.notify();
    }

    /// Whether `value` (bare or `Bearer <key>`) is `key`, in constant time.
    pub(crate) fn key_matches(value: Option<&HeaderValue>, key: &str) -> bool {
        let Some(value) = value else { return false };
        let raw = value.as_bytes();
        let given = match raw.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => &raw[7..],
            _ => raw,
        };
        let given = given.trim_ascii();
        !given.is_empty() && !key.is_empty() && bool::from(given.ct_eq(key.as_bytes()))
    }

    /// Access to the counters.
    pub(crate) fn counters(&self) -> parking_lot::MutexGuard<'_, Counters> {
        self.counters.lock()
    }

    /// `{used, available, limit, queue}`.
    pub(crate) fn slots_json(&self) -> Value {
        let c = self.slots.counts();
        json!({
            "used": c.running,
            "available": c.limit.saturating_sub(c.running),
            "limit": c.limit,
            "queue": c.queued,
        })
    }

    /// `{uptime, usedMemoryPercent, cpuLoad}`.
    pub(crate) fn system_json(&self) -> Value {
        json!({
            "uptime": self.started.elapsed().as_secs_f64(),
            "usedMemoryPercent": self.cfg.used_memory_percent,
            "cpuLoad": self.cfg.cpu_load,
        })
    }

    /// `[{name, state}]`.
    pub(crate) fn services_json(&self) -> Value {
        Value::Array(
            self.cfg
                .services
                .iter()
                .map(|(name, state)| json!({"name": name, "state": state}))
                .collect(),
        )
    }

    /// The full discovery answer of `GET /health`.
    pub(crate) fn health_json(&self) -> Value {
        json!({
            "status": self.status(),
            "group": self.cfg.group,
            "contract": self.cfg.contract,
            "websocketPort": self.websocket_port,
            "functions": catalog_json(&self.functions),
            "services": self.services_json(),
            "tags": self.cfg.tags,
            "slots": self.slots_json(),
            "system": self.system_json(),
        })
    }

    /// The unprompted WebSocket push.
    pub(crate) fn ws_push_json(&self) -> Value {
        json!({
            "status": self.status(),
            "slots": self.slots_json(),
            "system": self.system_json(),
            "services": self.services_json(),
        })
    }

    /// The answer to a WebSocket `ping`.
    pub(crate) fn ws_pong_json(&self) -> Value {
        json!({"status": self.status(), "slots": self.slots_json()})
    }

    /// A snapshot of the statistics.
    pub(crate) fn stats(&self) -> SimStatsSnapshot {
        let slots = self.slots.counts();
        let c = self.counters.lock();
        SimStatsSnapshot {
            requests: c.requests,
            received: c.received,
            completed: c.completed,
            running: slots.running as u64,
            max_running: slots.max_running as u64,
            queued: slots.queued as u64,
            in_flight: (slots.running + slots.queued) as u64,
            max_in_flight: slots.max_in_flight as u64,
            ws_connections: self.ws_connections.load(Ordering::Relaxed) as u64,
            order: c.order.iter().cloned().collect(),
            last_headers: c.last_headers.clone(),
            last_body_len: c.last_body_len,
            last_body_fnv64: c.last_body_fnv64.clone(),
            last_body: c.last_body.clone(),
        }
    }

    /// Resolves once the Worker is shut down.
    pub(crate) fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }

    /// Marks the Worker as shut down: every guarded task stops.
    pub(crate) fn trigger_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Spawns `fut`, dropped as soon as the Worker shuts down.
    pub(crate) fn spawn_guarded<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.shutdown_signal();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop => {}
                _ = fut => {}
            }
        });
    }
}

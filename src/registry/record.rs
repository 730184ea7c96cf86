//! What the load balancer knows about one Worker, and how a `/health` answer or a
//! WebSocket message updates it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::scheduler::{FunctionSet, WorkerId, WorkerSlots};
use crate::task::schema::Schema;
use crate::worker_url::WorkerUrl;

/// Slot figures as a Worker reports them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Slots {
    /// Running tasks.
    pub used: u32,
    /// `limit − used`.
    pub available: u32,
    /// Most tasks run at once.
    pub limit: u32,
    /// Tasks queued inside the Worker.
    pub queue: u32,
}

/// `slots` as a Worker sends it (in `/health` and on its feed).
#[derive(Deserialize)]
struct WireSlots {
    #[serde(default)]
    used: u64,
    available: Option<u64>,
    limit: u64,
    #[serde(default)]
    queue: u64,
}

impl Slots {
    /// Reads a Worker's `slots` object; `None` without a numeric `limit`. Figures
    /// beyond `u32` are capped; `available` defaults to `limit − used`.
    fn parse(v: &Value) -> Option<Slots> {
        let wire = WireSlots::deserialize(v).ok()?;
        let cap = |x: u64| x.min(u64::from(u32::MAX)) as u32;
        let (used, limit) = (cap(wire.used), cap(wire.limit));
        Some(Slots {
            used,
            available: wire.available.map_or(limit.saturating_sub(used), cap),
            limit,
            queue: cap(wire.queue),
        })
    }
}

/// The fields of a Worker's authenticated `/health` answer that the load balancer
/// reads (protocol §2); the whole answer is kept in [`HealthReport::raw`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireHealth {
    status: String,
    group: Option<String>,
    contract: Option<u64>,
    websocket_port: Option<u16>,
    #[serde(default)]
    functions: Vec<WireFunction>,
    slots: Option<Value>,
}

/// One entry of `functions`: its name, and the rest (params) for the fingerprint.
#[derive(Deserialize, Serialize)]
struct WireFunction {
    name: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The typed part of a Worker's authenticated `/health` answer.
#[derive(Debug, Clone)]
pub(crate) struct HealthReport {
    /// `ready` or `maintenance`.
    pub status: String,
    /// Worker group.
    pub group: Arc<str>,
    /// Contract version.
    pub contract: u64,
    /// Port of the slot feed.
    pub websocket_port: Option<u16>,
    /// Function names.
    pub function_names: Arc<FunctionSet>,
    /// Hash of the whole function list (names and params), for conflict checks.
    pub fingerprint: u64,
    /// The well-formed `params` schemas, compiled, by function name (for the edge
    /// input check, registry/schemas.rs).
    pub schemas: Arc<super::schemas::FunctionSchemas>,
    /// Slot figures.
    pub slots: Option<Slots>,
    /// The answer as received, for `/health` and the dashboard.
    pub raw: Map<String, Value>,
}

impl HealthReport {
    /// Parses an authenticated `/health` body; explains what is missing otherwise.
    pub(crate) fn parse(body: &[u8]) -> Result<HealthReport, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("/health is not JSON: {e}"))?;
        let Value::Object(raw) = value else {
            return Err("/health is not a JSON object".into());
        };
        let wire = WireHealth::deserialize(&Value::Object(raw.clone()))
            .map_err(|e| format!("/health: {e}"))?;
        let group = wire.group.ok_or(
            "/health has no group: the Worker did not accept the LB key (check LB_AUTH_KEY on both sides)",
        )?;
        let contract = wire.contract.ok_or("/health has no integer contract")?;
        let mut functions = wire.functions;
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        let names: FunctionSet = functions.iter().map(|f| f.name.clone()).collect();
        let mut schemas = super::schemas::FunctionSchemas::new();
        for (i, f) in functions.iter().enumerate() {
            // A name listed twice (sorted, so side by side) has no one schema.
            let twice = i > 0 && functions[i - 1].name == f.name
                || functions.get(i + 1).is_some_and(|n| n.name == f.name);
            if let Some(schema) = Schema::compile(f.rest.get("params")).filter(|_| !twice) {
                schemas.insert(f.name.clone(), Arc::new(schema));
            }
        }
        let mut h = DefaultHasher::new();
        // serde_json maps are ordered by key, so equal lists serialise equally.
        serde_json::to_string(&functions)
            .unwrap_or_default()
            .hash(&mut h);
        Ok(HealthReport {
            status: wire.status,
            group: Arc::from(group),
            contract,
            websocket_port: wire.websocket_port,
            function_names: Arc::new(names),
            fingerprint: h.finish(),
            schemas: Arc::new(schemas),
            slots: wire.slots.as_ref().and_then(Slots::parse),
            raw,
        })
    }
}

/// State of a Worker's WebSocket slot feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FeedState {
    /// Not connected (never, or reconnecting).
    Disconnected,
    /// Connected and answering.
    Connected,
}

/// Everything known about one Worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerRecord {
    /// Registration id.
    pub id: WorkerId,
    /// Base URL.
    pub url: Arc<WorkerUrl>,
    /// Position in the Worker list (the first of a pool is its reference).
    pub index: usize,
    /// Last good `/health` answer.
    pub health: Option<HealthReport>,
    /// Did the last poll succeed.
    pub http_up: bool,
    /// Has any poll finished (either way) since the Worker joined the list.
    pub polled: bool,
    /// Why the last poll failed.
    pub poll_error: Option<String>,
    /// When the Worker last answered (poll or feed).
    pub last_seen: Option<SystemTime>,
    /// The same moment on the monotonic clock, for liveness checks.
    pub heard_at: Option<tokio::time::Instant>,
    /// Slot feed state.
    pub feed: FeedState,
    /// Why the feed is down.
    pub feed_error: Option<String>,
    /// Set when the feed went silent or closed; cleared by the next answer.
    pub offline: bool,
    /// A poll attempt failed and no poll has succeeded since (shown `offline`; the
    /// Worker stays eligible while its retries run).
    pub poll_failing: bool,
    /// Latest status from either source.
    pub status: Option<String>,
    /// Latest slot figures from either source.
    pub slots: Option<Slots>,
    /// Latest `system` object from either source.
    pub system: Value,
    /// Latest `services` array from either source.
    pub services: Value,
    /// Excluded because its functions conflict with its pool's reference.
    pub invalid_reason: Option<String>,
}

impl WorkerRecord {
    /// A Worker just added to the list, not polled yet.
    pub(crate) fn new(id: WorkerId, url: Arc<WorkerUrl>, index: usize) -> Self {
        WorkerRecord {
            id,
            url,
            index,
            health: None,
            http_up: false,
            polled: false,
            poll_error: None,
            last_seen: None,
            heard_at: None,
            feed: FeedState::Disconnected,
            feed_error: None,
            offline: false,
            poll_failing: false,
            status: None,
            slots: None,
            system: Value::Null,
            services: Value::Array(vec![]),
            invalid_reason: None,
        }
    }

    /// Applies a good `/health` answer.
    pub(crate) fn apply_health(&mut self, report: HealthReport) {
        self.http_up = true;
        self.polled = true;
        self.poll_error = None;
        self.offline = false;
        self.poll_failing = false;
        self.last_seen = Some(SystemTime::now());
        self.heard_at = Some(tokio::time::Instant::now());
        self.status = Some(report.status.clone());
        self.slots = report.slots;
        self.system = report.raw.get("system").cloned().unwrap_or(Value::Null);
        self.services = report.raw.get("services").cloned().unwrap_or(json!([]));
        self.health = Some(report);
    }

    /// Applies a slot feed message.
    pub(crate) fn apply_feed(&mut self, msg: &Value) {
        self.offline = false;
        self.last_seen = Some(SystemTime::now());
        self.heard_at = Some(tokio::time::Instant::now());
        if let Some(s) = msg.get("status").and_then(Value::as_str) {
            self.status = Some(s.to_string());
        }
        if let Some(slots) = msg.get("slots").and_then(Slots::parse) {
            self.slots = Some(slots);
        }
        if let Some(system) = msg.get("system") {
            self.system = system.clone();
        }
        if let Some(services) = msg.get("services") {
            self.services = services.clone();
        }
    }

    fn services_up(&self) -> bool {
        self.services.as_array().is_none_or(|list| {
            list.iter().all(|s| {
                s.get("state")
                    .and_then(Value::as_str)
                    .is_none_or(|st| st == "up")
            })
        })
    }

    /// May tasks be sent here: ready, valid, reachable, every service up.
    pub(crate) fn eligible(&self) -> bool {
        self.health.is_some()
            && self.invalid_reason.is_none()
            && self.status.as_deref() == Some("ready")
            && (self.http_up || self.feed == FeedState::Connected)
            && !self.offline
            && self.services_up()
    }

    /// The scheduler's view of this Worker, if it has ever answered `/health`.
    pub(crate) fn slots_view(&self, with_report: bool) -> Option<WorkerSlots> {
        let h = self.health.as_ref()?;
        let num = |k: &str| self.system.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let penalty = 5.0 * num("cpuLoad") + 5.0 * num("usedMemoryPercent");
        Some(WorkerSlots {
            url: self.url.clone(),
            group: h.group.clone(),
            contract: h.contract,
            functions: h.function_names.clone(),
            eligible: self.eligible(),
            valid: self.invalid_reason.is_none(),
            heard_at: self.heard_at,
            busy: self.slots.is_some_and(|s| s.used > 0 || s.queue > 0),
            limit: self.slots.map_or(0, |s| s.limit),
            reported_used: if with_report {
                self.slots.map(|s| s.used)
            } else {
                None
            },
            penalty_milli: (penalty * 1000.0) as i64,
        })
    }

    /// The status shown by `/health`, as the original named it: `unreachable` once a
    /// poll has failed through all its retries with no slot feed either, `offline`
    /// while the feed is lost or a poll (or its first attempt) failed, else what the
    /// Worker last reported.
    pub(crate) fn shown_status(&self) -> &str {
        let poll_failed = self.polled && !self.http_up;
        if poll_failed && self.feed != FeedState::Connected {
            "unreachable"
        } else if self.offline || poll_failed || self.poll_failing {
            "offline"
        } else {
            self.status.as_deref().unwrap_or("unknown")
        }
    }

    /// The record shown by authenticated `/health` and the dashboard.
    pub(crate) fn to_json(&self, lb_in_flight: u32) -> Value {
        let mut out = self
            .health
            .as_ref()
            .map(|h| h.raw.clone())
            .unwrap_or_default();
        out.insert("url".into(), json!(self.url.listed));
        let ws = self
            .health
            .as_ref()
            .and_then(|h| h.websocket_port)
            .map(|p| self.url.websocket(p));
        out.insert("wsUrl".into(), json!(ws));
        out.insert("status".into(), json!(self.shown_status()));
        // The original's names for the contract check (§3 of the protocol).
        out.insert("contractValid".into(), json!(self.invalid_reason.is_none()));
        out.insert(
            "contractMismatchReason".into(),
            json!(self.invalid_reason.as_deref()),
        );
        if let Some(s) = self.slots {
            out.insert("slots".into(), json!(s));
        }
        out.insert("system".into(), self.system.clone());
        out.insert("services".into(), self.services.clone());
        out.insert("online".into(), json!(self.eligible()));
        out.insert("httpUp".into(), json!(self.http_up));
        out.insert("websocket".into(), json!(self.feed));
        out.insert("lbInFlight".into(), json!(lb_in_flight));
        out.insert(
            "lastSeen".into(),
            json!(self
                .last_seen
                .map(|t| humantime::format_rfc3339_millis(t).to_string())),
        );
        if let Some(e) = self.poll_error.as_ref().or(self.feed_error.as_ref()) {
            out.insert("error".into(), json!(e));
        }
        if let Some(r) = &self.invalid_reason {
            out.insert("invalidReason".into(), json!(r));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dying_worker_goes_offline_then_unreachable() {
        let url = Arc::new(WorkerUrl::parse("http://10.0.0.5:3000/").unwrap());
        let mut w = WorkerRecord::new(1, url, 0);
        let health = br#"{"status":"ready","group":"g","contract":1,"functions":[]}"#;
        w.apply_health(HealthReport::parse(health).unwrap());
        w.feed = FeedState::Connected;
        assert_eq!(w.shown_status(), "ready");
        assert_eq!(w.to_json(0)["url"], "http://10.0.0.5:3000/");
        assert_eq!(w.to_json(0)["contractValid"], true);
        // The slot feed closes: offline.
        w.feed = FeedState::Disconnected;
        w.offline = true;
        assert_eq!(w.shown_status(), "offline");
        // A poll's first attempt fails: still offline while the retries run.
        w.poll_failing = true;
        assert_eq!(w.shown_status(), "offline");
        // Every retry failed, no feed: unreachable.
        w.http_up = false;
        assert_eq!(w.shown_status(), "unreachable");
        // It answers again.
        w.apply_health(HealthReport::parse(health).unwrap());
        assert_eq!(w.shown_status(), "ready");
        w.invalid_reason = Some("functions differ".into());
        let j = w.to_json(0);
        assert_eq!(
            (
                j["contractValid"].clone(),
                j["contractMismatchReason"].clone()
            ),
            (json!(false), json!("functions differ"))
        );
    }
}

//! Counters kept by a simulated Worker and their JSON snapshot
//! (`GET /sim/stats`).

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// Most `order` labels kept (the oldest are dropped beyond this).
const MAX_ORDER: usize = 100_000;

/// A snapshot of what a simulated Worker has seen, as served at
/// `GET /sim/stats` (camelCase JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SimStatsSnapshot {
    /// Every `POST /task` request that reached the Worker, valid or not.
    pub requests: u64,
    /// Tasks accepted past authentication and the checks made before a slot (their
    /// input is checked once they hold one, protocol §5).
    pub received: u64,
    /// Tasks whose function finished (successfully or not).
    pub completed: u64,
    /// Tasks holding a slot now.
    pub running: u64,
    /// Highest number of tasks ever running at once.
    pub max_running: u64,
    /// Tasks waiting for a slot inside the Worker now.
    pub queued: u64,
    /// Tasks running or waiting inside the Worker now.
    pub in_flight: u64,
    /// Highest `in_flight` ever observed.
    pub max_in_flight: u64,
    /// Open WebSocket connections that passed authentication.
    pub ws_connections: u64,
    /// The `input.label` of each accepted task, in the order the requests
    /// arrived (only tasks whose input has a string `label`).
    pub order: Vec<String>,
    /// Headers of the last `POST /task` (lowercased name → value).
    pub last_headers: BTreeMap<String, String>,
    /// Length in bytes of the last `POST /task` body.
    pub last_body_len: u64,
    /// FNV-1a 64 of the last `POST /task` body, as 16 lowercase hex digits.
    pub last_body_fnv64: String,
    /// The last `POST /task` body as text (lossy UTF-8), when it was at most
    /// [`LAST_BODY_MAX`] bytes; empty otherwise.
    pub last_body: String,
}

/// Largest body kept whole in [`SimStatsSnapshot::last_body`].
pub const LAST_BODY_MAX: usize = 64 * 1024;

/// FNV-1a 64-bit hash of `data`, as 16 lowercase hex digits.
pub fn fnv1a64_hex(data: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Header map as lowercased name → value (repeated names joined by ", ").
pub(crate) fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// Mutable counters (the slot counters live in the scheduler).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: u64,
    pub received: u64,
    pub completed: u64,
    pub order: std::collections::VecDeque<String>,
    pub last_headers: BTreeMap<String, String>,
    pub last_body_len: u64,
    pub last_body_fnv64: String,
    pub last_body: String,
}

impl Counters {
    /// Records a `POST /task` request as it arrives.
    pub(crate) fn record_request(&mut self, headers: BTreeMap<String, String>, body: &[u8]) {
        self.requests += 1;
        self.last_headers = headers;
        self.last_body_len = body.len() as u64;
        self.last_body_fnv64 = fnv1a64_hex(body);
        self.last_body = if body.len() <= LAST_BODY_MAX {
            String::from_utf8_lossy(body).into_owned()
        } else {
            String::new()
        };
    }

    /// Records an accepted task and its label.
    pub(crate) fn record_received(&mut self, label: Option<&str>) {
        self.received += 1;
        if let Some(label) = label {
            if self.order.len() >= MAX_ORDER {
                self.order.pop_front();
            }
            self.order.push_back(label.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a64_hex(b"a"), "af63dc4c8601ec8c");
    }
}

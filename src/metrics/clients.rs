//! Named clients' series: reloads of the clients file, each client's tasks and
//! refusals, and what it holds and waits for now (`client` is a configured name only).

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec};

/// The named clients' metric families.
pub(crate) struct ClientFamilies {
    /// Reloads of the clients file, by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// Tasks by named client and outcome (`client`: configured names only).
    pub tasks: IntCounterVec,
    /// Tasks refused by a client's own limits, by client and reason.
    pub refused: IntCounterVec,
    /// Tasks of each named client holding a Worker slot now.
    pub running: IntGaugeVec,
    /// Tasks of each named client waiting for a slot now.
    pub queued: IntGaugeVec,
}

impl ClientFamilies {
    /// Registers the families in `r`, with both reload results at 0.
    pub(super) fn new(r: &Registry) -> ClientFamilies {
        let families = ClientFamilies {
            reloads: counter_vec(
                r,
                "clients_reloads_total",
                "Reloads of the named clients file, by result (ok, error: the last good list stays).",
                &["result"],
            ),
            tasks: counter_vec(
                r,
                "client_tasks_total",
                "Tasks by named client (configured names only) and outcome.",
                &["client", "outcome"],
            ),
            refused: counter_vec(
                r,
                "client_refused_total",
                "Tasks refused by their client's own limits (429), by client and reason.",
                &["client", "reason"],
            ),
            running: gauge_vec(
                r,
                "client_tasks_running",
                "Tasks of each named client holding a Worker slot now.",
                &["client"],
            ),
            queued: gauge_vec(
                r,
                "client_tasks_queued",
                "Tasks of each named client waiting for a Worker slot now.",
                &["client"],
            ),
        };
        for result in ["ok", "error"] {
            families.reloads.with_label_values(&[result]);
        }
        families
    }
}

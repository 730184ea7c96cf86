//! Per-Worker series: what each Worker reports of its own load next to what this
//! load balancer counts, refreshed from the registry on every scrape.

use std::collections::HashSet;
use std::sync::Arc;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{bounded_label, counter_vec, gauge_vec, Metrics, TASK_OUTCOMES};
use crate::scheduler::FunctionSet;

/// One Worker's figures for the per-Worker series, as the registry sees them now.
#[derive(Debug, Clone)]
pub(crate) struct WorkerGauge {
    /// Base URL.
    pub url: String,
    /// Group, or `unknown` before the first poll.
    pub group: String,
    /// May take tasks.
    pub up: bool,
    /// Out of rotation for failing tasks in a row.
    pub ejected: bool,
    /// Slots this load balancer holds.
    pub in_flight: u32,
    /// Slot limit.
    pub limit: u32,
    /// Slots free by this load balancer's count (limit − held − used by others).
    pub free: u32,
    /// Slots the Worker last reported used (`slots.used`), if it reported slots.
    pub reported_used: Option<u32>,
    /// Tasks the Worker last reported queued inside it (`slots.queue`).
    pub reported_queue: Option<u32>,
    /// The Worker's `system.cpuLoad`, when it reports one.
    pub cpu_load: Option<f64>,
    /// The Worker's `system.usedMemoryPercent`, when it reports one.
    pub memory_used_percent: Option<f64>,
    /// The functions it exposes, when it is valid for its pool (bounded label values).
    pub functions: Option<Arc<FunctionSet>>,
}

/// What each Worker reports of its own load, and its free slots.
pub(crate) struct WorkerFamilies {
    /// 1 when the Worker may take tasks (labelled with its group too).
    pub up: IntGaugeVec,
    /// Slots this load balancer has in flight on the Worker.
    pub slots_used: IntGaugeVec,
    /// The Worker's slot limit.
    pub slots_limit: IntGaugeVec,
    /// 1 while the Worker is ejected for failing tasks in a row.
    pub ejected: IntGaugeVec,
    /// Times the Worker was ejected.
    pub ejections: IntCounterVec,
    /// Failed `/health` polls of the Worker.
    pub discovery_errors: IntCounterVec,
    /// Slot feed failures of the Worker.
    pub websocket_errors: IntCounterVec,
    /// Slots the Worker reports used (by every load balancer), `slots.used`.
    pub reported_slots_used: IntGaugeVec,
    /// Tasks queued inside the Worker, `slots.queue`.
    pub reported_queue: IntGaugeVec,
    /// The Worker's `system.cpuLoad`, as it reports it.
    pub reported_cpu_load: GaugeVec,
    /// The Worker's `system.usedMemoryPercent`, as it reports it.
    pub reported_memory_used_percent: GaugeVec,
    /// Slots free by this load balancer's count.
    pub slots_free: IntGaugeVec,
}

fn float_gauge_vec(r: &Registry, name: &str, help: &str) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help).namespace("andera_lb"), &["worker"])
        .expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl WorkerFamilies {
    /// Registers the families in `r`.
    pub(super) fn new(r: &Registry) -> WorkerFamilies {
        WorkerFamilies {
            up: gauge_vec(
                r,
                "worker_up",
                "1 when the Worker may take tasks.",
                &["worker", "group"],
            ),
            slots_used: gauge_vec(
                r,
                "worker_slots_used",
                "Slots this load balancer holds on the Worker.",
                &["worker"],
            ),
            slots_limit: gauge_vec(
                r,
                "worker_slots_limit",
                "Slot limit the Worker reports.",
                &["worker"],
            ),
            ejected: gauge_vec(
                r,
                "worker_ejected",
                "1 while the Worker is out of rotation for failing tasks in a row.",
                &["worker"],
            ),
            ejections: counter_vec(
                r,
                "worker_ejections_total",
                "Times the Worker was taken out of rotation for failing tasks in a row.",
                &["worker"],
            ),
            discovery_errors: counter_vec(
                r,
                "discovery_errors_total",
                "Failed /health polls.",
                &["worker"],
            ),
            websocket_errors: counter_vec(
                r,
                "websocket_errors_total",
                "Slot feed connection failures and losses.",
                &["worker"],
            ),
            reported_slots_used: gauge_vec(
                r,
                "worker_reported_slots_used",
                "Slots the Worker reports used, by every load balancer (slots.used).",
                &["worker"],
            ),
            reported_queue: gauge_vec(
                r,
                "worker_reported_queue",
                "Tasks queued inside the Worker, as it reports (slots.queue).",
                &["worker"],
            ),
            reported_cpu_load: float_gauge_vec(
                r,
                "worker_reported_cpu_load",
                "The Worker's CPU load, as it reports it (system.cpuLoad).",
            ),
            reported_memory_used_percent: float_gauge_vec(
                r,
                "worker_reported_memory_used_percent",
                "The Worker's used memory, percent, as it reports it (system.usedMemoryPercent).",
            ),
            slots_free: gauge_vec(
                r,
                "worker_slots_free",
                "Slots free on the Worker by this load balancer's count (limit minus held minus used by others).",
                &["worker"],
            ),
        }
    }

    /// The counters of a Worker joining the list, at 0.
    fn init(&self, url: &str) {
        for counter in [
            &self.ejections,
            &self.discovery_errors,
            &self.websocket_errors,
        ] {
            counter.with_label_values(&[url]);
        }
    }

    /// Clears the gauges (the counters stay: they are removed with their Worker).
    fn reset(&self) {
        for gauge in [&self.up, &self.slots_used, &self.slots_limit, &self.ejected] {
            gauge.reset();
        }
        self.reported_slots_used.reset();
        self.reported_queue.reset();
        self.reported_cpu_load.reset();
        self.reported_memory_used_percent.reset();
        self.slots_free.reset();
    }

    /// Removes every series of the Worker `url` (of `group`, as `up` labels it).
    fn forget(&self, url: &str, group: &str) {
        let _ = self.up.remove_label_values(&[url, group]);
        for family in [&self.slots_used, &self.slots_limit, &self.ejected] {
            let _ = family.remove_label_values(&[url]);
        }
        for counter in [
            &self.ejections,
            &self.discovery_errors,
            &self.websocket_errors,
        ] {
            let _ = counter.remove_label_values(&[url]);
        }
        let _ = self.reported_slots_used.remove_label_values(&[url]);
        let _ = self.reported_queue.remove_label_values(&[url]);
        let _ = self.reported_cpu_load.remove_label_values(&[url]);
        let _ = self
            .reported_memory_used_percent
            .remove_label_values(&[url]);
        let _ = self.slots_free.remove_label_values(&[url]);
    }

    fn set(&self, w: &WorkerGauge) {
        let url = [w.url.as_str()];
        self.ejected
            .with_label_values(&url)
            .set(i64::from(w.ejected));
        self.up
            .with_label_values(&[&w.url, &w.group])
            .set(i64::from(w.up));
        self.slots_used
            .with_label_values(&url)
            .set(i64::from(w.in_flight));
        self.slots_limit
            .with_label_values(&url)
            .set(i64::from(w.limit));
        self.slots_free
            .with_label_values(&url)
            .set(i64::from(w.free));
        if let Some(used) = w.reported_used {
            self.reported_slots_used
                .with_label_values(&url)
                .set(i64::from(used));
        }
        if let Some(queue) = w.reported_queue {
            self.reported_queue
                .with_label_values(&url)
                .set(i64::from(queue));
        }
        if let Some(cpu) = w.cpu_load {
            self.reported_cpu_load.with_label_values(&url).set(cpu);
        }
        if let Some(memory) = w.memory_used_percent {
            self.reported_memory_used_percent
                .with_label_values(&url)
                .set(memory);
        }
    }
}

impl Metrics {
    /// Creates the per-Worker counters of `url` at 0, for a Worker joining the list
    /// (so that its first ejection or error shows in `increase()`); the registry
    /// calls it before the Worker's poll and feed start, and [`Metrics::forget_worker`]
    /// when it leaves, in that order.
    pub(crate) fn init_worker(&self, url: &str) {
        self.workers.init(url);
    }

    /// Removes every series of the Worker `url` (of `group`, as its `worker_up` was
    /// labelled), for a Worker that left the list: its counters would otherwise stay
    /// in `/metrics` for the life of the process.
    pub(crate) fn forget_worker(&self, url: &str, group: &str) {
        self.workers.forget(url, group);
    }

    /// Sets every per-Worker gauge from `workers` (Workers no longer listed lose
    /// their gauges), and creates at 0 the task counters of every group and function
    /// a valid Worker exposes.
    pub(crate) fn refresh_workers(&self, workers: &[WorkerGauge]) {
        self.workers.reset();
        let mut known = HashSet::new();
        for w in workers {
            self.workers.set(w);
            let group = bounded_label(&w.group, true);
            if w.functions.is_some() {
                // A valid Worker's group: its edge refusals start at 0.
                self.input_refused.with_label_values(&[group]);
            }
            for function in w.functions.iter().flat_map(|f| f.iter()) {
                let function = bounded_label(function, true);
                if known.insert((group, function)) {
                    for outcome in TASK_OUTCOMES {
                        self.tasks.with_label_values(&[group, function, outcome]);
                    }
                }
            }
        }
    }
}

//! The cluster's metrics (`andera_lb_cluster_*`), registered at start whether or not
//! `cluster.redis` is set, every series at 0 from the start.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

/// The Redis calls the cluster makes, the values of `op`.
pub(crate) const OPS: [&str; 7] = [
    "take", "release", "leave", "pump", "renew", "inbox", "status",
];

/// Every cluster metric.
pub(crate) struct ClusterMetrics {
    /// 1 while this instance counts slots on its own because Redis does not answer.
    pub fallback: IntGauge,
    /// Times this instance fell back to counting on its own.
    pub fallbacks: IntCounter,
    /// Slot leases this instance holds now.
    pub leases: IntGauge,
    /// Tasks waiting in the cluster's queues (every instance's), at the last renewal.
    pub queue_depth: IntGauge,
    /// Redis calls, by `op`.
    pub calls: IntCounterVec,
    /// From a slot's release on one instance to its waiting task's grant on another.
    pub handoff: Histogram,
}

/// The cluster's metrics, in the process registry.
pub(crate) static CLUSTER_METRICS: LazyLock<ClusterMetrics> = LazyLock::new(|| {
    let r = &crate::metrics::METRICS.registry;
    let opts = |name: &str, help: &str| Opts::new(name, help).namespace("andera_lb");
    let gauge = |name: &str, help: &str| {
        let g = IntGauge::with_opts(opts(name, help)).expect("valid metric");
        r.register(Box::new(g.clone())).expect("unique metric");
        g
    };
    let calls = IntCounterVec::new(
        opts(
            "cluster_redis_calls_total",
            "Redis calls of the cluster (cluster.redis), by op.",
        ),
        &["op"],
    )
    .expect("valid metric");
    r.register(Box::new(calls.clone())).expect("unique metric");
    for op in OPS {
        calls.with_label_values(&[op]);
    }
    let fallbacks = IntCounter::with_opts(opts(
        "cluster_fallbacks_total",
        "Times this instance fell back to counting Worker slots on its own (Redis lost or slow).",
    ))
    .expect("valid metric");
    r.register(Box::new(fallbacks.clone()))
        .expect("unique metric");
    let handoff = Histogram::with_opts(
        HistogramOpts::new(
            "cluster_handoff_seconds",
            "From a slot's release on one instance to the grant to a task waiting on another.",
        )
        .namespace("andera_lb")
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5,
        ]),
    )
    .expect("valid metric");
    r.register(Box::new(handoff.clone()))
        .expect("unique metric");
    ClusterMetrics {
        fallback: gauge(
            "cluster_fallback",
            "1 while this instance counts Worker slots on its own because the cluster's Redis does not answer.",
        ),
        fallbacks,
        leases: gauge("cluster_leases", "Worker slot leases this instance holds."),
        queue_depth: gauge(
            "cluster_queue_depth",
            "Tasks waiting in the cluster's queues, every instance's (at the last renewal).",
        ),
        calls,
        handoff,
    }
});

/// Counts one Redis call of `op`.
pub(crate) fn call(op: &str) {
    CLUSTER_METRICS.calls.with_label_values(&[op]).inc();
}

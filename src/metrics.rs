//! Prometheus metrics, all prefixed `andera_lb_`, in base units. Label values are
//! bounded: groups and functions only appear once a Worker of the current list
//! exposes them (unknown ones fold into `other`), Workers are the list's URLs, and
//! priorities are bucketed into classes. `docs/metrics.md` lists every family.

mod clients;
mod labels;
mod workers;

pub(crate) use clients::ClientFamilies;
pub(crate) use labels::{outcome, KNOWN_RESPONSES, NO_WORKER, RETRY_REASONS, TASK_OUTCOMES};
pub(crate) use workers::{WorkerFamilies, WorkerGauge};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::{Arc, LazyLock, OnceLock};

/// One group's figures for autoscaling, read on each scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLoad {
    /// The group (a bounded label value: see the scheduler's `group_load`).
    pub group: Arc<str>,
    /// Tasks waiting for a slot.
    pub queued: usize,
    /// Tasks waiting for a slot, by priority class (indexed as [`PRIORITY_CLASSES`]).
    pub queued_by_class: [usize; PRIORITY_CLASSES.len()],
    /// Tasks this load balancer runs on the group's Workers.
    pub running: u32,
    /// Free slots on the group's usable Workers.
    pub free: u32,
}

impl GroupLoad {
    /// `group` with nothing queued, running or free.
    pub fn idle(group: Arc<str>) -> GroupLoad {
        GroupLoad {
            group,
            queued: 0,
            queued_by_class: [0; PRIORITY_CLASSES.len()],
            running: 0,
            free: 0,
        }
    }
}

/// What the per-group gauges read on each scrape (the scheduler).
pub(crate) type QueueSource = Box<dyn Fn() -> Vec<GroupLoad> + Send + Sync>;

/// Label value used for anything outside the known set.
pub(crate) const OTHER: &str = "other";

/// Longest label value kept verbatim.
const MAX_LABEL_LEN: usize = 64;

/// Every metric of the process.
pub(crate) struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Tasks that ended, by group, function and outcome.
    pub tasks: IntCounterVec,
    /// Time from receipt to the end of the Worker's answer, by group, function and
    /// outcome.
    pub task_duration: HistogramVec,
    /// Time spent waiting for a slot, by group and priority class.
    pub queue_wait: HistogramVec,
    /// Most tasks that may wait for a slot (`tasks.max_queued`), set on each scrape.
    pub queue_limit: IntGauge,
    /// Most body bytes of waiting tasks (`tasks.max_queued_bytes`), set on each scrape.
    pub queued_bytes_limit: IntGauge,
    /// What each Worker reports of its own load, and its free slots.
    pub workers: WorkerFamilies,
    /// Tasks waiting now.
    pub queue_depth: IntGauge,
    /// Tasks waiting now, by group (the autoscaling signal), read from
    /// [`Metrics::set_queue_source`] on each scrape.
    pub queue_depth_by_group: IntGaugeVec,
    /// Tasks waiting now, by group and priority class, read like `queue_depth_by_group`.
    pub queue_depth_by_priority_class: IntGaugeVec,
    /// Tasks running now, by group, read like `queue_depth_by_group`.
    pub group_tasks_running: IntGaugeVec,
    /// Free slots now, by group, read like `queue_depth_by_group`.
    pub group_slots_free: IntGaugeVec,
    queue_source: OnceLock<QueueSource>,
    /// Failed lookups of `dns+` Worker list entries (their last good set stays).
    pub dns_lookup_failures: IntCounter,
    /// `dns+` entries whose last lookup failed.
    pub dns_entries_failing: IntGauge,
    /// Body bytes of the tasks waiting now (bounded by `tasks.max_queued_bytes`).
    pub queued_bytes: IntGauge,
    /// Tasks that waited past `TASK_TIMEOUT`.
    pub queue_timeouts: IntCounter,
    /// Tasks refused because the queue was full.
    pub queue_rejections: IntCounter,
    /// Attempts retried on another Worker, by reason.
    pub retries: IntCounterVec,
    /// HTTP responses by service, route and status.
    pub http_responses: IntCounterVec,
    /// Task records kept by the board.
    pub board_records: IntGauge,
    /// Bytes read and discarded from clients after their connection was closed.
    pub lingering_bytes: IntCounter,
    /// Access log lines dropped because its writer was behind.
    pub access_log_dropped: IntCounter,
    /// Named clients: reloads of their file, their tasks, refusals and load.
    pub clients: ClientFamilies,
    /// Tasks refused at the edge because their input fails the function's published
    /// schema (the Worker's own `500`, without queueing or a slot), by group.
    pub input_refused: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("andera_lb"), labels)
        .expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c =
        IntCounter::with_opts(Opts::new(name, help).namespace("andera_lb")).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g =
        IntGauge::with_opts(Opts::new(name, help).namespace("andera_lb")).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help).namespace("andera_lb"), labels)
        .expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help)
            .namespace("andera_lb")
            .buckets(buckets),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 120.0, 300.0,
        ];
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "andera_lb",
            );
            let _ = r.register(Box::new(pc));
        }
        // Registered and set once: nothing changes it afterwards.
        gauge_vec(
            &r,
            "build_info",
            "1, labelled with the running andera-lb version.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let m = Metrics {
            tasks: counter_vec(
                &r,
                "tasks_total",
                "Tasks that ended, by group, function and outcome.",
                &["group", "function", "outcome"],
            ),
            task_duration: histogram_vec(
                &r,
                "task_duration_seconds",
                "Time from receipt to the end of the Worker's answer.",
                &["group", "function", "outcome"],
                latency.clone(),
            ),
            queue_wait: histogram_vec(
                &r,
                "queue_wait_seconds",
                "Time tasks waited for a Worker slot, by group and priority class.",
                &["group", "priority_class"],
                latency,
            ),
            queue_limit: gauge(
                &r,
                "queue_limit",
                "Most tasks that may wait for a Worker slot (tasks.max_queued, MAX_QUEUED_TASKS); beyond it tasks get 503.",
            ),
            queued_bytes_limit: gauge(
                &r,
                "queued_bytes_limit",
                "Most body bytes of tasks waiting for a Worker slot (tasks.max_queued_bytes).",
            ),
            workers: WorkerFamilies::new(&r),
            queue_depth: gauge(&r, "queue_depth", "Tasks waiting for a Worker slot."),
            queue_depth_by_group: gauge_vec(
                &r,
                "queue_depth_by_group",
                "Tasks waiting for a Worker slot now, by group (waiting-room tasks of a group no Worker has had count as other).",
                &["group"],
            ),
            queue_depth_by_priority_class: gauge_vec(
                &r,
                "queue_depth_by_priority_class",
                "Tasks waiting for a Worker slot now, by group and priority class.",
                &["group", "priority_class"],
            ),
            group_tasks_running: gauge_vec(
                &r,
                "group_tasks_running",
                "Tasks this load balancer runs on Workers now, by group.",
                &["group"],
            ),
            group_slots_free: gauge_vec(
                &r,
                "group_slots_free",
                "Free Worker slots now (usable Workers, this load balancer's count), by group.",
                &["group"],
            ),
            queue_source: OnceLock::new(),
            dns_lookup_failures: counter(
                &r,
                "dns_lookup_failures_total",
                "Failed DNS lookups of dns+ Worker list entries (the last good set of Workers stays).",
            ),
            dns_entries_failing: gauge(
                &r,
                "dns_entries_failing",
                "dns+ Worker list entries whose last DNS lookup failed (their last good set of Workers stays).",
            ),
            queued_bytes: gauge(
                &r,
                "queued_bytes",
                "Body bytes of the tasks waiting for a Worker slot.",
            ),
            queue_timeouts: counter(
                &r,
                "queue_timeouts_total",
                "Tasks that waited for a slot past TASK_TIMEOUT.",
            ),
            queue_rejections: counter(
                &r,
                "queue_rejections_total",
                "Tasks refused with 503 because the queue was full.",
            ),
            retries: counter_vec(
                &r,
                "task_retries_total",
                "Attempts retried on another Worker, by reason.",
                &["reason"],
            ),
            http_responses: counter_vec(
                &r,
                "http_responses_total",
                "HTTP responses by service, route and status.",
                &["service", "route", "status"],
            ),
            board_records: gauge(&r, "task_records", "Task records kept for the task board."),
            lingering_bytes: counter(
                &r,
                "lingering_bytes_total",
                "Bytes a client sent after its connection was closed, read and discarded.",
            ),
            access_log_dropped: counter(
                &r,
                "access_log_dropped_total",
                "Access log lines dropped because the writer was behind.",
            ),
            clients: ClientFamilies::new(&r),
            input_refused: counter_vec(
                &r,
                "input_refused_total",
                "Tasks refused at the edge because their input fails the function's published params schema (the Worker's 500, given at once: a slot saved), by group.",
                &["group"],
            ),
            registry: r,
        };
        m.init_known_series();
        m
    }

    /// Creates at 0 the refusal series of a configured client (its name is bounded:
    /// it comes from the configuration, never from a request).
    pub(crate) fn client_configured(&self, name: &str) {
        for reason in ["client_rate", "client_running", "client_queued"] {
            self.clients.refused.with_label_values(&[name, reason]);
        }
    }

    /// Creates at 0 the labelled counters whose label values are known up front.
    fn init_known_series(&self) {
        self.tasks.with_label_values(&[OTHER, OTHER, NO_WORKER]);
        for reason in RETRY_REASONS {
            self.retries.with_label_values(&[reason]);
        }
        for (service, route, statuses) in KNOWN_RESPONSES {
            for status in *statuses {
                let status = status.to_string();
                self.http_responses
                    .with_label_values(&[*service, *route, status.as_str()]);
            }
        }
    }

    /// Sets where `andera_lb_queue_depth_by_group` is read from (the scheduler); the
    /// first call wins. Until then the family has no series.
    pub(crate) fn set_queue_source(&self, source: QueueSource) {
        let _ = self.queue_source.set(source);
    }

    /// Renders the text exposition format.
    pub(crate) fn render(&self) -> Vec<u8> {
        if let Some(source) = self.queue_source.get() {
            // The group set only grows (groups Workers have had, and `other`), so
            // setting every value leaves no stale series.
            for load in source() {
                let group = [&*load.group];
                let queued = i64::try_from(load.queued).unwrap_or(i64::MAX);
                self.queue_depth_by_group
                    .with_label_values(&group)
                    .set(queued);
                for (class, n) in PRIORITY_CLASSES.iter().zip(load.queued_by_class) {
                    self.queue_depth_by_priority_class
                        .with_label_values(&[&*load.group, class])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                self.group_tasks_running
                    .with_label_values(&group)
                    .set(i64::from(load.running));
                self.group_slots_free
                    .with_label_values(&group)
                    .set(i64::from(load.free));
            }
        }
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The process-wide metrics.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The `priority_class` label values, most urgent first.
pub(crate) const PRIORITY_CLASSES: [&str; 7] = [
    "1",
    "2-10",
    "11-100",
    "101-1000",
    "1001-10000",
    "10001-100000",
    "100001-2097152",
];

/// The index in [`PRIORITY_CLASSES`] of `priority`'s class.
pub(crate) fn priority_class_index(priority: u32) -> usize {
    match priority {
        0..=1 => 0,
        2..=10 => 1,
        11..=100 => 2,
        101..=1_000 => 3,
        1_001..=10_000 => 4,
        10_001..=100_000 => 5,
        _ => 6,
    }
}

/// Bounded priority classes for the 1..2097152 range.
pub(crate) fn priority_class(priority: u32) -> &'static str {
    PRIORITY_CLASSES[priority_class_index(priority)]
}

/// Groups a valid Worker has had since start (the scheduler adds them): the only
/// `group` label values, so that a client naming groups cannot grow the label set.
static KNOWN_GROUPS: std::sync::LazyLock<parking_lot::RwLock<foldhash::HashSet<Box<str>>>> =
    std::sync::LazyLock::new(Default::default);

/// Notes that a valid Worker of `group` appeared.
pub(crate) fn group_became_known(group: &str) {
    KNOWN_GROUPS.write().insert(group.into());
}

/// True once a valid Worker of `group` has been seen.
pub(crate) fn known_group(group: &str) -> bool {
    KNOWN_GROUPS.read().contains(group)
}

/// A label value for a client-supplied name: kept only when `known`, else [`OTHER`].
pub(crate) fn bounded_label(value: &str, known: bool) -> &str {
    if known && value.len() <= MAX_LABEL_LEN {
        value
    } else {
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_classes_cover_the_range_with_few_values() {
        let mut classes: Vec<&str> = [
            1, 2, 10, 11, 100, 101, 1000, 1001, 10_000, 10_001, 100_000, 100_001, 2_097_152,
        ]
        .iter()
        .map(|p| priority_class(*p))
        .collect();
        classes.dedup();
        assert_eq!(classes.len(), 7);
    }

    #[test]
    fn a_forgotten_worker_leaves_no_series() {
        let m = Metrics::new();
        for url in ["http://a:1", "http://b:1"] {
            let w = &m.workers;
            w.up.with_label_values(&[url, "g"]).set(1);
            w.slots_used.with_label_values(&[url]).set(1);
            w.slots_limit.with_label_values(&[url]).set(4);
            w.ejected.with_label_values(&[url]).set(0);
            w.ejections.with_label_values(&[url]).inc();
            w.discovery_errors.with_label_values(&[url]).inc();
            w.websocket_errors.with_label_values(&[url]).inc();
        }
        m.forget_worker("http://a:1", "g");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("http://a:1"), "{text}");
        assert_eq!(text.matches("worker=\"http://b:1\"").count(), 7, "{text}");
    }

    fn gauge(url: &str, functions: &[&str]) -> WorkerGauge {
        WorkerGauge {
            url: url.into(),
            group: "g".into(),
            up: true,
            ejected: false,
            in_flight: 1,
            limit: 4,
            free: 2,
            reported_used: Some(2),
            reported_queue: Some(3),
            cpu_load: Some(0.5),
            memory_used_percent: Some(40.0),
            functions: Some(std::sync::Arc::new(
                functions.iter().map(|f| f.to_string()).collect(),
            )),
        }
    }

    #[test]
    fn a_scrape_creates_every_known_series_at_zero() {
        let m = Metrics::new();
        m.init_worker("http://b:1");
        m.refresh_workers(&[
            gauge("http://a:1", &["f", "h"]),
            gauge("http://b:1", &["f"]),
        ]);
        let text = String::from_utf8(m.render()).unwrap();
        let tasks = |l: &&str| l.starts_with("andera_lb_tasks_total{") && l.ends_with(" 0");
        // (g, f) and (g, h) with every outcome, and other/other/no_worker.
        let zero = text.lines().filter(tasks).count();
        assert_eq!(zero, 2 * TASK_OUTCOMES.len() + 1, "{text}");
        for (family, value) in [
            ("worker_ejections_total", "0"),
            ("worker_reported_slots_used", "2"),
            ("worker_reported_queue", "3"),
            ("worker_reported_cpu_load", "0.5"),
            ("worker_reported_memory_used_percent", "40"),
            ("worker_slots_free", "2"),
        ] {
            let series = format!("andera_lb_{family}{{worker=\"http://b:1\"}} {value}");
            assert!(text.contains(&series), "{series} in {text}");
        }
        for reason in RETRY_REASONS {
            assert!(text.contains(&format!("reason=\"{reason}\"}} 0")), "{text}");
        }
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("andera_lb_build_info{{version=\"{version}\"}} 1")));
        m.forget_worker("http://a:1", "g");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("http://a:1"), "{text}");
    }

    #[test]
    fn unknown_names_fold_into_one_label() {
        let m = Metrics::new();
        for i in 0..1000 {
            let name = format!("random-group-{i}");
            m.tasks
                .with_label_values(&[
                    bounded_label(&name, false),
                    bounded_label("f", false),
                    "no_worker",
                ])
                .inc();
        }
        m.tasks
            .with_label_values(&[bounded_label("default", true), "hello", "ok"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("andera_lb_tasks_total{"))
            .count();
        assert_eq!(series, 2, "{text}");
        assert!(text.contains(
            r#"andera_lb_tasks_total{function="other",group="other",outcome="no_worker"} 1000"#
        ));
        assert!(bounded_label(&"x".repeat(100), true) == OTHER);
    }
}

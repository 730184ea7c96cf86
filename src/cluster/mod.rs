//! Several instances as one (`cluster.redis`): Worker slots are leases in Redis, at
//! most a Worker's own slot count across all instances, and one priority queue per
//! pool orders the waiting tasks of every instance.
//!
//! - A task that cannot start waits in its own instance (which holds its client's
//!   connection) and is entered in the pool's queue in Redis ([`scripts::SCHED`]).
//! - When a slot frees anywhere, the freeing instance's call hands it, in the same
//!   script, to the most urgent task of a live instance: its own directly, another
//!   instance's through that instance's inbox (woken by `BLPOP`).
//! - Leases carry an expiry their instance renews ([`scripts::RENEW`]); a dead
//!   instance's leases (and queued tasks) lapse within `cluster.lease_ttl_ms`.
//! - Every Redis call is bounded by `cluster.timeout_ms`; one that fails or is late
//!   puts the instance in fallback: local counting as without a cluster, with a loud
//!   warning, `/health` and `andera_lb_cluster_fallback`. The renewal that next
//!   succeeds writes its leases again and re-enters its waiting tasks.
//!
//! The scheduler never waits on Redis: it sends events ([`ClusterEvent`]) and the
//! agent ([`agent`]) grants slots back through [`Scheduler::cluster_grant`].

mod agent;
pub(crate) mod metrics;
pub(crate) mod scripts;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::cluster::ClusterSettings;
use crate::scheduler::{ClusterEvent, ClusterLink, PoolKey, Scheduler};
pub(crate) use metrics::CLUSTER_METRICS;

/// A task waiting here for a lease.
#[derive(Debug, Clone)]
struct Asked {
    pool: PoolKey,
    key: (u32, u64, u64),
    /// Its named client and weight, for the fair share.
    client: Option<(Arc<str>, u32)>,
    /// Its entry in the pool's queue, once Redis made it.
    entry: Option<String>,
}

/// A lease held here (or a slot taken in fallback, to write as one).
#[derive(Debug, Clone)]
struct Held {
    url: String,
    pool: PoolKey,
}

/// The cluster as this instance last saw it, for `/health`.
#[derive(Debug, Default, Clone)]
struct Seen {
    instances: Vec<String>,
    leases: BTreeMap<String, u64>,
    queue_depth: u64,
    last_error: Option<String>,
    connected: bool,
}

/// This instance's part of the cluster.
pub(crate) struct Cluster {
    settings: ClusterSettings,
    /// The Redis URL without its password.
    url: String,
    me: String,
    scheduler: Arc<Scheduler>,
    events: Mutex<Option<UnboundedReceiver<ClusterEvent>>>,
    asked: Mutex<HashMap<u64, Asked>>,
    /// Pools with a look scheduled for when a full Worker's first lease lapses.
    armed: Mutex<std::collections::HashSet<PoolKey>>,
    held: Mutex<HashMap<u64, Held>>,
    fallback: AtomicBool,
    /// Write every lease at the next renewal (after a fallback).
    rebuild: AtomicBool,
    epoch: Mutex<String>,
    seen: Mutex<Seen>,
}

/// A per-process unique instance name: host, pid and start time.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace('|', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}-{}-{nanos:x}", std::process::id())
}

impl Cluster {
    /// Puts `scheduler` under a cluster with `settings`; nothing talks to Redis
    /// until [`ClusterService`] runs (tasks wait for it, or for the fallback).
    pub(crate) fn new(settings: &ClusterSettings, scheduler: Arc<Scheduler>) -> Arc<Cluster> {
        let (link, events) = ClusterLink::new();
        scheduler.link_cluster(link.clone());
        Arc::new(Cluster {
            url: crate::journal::redact(&settings.redis),
            settings: settings.clone(),
            me: instance_name(),
            scheduler,
            events: Mutex::new(Some(events)),
            asked: Mutex::default(),
            armed: Mutex::default(),
            held: Mutex::default(),
            fallback: AtomicBool::new(false),
            rebuild: AtomicBool::new(true),
            epoch: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// True while this instance counts slots on its own (Redis lost or slow).
    pub(crate) fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }

    /// How often leases are renewed and the queues pumped: a quarter of the lease
    /// lifetime, at most a second.
    fn tick(&self) -> Duration {
        (self.settings.lease_ttl / 4).min(Duration::from_secs(1))
    }

    fn member(&self, seq: u64) -> String {
        format!("{}|{seq}", self.me)
    }

    /// Starts counting on its own: Redis failed or did not answer in time.
    fn fall_back(&self, why: &str) {
        self.seen.lock().last_error = Some(why.to_string());
        if self.fallback.swap(true, Ordering::AcqRel) {
            return;
        }
        self.rebuild.store(true, Ordering::Release);
        log::warn!(
            "CLUSTER FALLBACK: Redis at {} failed ({why}); this instance now counts Worker \
             slots on its own (with N instances a Worker may get up to N x its slots) \
             until Redis answers again",
            self.url
        );
        CLUSTER_METRICS.fallbacks.inc();
        CLUSTER_METRICS.fallback.set(1);
        self.scheduler.set_cluster_gated(false);
    }

    /// Shares slots again: Redis answered a renewal that wrote this instance's
    /// leases; its waiting tasks are entered in the queues again.
    fn recover(self: &Arc<Self>, conn: &redis::aio::ConnectionManager) {
        if !self.fallback.swap(false, Ordering::AcqRel) {
            return;
        }
        log::warn!(
            "cluster: Redis at {} answers again: Worker slots are shared again",
            self.url
        );
        CLUSTER_METRICS.fallback.set(0);
        self.scheduler.set_cluster_gated(true);
        self.ask_all(conn);
    }

    /// The cluster on keyed `/health`.
    pub(crate) fn health(&self) -> serde_json::Value {
        let seen = self.seen.lock().clone();
        let status = match (self.in_fallback(), seen.connected) {
            (true, _) => "fallback",
            (false, true) => "ok",
            (false, false) => "connecting",
        };
        json!({
            "status": status,
            "redis": self.url,
            "instance": self.me,
            "instances": seen.instances,
            "leaseTtlMs": self.settings.lease_ttl.as_millis() as u64,
            "leasesHere": self.held.lock().len(),
            "leases": seen.leases,
            "queueDepth": seen.queue_depth,
            "detail": if status == "ok" { None } else { seen.last_error },
        })
    }
}

/// `/health`'s `components.cluster` without a cluster.
pub(crate) fn health_off() -> serde_json::Value {
    json!({
        "status": "off",
        "note": "no cluster.redis: this instance counts Worker slots on its own; N instances may put up to N x its slots on a Worker",
    })
}

/// The background service that runs this instance's cluster agent.
pub(crate) struct ClusterService {
    /// The cluster.
    pub cluster: Arc<Cluster>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ClusterService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.cluster.clone().run(shutdown).await;
    }
}

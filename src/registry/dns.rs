//! Workers found by DNS: a Worker list entry `dns+http://NAME:PORT` (or
//! `dns+https://`) stands for one Worker per A/AAAA record of NAME.
//!
//! Every `workers.dns.refresh_ms` (default 5000) each entry's name is looked up again
//! (hickory-resolver; the system's resolver, or `workers.dns.server`). The list the
//! registry runs on is the listed URLs plus one Worker per address found, so a record
//! that appears or goes is exactly a `workers.json` edit: the new Worker is polled,
//! the one that left stops getting tasks and its running tasks finish. An answer
//! with no records (NXDOMAIN, or no A/AAAA) empties the entry, as a Deployment scaled
//! to zero does; a failed lookup (timeout, SERVFAIL, refused) keeps the last good set
//! and says so: a log line when it starts and ends failing, the counter
//! `andera_lb_dns_lookup_failures_total`, and the entry's state on keyed `/health`
//! (`components.discovery.dns`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use parking_lot::RwLock;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::worker_url::{DnsEntry, WorkerUrl};

/// What keyed `/health` shows of the `dns+` entries, updated after each round of
/// lookups. Empty when the list has none.
#[derive(Default)]
pub(crate) struct DnsState {
    entries: RwLock<Vec<Value>>,
}

impl DnsState {
    /// One JSON object per `dns+` entry: `entry`, `name`, `workers` (addresses in
    /// use), `ok` (the last lookup answered) and `error` (why it failed).
    pub(crate) fn snapshot(&self) -> Value {
        Value::Array(self.entries.read().clone())
    }
}

/// One `dns+` entry and what its name last resolved to.
struct Tracked {
    entry: DnsEntry,
    /// The last good answer; `None` before the first one.
    addrs: Option<BTreeSet<IpAddr>>,
    /// Why the last lookup failed, while it does.
    error: Option<String>,
}

/// The Worker list as the registry runs it: the listed URLs plus the Workers of
/// every `dns+` entry.
pub(crate) struct LiveList {
    urls: Vec<WorkerUrl>,
    tracked: Vec<Tracked>,
    resolver: Option<TokioResolver>,
    timeout: Duration,
}

impl LiveList {
    /// A list of `urls` and `entries`, looked up as `settings` say. No lookup is made
    /// until [`LiveList::refresh`].
    pub(crate) fn new(
        urls: Vec<WorkerUrl>,
        entries: Vec<DnsEntry>,
        settings: &Settings,
    ) -> LiveList {
        let resolver = match resolver(settings) {
            Ok(r) => Some(r),
            Err(e) => {
                log::error!(
                    "workers.dns: cannot set up the resolver: {e}; dns+ entries find no Worker"
                );
                None
            }
        };
        let mut list = LiveList {
            urls: Vec::new(),
            tracked: Vec::new(),
            resolver,
            timeout: settings.discovery.timeout,
        };
        list.set_entries(urls, entries);
        list
    }

    /// Replaces the listed URLs and `dns+` entries (the file changed); an entry
    /// still listed keeps what it resolved to.
    pub(crate) fn set_entries(&mut self, urls: Vec<WorkerUrl>, entries: Vec<DnsEntry>) {
        let mut old = std::mem::take(&mut self.tracked);
        self.tracked = entries
            .into_iter()
            .map(
                |entry| match old.iter().position(|t| t.entry.raw == entry.raw) {
                    Some(i) => old.swap_remove(i),
                    None => Tracked {
                        entry,
                        addrs: None,
                        error: None,
                    },
                },
            )
            .collect();
        self.urls = urls;
    }

    /// True when some entry is a `dns+` entry (there is something to look up).
    pub(crate) fn has_dns(&self) -> bool {
        !self.tracked.is_empty()
    }

    /// Looks every entry's name up once (concurrently, each bounded by the discovery
    /// timeout) and updates `state`.
    pub(crate) async fn refresh(&mut self, state: &DnsState) {
        let Some(resolver) = &self.resolver else {
            return;
        };
        let timeout = self.timeout;
        let lookups = self
            .tracked
            .iter()
            .map(|t| lookup(resolver, t.entry.name().to_string(), timeout));
        let answers = futures_util::future::join_all(lookups).await;
        for (t, answer) in self.tracked.iter_mut().zip(answers) {
            apply(t, answer);
        }
        *state.entries.write() = self.tracked.iter().map(status).collect();
        let failing = self.tracked.iter().filter(|t| t.error.is_some()).count();
        crate::metrics::METRICS
            .dns_entries_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
    }

    /// The Workers to run on: the listed URLs, then each entry's addresses in order,
    /// each Worker once.
    pub(crate) fn workers(&self) -> Vec<WorkerUrl> {
        let mut out = self.urls.clone();
        let mut seen: BTreeSet<String> = out.iter().map(|u| u.raw.clone()).collect();
        for t in &self.tracked {
            for ip in t.addrs.iter().flatten() {
                let w = t.entry.worker_at(*ip);
                if seen.insert(w.raw.clone()) {
                    out.push(w);
                }
            }
        }
        out
    }
}

/// The resolver of `dns+` entries: `workers.dns.server` over UDP (TCP for long
/// answers), else the system's configuration. No cache: each refresh asks again,
/// so the set follows the records.
fn resolver(settings: &Settings) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match settings.workers.dns_server {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut server.connections {
                c.port = addr.port();
            }
            let config = ResolverConfig::from_name_servers(vec![server]);
            TokioResolver::builder_with_config(config, provider)
        }
        None => TokioResolver::builder(provider).map_err(|e| e.to_string())?,
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    options.timeout = settings.discovery.timeout;
    options.attempts = 1;
    options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| e.to_string())
}

/// The addresses `name` has now: `Ok` with the set (empty when the answer holds no
/// records), `Err` with why the lookup failed.
async fn lookup(
    resolver: &TokioResolver,
    name: String,
    timeout: Duration,
) -> Result<BTreeSet<IpAddr>, String> {
    match tokio::time::timeout(timeout, resolver.lookup_ip(name.as_str())).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Ok(found)) => Ok(found.iter().collect()),
        Ok(Err(e)) if e.is_no_records_found() => Ok(BTreeSet::new()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// Records one lookup's `answer` for `t`: a good one replaces the set, a failed one
/// keeps it (logged when the entry starts and stops failing, and counted).
fn apply(t: &mut Tracked, answer: Result<BTreeSet<IpAddr>, String>) {
    let entry = &t.entry.raw;
    match answer {
        Ok(addrs) => {
            if t.error.take().is_some() {
                log::info!("{entry}: DNS answers again ({} address(es))", addrs.len());
            }
            if t.addrs.as_ref() != Some(&addrs) {
                log::info!("{entry}: {} address(es): {}", addrs.len(), shown(&addrs));
            }
            t.addrs = Some(addrs);
        }
        Err(why) => {
            crate::metrics::METRICS.dns_lookup_failures.inc();
            if t.error.is_none() {
                let kept = t.addrs.as_ref().map_or(0, BTreeSet::len);
                log::error!(
                    "{entry}: DNS lookup of {} failed: {why}; keeping the last good set ({kept} Worker(s))",
                    t.entry.name()
                );
            }
            t.error = Some(why);
        }
    }
}

fn shown(addrs: &BTreeSet<IpAddr>) -> String {
    let all: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    all.join(", ")
}

/// The entry's line on keyed `/health`.
fn status(t: &Tracked) -> Value {
    json!({
        "entry": t.entry.raw,
        "name": t.entry.name(),
        "workers": t.addrs.as_ref().map_or(0, BTreeSet::len),
        "ok": t.error.is_none() && t.addrs.is_some(),
        "error": t.error,
    })
}

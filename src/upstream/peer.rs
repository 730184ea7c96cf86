//! Workers as Pingora's connector sees them, built once per Worker address rather
//! than once per task: an `HttpPeer` is 672 bytes of options with an owned SNI
//! string, and its pool key is a hash over all of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pingora::protocols::Stream;
use pingora::upstreams::peer::{HttpPeer, Peer};
use tokio::time::Instant;

use super::ExchangeError;
use crate::worker_url::WorkerUrl;

/// How long a Worker host name's address is used before it is resolved again.
/// IP literals are never resolved and their peers never expire.
pub(super) const DNS_TTL: Duration = Duration::from_secs(30);

/// The address `url` names: its IP literal (or the address a `dns+` entry found it
/// at, [`WorkerUrl::dial`]), or its host name resolved.
pub(super) async fn resolve(url: &WorkerUrl) -> Result<SocketAddr, ExchangeError> {
    if let Ok(ip) = url.dial_host().parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, url.port));
    }
    let key = url.authority();
    tokio::net::lookup_host(&key)
        .await
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            ExchangeError::NotDelivered(pingora::Error::explain(
                pingora::ErrorType::ConnectNoRoute,
                format!("cannot resolve {key}"),
            ))
        })
}

/// One cached peer: the Worker's port and scheme, and until when it may be used
/// (`None`: an IP literal, for ever).
struct Cached {
    port: u16,
    tls: bool,
    peer: Arc<WorkerPeer>,
    expires: Option<Instant>,
}

/// The peers of the Workers tasks went to, by the host connected to (a `dns+https`
/// Worker's address, not the NAME it shares with the others). Entries past their TTL are
/// replaced on the next task, and swept out when a peer is added at most once per
/// TTL (a sweep visits every entry: with 10,000 Workers, not on every insert), so the
/// cache holds no more than the Workers in use.
#[derive(Default)]
pub(super) struct PeerCache {
    hosts: Mutex<Hosts>,
}

#[derive(Default)]
struct Hosts {
    by_host: foldhash::HashMap<String, Vec<Cached>>,
    /// When expired entries are next swept out; `None` before the first insert.
    next_sweep: Option<Instant>,
}

impl PeerCache {
    /// The fresh peer for `url`, if one is cached.
    pub(super) fn get(&self, url: &WorkerUrl) -> Option<Arc<WorkerPeer>> {
        let hosts = self.hosts.lock();
        let cached = hosts
            .by_host
            .get(url.dial_host())?
            .iter()
            .find(|c| c.port == url.port && c.tls == url.tls)?;
        match cached.expires {
            Some(at) if at <= Instant::now() => None,
            _ => Some(cached.peer.clone()),
        }
    }

    /// Builds, caches and returns the peer for `url` at `addr`.
    pub(super) fn insert(
        &self,
        url: &WorkerUrl,
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<WorkerPeer> {
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        peer.options.connection_timeout = Some(connect_timeout);
        peer.options.idle_timeout = Some(idle_timeout);
        let peer = Arc::new(WorkerPeer::new(peer));
        let now = Instant::now();
        let literal = url.dial_host().parse::<std::net::IpAddr>().is_ok();
        let entry = Cached {
            port: url.port,
            tls: url.tls,
            peer: peer.clone(),
            expires: (!literal).then(|| now + DNS_TTL),
        };
        let mut hosts = self.hosts.lock();
        if hosts.next_sweep.is_some_and(|at| at <= now) {
            for entries in hosts.by_host.values_mut() {
                entries.retain(|c| c.expires.is_none_or(|at| at > now));
            }
            hosts.by_host.retain(|_, entries| !entries.is_empty());
            hosts.next_sweep = None;
        }
        hosts.next_sweep.get_or_insert(now + DNS_TTL);
        let entries = hosts
            .by_host
            .entry(url.dial_host().to_string())
            .or_default();
        entries.retain(|c| !(c.port == url.port && c.tls == url.tls));
        entries.push(entry);
        peer
    }

    /// Drops the peer cached for `url`'s host, port and scheme, if any.
    pub(super) fn remove(&self, url: &WorkerUrl) {
        let mut hosts = self.hosts.lock();
        if let Some(entries) = hosts.by_host.get_mut(url.dial_host()) {
            entries.retain(|c| !(c.port == url.port && c.tls == url.tls));
            if entries.is_empty() {
                hosts.by_host.remove(url.dial_host());
            }
        }
    }

    /// Peers cached now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.hosts.lock().by_host.values().map(Vec::len).sum()
    }
}

/// True when `stream` is connected to `peer`'s address. The address is the one
/// Pingora's socket digest read once per connection, so this costs no syscall.
pub(super) fn same_peer(stream: &Stream, peer: &WorkerPeer) -> bool {
    let want = peer.address().as_inet();
    match stream.get_socket_digest() {
        Some(digest) => digest.peer_addr().and_then(|a| a.as_inet()) == want,
        None => false,
    }
}

/// A Worker as Pingora's connector sees it: an [`HttpPeer`] whose pool key is
/// computed once, and whose pooled connections are matched by [`same_peer`] instead
/// of a `getpeername` call per reuse.
#[derive(Clone)]
pub(super) struct WorkerPeer {
    peer: HttpPeer,
    reuse_hash: u64,
}

impl WorkerPeer {
    fn new(peer: HttpPeer) -> Self {
        let reuse_hash = peer.reuse_hash();
        WorkerPeer { peer, reuse_hash }
    }
}

impl std::fmt::Display for WorkerPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.peer.fmt(f)
    }
}

impl Peer for WorkerPeer {
    fn address(&self) -> &pingora::protocols::l4::socket::SocketAddr {
        self.peer.address()
    }
    fn tls(&self) -> bool {
        self.peer.tls()
    }
    fn sni(&self) -> &str {
        self.peer.sni()
    }
    fn reuse_hash(&self) -> u64 {
        self.reuse_hash
    }
    fn get_proxy(&self) -> Option<&pingora::upstreams::peer::Proxy> {
        self.peer.get_proxy()
    }
    fn get_peer_options(&self) -> Option<&pingora::upstreams::peer::PeerOptions> {
        self.peer.get_peer_options()
    }
    fn get_mut_peer_options(&mut self) -> Option<&mut pingora::upstreams::peer::PeerOptions> {
        // Only for a peer being built: a shared one is never changed.
        self.peer.get_mut_peer_options()
    }
    fn get_client_cert_key(&self) -> Option<&std::sync::Arc<pingora::utils::tls::CertKey>> {
        self.peer.get_client_cert_key()
    }
    fn get_tracer(&self) -> Option<pingora::upstreams::peer::Tracer> {
        self.peer.get_tracer()
    }
    /// Pingora checks a pooled connection's fd with `getpeername` before handing it
    /// out, one syscall per task on a connection that was just used; the pooled
    /// stream owns its fd, so `Upstream::stream` checks the address the socket
    /// digest already holds instead.
    #[cfg(unix)]
    fn matches_fd<V: std::os::unix::io::AsRawFd>(&self, _fd: V) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::connectors::TransportConnector;

    fn url(text: &str) -> WorkerUrl {
        WorkerUrl::parse(text).unwrap()
    }

    #[tokio::test]
    async fn a_pooled_connection_is_matched_to_its_peer_by_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_of = |addr: SocketAddr| WorkerPeer::new(HttpPeer::new(addr, false, String::new()));
        let peer = peer_of(listener.local_addr().unwrap());
        let connector = TransportConnector::new(None);
        let stream = connector.new_stream(&peer).await.unwrap();
        assert!(same_peer(&stream, &peer));
        assert!(!same_peer(&stream, &peer_of(other.local_addr().unwrap())));
    }

    #[tokio::test]
    async fn one_peer_per_worker_address_with_the_pool_key_of_its_http_peer() {
        let cache = PeerCache::default();
        let secs = Duration::from_secs;
        let a = url("http://127.0.0.1:3001/base");
        assert!(cache.get(&a).is_none());
        let addr = resolve(&a).await.unwrap();
        let peer = cache.insert(&a, addr, secs(1), secs(60));
        // The same Worker address, whatever the path: the same peer, not a new one.
        let again = cache.get(&url("http://127.0.0.1:3001")).unwrap();
        assert!(Arc::ptr_eq(&peer, &again));
        let mut plain = HttpPeer::new(addr, false, "127.0.0.1".into());
        plain.options.connection_timeout = Some(secs(1));
        plain.options.idle_timeout = Some(secs(60));
        assert_eq!(peer.reuse_hash(), plain.reuse_hash());
        // Another port or scheme is another peer.
        assert!(cache.get(&url("http://127.0.0.1:3002")).is_none());
        assert!(cache.get(&url("https://127.0.0.1:3001")).is_none());
        assert_eq!(cache.len(), 1);
        // A Worker that leaves the list leaves the cache.
        cache.remove(&url("http://127.0.0.1:3001"));
        assert_eq!(cache.len(), 0);
        assert!(cache.get(&a).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_name_is_resolved_again_after_its_ttl_and_stale_peers_go() {
        let cache = PeerCache::default();
        let secs = Duration::from_secs;
        let named = url("http://localhost:3001");
        let addr: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        cache.insert(&named, addr, secs(1), secs(60));
        let literal = url("http://127.0.0.1:3009");
        cache.insert(
            &literal,
            "127.0.0.1:3009".parse().unwrap(),
            secs(1),
            secs(60),
        );
        assert!(cache.get(&named).is_some());
        tokio::time::advance(DNS_TTL + secs(1)).await;
        assert!(cache.get(&named).is_none(), "a name's address expires");
        assert!(cache.get(&literal).is_some(), "an IP literal's does not");
        cache.insert(
            &url("http://127.0.0.2:3001"),
            "127.0.0.2:3001".parse().unwrap(),
            secs(1),
            secs(60),
        );
        assert_eq!(cache.len(), 2, "the expired peer was dropped");
    }
}

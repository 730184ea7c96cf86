//! HTTP/1.1 exchanges with Workers over Pingora's connector and its keep-alive pool.
//!
//! Every request the load balancer sends to a Worker — tasks, `/health` polls,
//! `/logs` fetches — goes through [`Upstream`], so TLS settings, timeouts and
//! connection reuse are decided in one place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use tokio::time::Instant;

use crate::worker_url::WorkerUrl;

/// Where an exchange failed, which decides whether a task may be retried.
#[derive(Debug)]
pub enum ExchangeError {
    /// The Worker never got the request: DNS, connect, TLS or a write failed.
    /// Pingora's error, with its type and context.
    NotDelivered(Box<pingora::Error>),
    /// The request was delivered; the Worker may have started the task.
    AfterDelivery(Box<pingora::Error>),
    /// The deadline passed.
    TimedOut,
    /// The Worker sent no response header within the response header timeout.
    NoResponseHeader(Duration),
    /// The Worker's answer body paused longer than the body idle timeout.
    BodyStalled(Duration),
}

impl ExchangeError {
    /// True when the Worker was given time and said nothing.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ExchangeError::TimedOut
                | ExchangeError::NoResponseHeader(_)
                | ExchangeError::BodyStalled(_)
        )
    }
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::NotDelivered(e) => write!(f, "request not delivered: {e}"),
            ExchangeError::AfterDelivery(e) => write!(f, "Worker failed after accepting: {e}"),
            ExchangeError::TimedOut => f.write_str("timed out"),
            ExchangeError::NoResponseHeader(t) => write!(
                f,
                "timed out: no response header within {} ms",
                t.as_millis()
            ),
            ExchangeError::BodyStalled(t) => {
                write!(f, "timed out: the answer paused for {} ms", t.as_millis())
            }
        }
    }
}

/// Connection settings shared by all Worker exchanges.
pub struct Upstream {
    connector: Connector,
    connect_timeout: Duration,
    idle_timeout: Duration,
    dns: Mutex<HashMap<String, (SocketAddr, Instant)>>,
}

const DNS_TTL: Duration = Duration::from_secs(30);

/// TLS client settings for `wss://` slot feeds: the private CA when one is configured
/// (as for task traffic), else the platform's roots. Errors name the file.
pub fn tls_client_config(
    ca_file: Option<&std::path::Path>,
) -> Result<std::sync::Arc<pingora::tls::ClientConfig>, String> {
    use pingora::tls::{ClientConfig, RootCertStore};
    pingora::tls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            pingora::tls::load_ca_file_into_store(path, &mut roots)
                .map_err(|e| format!("{}: cannot load CA certificates: {e}", path.display()))?;
            if roots.is_empty() {
                return Err(format!("{}: no CA certificate found", path.display()));
            }
        }
        None => {
            let _ = pingora::tls::load_platform_certs_incl_env_into_store(&mut roots);
        }
    }
    Ok(std::sync::Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl Upstream {
    /// An upstream with the given connect timeout, keep-alive idle timeout and optional private CA.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, ca_file: Option<&str>) -> Self {
        let mut options = ConnectorOptions::new(1024);
        options.ca_file = ca_file.map(str::to_string);
        Upstream {
            connector: Connector::new(Some(options)),
            connect_timeout,
            idle_timeout,
            dns: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(&self, url: &WorkerUrl) -> Result<SocketAddr, ExchangeError> {
        if let Ok(ip) = url.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, url.port));
        }
        let key = url.authority();
        if let Some((addr, at)) = self.dns.lock().get(&key) {
            if at.elapsed() < DNS_TTL {
                return Ok(*addr);
            }
        }
        let addr = tokio::net::lookup_host(&key)
            .await
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| {
                ExchangeError::NotDelivered(pingora::Error::explain(
                    pingora::ErrorType::ConnectNoRoute,
                    format!("cannot resolve {key}"),
                ))
            })?;
        self.dns.lock().insert(key, (addr, Instant::now()));
        Ok(addr)
    }

    async fn peer(&self, url: &WorkerUrl) -> Result<HttpPeer, ExchangeError> {
        let addr = self.resolve(url).await?;
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(self.idle_timeout);
        Ok(peer)
    }

    /// Sends `header` and `body` to the Worker at `url` and waits for the final
    /// response header, skipping interim (1xx) ones.
    pub async fn send(
        &self,
        url: &WorkerUrl,
        header: RequestHeader,
        body: &Bytes,
        limits: Limits,
    ) -> Result<Exchange<'_>, ExchangeError> {
        let deadline = limits.deadline;
        let peer = self.peer(url).await?;
        let connect = self.connector.get_http_session(&peer);
        let (mut session, reused) = match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => return Err(ExchangeError::TimedOut),
            Ok(Err(e)) => return Err(ExchangeError::NotDelivered(e)),
            Ok(Ok(s)) => s,
        };
        // Pingora's client flushes the header before the body: corked, the Worker
        // gets header and body in one segment instead of two.
        let fd = session.stream().id();
        set_cork(fd, true);
        let write = async {
            session.write_request_header(Box::new(header)).await?;
            if !body.is_empty() {
                session.write_body(body).await?;
            }
            session.finish_body().await
        };
        let written = tokio::time::timeout_at(deadline, write).await;
        set_cork(fd, false);
        match written {
            Err(_) => return Err(ExchangeError::TimedOut),
            Ok(Err(e)) => return Err(ExchangeError::NotDelivered(e)),
            Ok(Ok(_)) => {}
        }
        // The per-attempt clock starts once the Worker has the whole task.
        let head_limit = limits
            .response_header
            .map(|t| (Instant::now() + t, t))
            .filter(|(by, _)| *by < deadline);
        loop {
            let read = session.read_response();
            match tokio::time::timeout_at(head_limit.map_or(deadline, |(by, _)| by), read).await {
                Err(_) => {
                    return Err(match head_limit {
                        Some((_, t)) => ExchangeError::NoResponseHeader(t),
                        None => ExchangeError::TimedOut,
                    })
                }
                Ok(Err(e)) => {
                    let e = if reused {
                        e.more_context("on a reused connection")
                    } else {
                        e
                    };
                    return Err(ExchangeError::AfterDelivery(e));
                }
                Ok(Ok(_)) => {}
            }
            match session.resp_header().map(|h| h.status.as_u16()) {
                // Nothing was asked to switch protocols: the connection is unusable.
                Some(101) => {
                    return Err(ExchangeError::AfterDelivery(pingora::Error::explain(
                        pingora::ErrorType::InvalidHTTPHeader,
                        "unexpected 101 Switching Protocols",
                    )))
                }
                // 100 Continue, 103 Early Hints...: the real answer follows.
                Some(100..=199) => continue,
                _ => break,
            }
        }
        Ok(Exchange {
            upstream: self,
            session: Some(session),
            peer,
            body_limit: match limits.body_idle {
                Some(idle) => BodyLimit::Idle(idle),
                None => BodyLimit::By(deadline),
            },
        })
    }

    /// A whole GET exchange with a small body, for polls and log fetches.
    pub async fn get(
        &self,
        url: &WorkerUrl,
        endpoint: &str,
        headers: &[(&'static str, &str)],
        timeout: Duration,
        max_body: usize,
    ) -> Result<(u16, Bytes), ExchangeError> {
        let mut req = RequestHeader::build("GET", url.path(endpoint).as_bytes(), None)
            .map_err(ExchangeError::NotDelivered)?;
        let host = url.host_header();
        let _ = req.insert_header("host", host.as_str());
        for (name, value) in headers {
            req.insert_header(*name, *value)
                .map_err(ExchangeError::NotDelivered)?;
        }
        let limits = Limits {
            deadline: Instant::now() + timeout,
            response_header: None,
            body_idle: None,
        };
        let mut exchange = self.send(url, req, &Bytes::new(), limits).await?;
        let status = exchange.header().status.as_u16();
        let mut body = BytesMut::new();
        while let Some(chunk) = exchange.next_chunk().await? {
            if body.len() + chunk.len() > max_body {
                return Err(ExchangeError::AfterDelivery(pingora::Error::explain(
                    pingora::ErrorType::InvalidHTTPHeader,
                    format!("response larger than {max_body} bytes"),
                )));
            }
            body.extend_from_slice(&chunk);
        }
        exchange.finish().await;
        Ok((status, body.freeze()))
    }
}

/// Sets `TCP_CORK` on a Worker connection (Linux); a no-op where unsupported.
fn set_cork(fd: i32, on: bool) {
    #[cfg(target_os = "linux")]
    {
        let value: libc::c_int = on.into();
        // SAFETY: `fd` is the open socket of a session this function's caller owns,
        // and `value` outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, on);
}

/// The time limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connect, write and the final response header must be done by then.
    pub deadline: Instant,
    /// Longest wait for the response header once the request is written; `None`:
    /// the deadline alone.
    pub response_header: Option<Duration>,
    /// Longest pause between two body chunks, with no total cap on the body;
    /// `None`: the whole body must arrive by the deadline.
    pub body_idle: Option<Duration>,
}

/// A request whose response header has arrived; the body is read chunk by chunk.
pub struct Exchange<'a> {
    upstream: &'a Upstream,
    session: Option<HttpSession>,
    peer: HttpPeer,
    body_limit: BodyLimit,
}

/// What bounds the reading of a response body.
#[derive(Debug, Clone, Copy)]
enum BodyLimit {
    /// The longest pause between two chunks.
    Idle(Duration),
    /// The whole body by then.
    By(Instant),
}

impl Exchange<'_> {
    /// The Worker's response header.
    pub fn header(&self) -> &ResponseHeader {
        self.session
            .as_ref()
            .and_then(|s| s.resp_header())
            .expect("an Exchange exists only after its response header was read")
    }

    /// The next body chunk as the Worker wrote it, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ExchangeError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        let (by, error) = match self.body_limit {
            BodyLimit::Idle(idle) => (Instant::now() + idle, ExchangeError::BodyStalled(idle)),
            BodyLimit::By(deadline) => (deadline, ExchangeError::TimedOut),
        };
        match tokio::time::timeout_at(by, session.read_body_bytes()).await {
            Err(_) => Err(error),
            Ok(Err(e)) => Err(ExchangeError::AfterDelivery(e)),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    /// Returns the connection to the keep-alive pool if the response was read to its end.
    pub async fn finish(mut self) {
        if let Some(session) = self.session.take() {
            self.upstream
                .connector
                .release_http_session(session, &self.peer, Some(self.upstream.idle_timeout))
                .await;
        }
    }
}

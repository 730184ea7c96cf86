//! HTTP/1.1 exchanges with Workers over Pingora's connector and its keep-alive pool.
//!
//! Every HTTP request the load balancer sends to a Worker — tasks, `/health` polls,
//! `/logs` fetches — and the webhook failure notices go through [`Upstream`], so
//! their TLS settings, timeouts and connection reuse are decided here. (The slot
//! feeds are WebSockets over tungstenite, with their own rustls configuration:
//! `registry/feed.rs`.)

mod peer;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::{http_req_header_to_wire, HttpSession};
use pingora::protocols::Stream;
use pingora::upstreams::peer::Peer;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::worker_url::WorkerUrl;
use peer::{same_peer, PeerCache, WorkerPeer};

/// Where an exchange failed, which decides whether a task may be retried.
#[derive(Debug)]
pub(crate) enum ExchangeError {
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
    pub(crate) fn is_timeout(&self) -> bool {
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
pub(crate) struct Upstream {
    /// Pingora's transport connector and its keep-alive pool. The HTTP/1 session is
    /// built over its streams here (as Pingora's own `http::v1::Connector` does) so
    /// that the request can go out in one write.
    connector: TransportConnector,
    connect_timeout: Duration,
    idle_timeout: Duration,
    peers: PeerCache,
}

/// TLS client settings for `wss://` slot feeds: the private CA when one is configured
/// (as for task traffic), else the platform's roots. Errors name the file.
pub(crate) fn tls_client_config(
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
    pub(crate) fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        ca_file: Option<&str>,
    ) -> Self {
        let mut options = ConnectorOptions::new(1024);
        options.ca_file = ca_file.map(str::to_string);
        Upstream {
            connector: TransportConnector::new(Some(options)),
            connect_timeout,
            idle_timeout,
            peers: PeerCache::default(),
        }
    }

    /// The Worker at `url` as Pingora's connector sees it, from the cache when fresh.
    async fn peer(&self, url: &WorkerUrl) -> Result<Arc<WorkerPeer>, ExchangeError> {
        if let Some(peer) = self.peers.get(url) {
            return Ok(peer);
        }
        let addr = peer::resolve(url).await?;
        Ok(self
            .peers
            .insert(url, addr, self.connect_timeout, self.idle_timeout))
    }

    /// Drops the cached peer of `url` (a Worker that left the list): an IP literal's
    /// peer would otherwise stay cached for the life of the process.
    pub(crate) fn forget(&self, url: &WorkerUrl) {
        self.peers.remove(url);
    }

    /// A pooled connection to `peer`, else a new one; `true` when pooled.
    async fn stream(&self, peer: &WorkerPeer) -> pingora::Result<(Stream, bool)> {
        if let Some(stream) = self.connector.reused_stream(peer).await {
            // Another peer's connection under the same reuse hash is never used for this one.
            if same_peer(&stream, peer) {
                return Ok((stream, true));
            }
        }
        // Boxed: connecting (TCP, TLS) is the rare path, and its future is large; inline
        // it would size every task's future, moved and held per task, by it.
        Ok((Box::pin(self.connector.new_stream(peer)).await?, false))
    }

    /// Sends `head` (an HTTP/1.1 request head as it goes on the wire, see
    /// [`wire_head`]) and `body` to the Worker at `url` and waits for the final
    /// response header, skipping interim (1xx) ones.
    pub(crate) async fn send(
        &self,
        url: &WorkerUrl,
        head: BytesMut,
        body: &Bytes,
        limits: Limits,
    ) -> Result<Exchange<'_>, ExchangeError> {
        let deadline = limits.deadline;
        let peer = self.peer(url).await?;
        let connect = self.stream(&peer);
        let (mut stream, reused) = match crate::limit::by(deadline, connect).await {
            Err(_) => return Err(ExchangeError::TimedOut),
            Ok(Err(e)) => return Err(ExchangeError::NotDelivered(e)),
            Ok(Ok(s)) => s,
        };
        // Pingora's client session writes (and flushes) the header, then the body: two
        // sends, or two more setsockopt calls to cork them. Head and body go out in one
        // vectored write instead, without copying the body, and the Worker gets them
        // in one segment.
        let mut wire = head.chain(body.clone());
        let write = async {
            stream.write_all_buf(&mut wire).await?;
            stream.flush().await
        };
        match crate::limit::by(deadline, write).await {
            Err(_) => return Err(ExchangeError::TimedOut),
            Ok(Err(e)) => {
                return Err(ExchangeError::NotDelivered(pingora::Error::because(
                    pingora::ErrorType::WriteError,
                    "while writing the request",
                    e,
                )))
            }
            Ok(Ok(())) => {}
        }
        // The session only reads the response: our requests are never HEAD, upgrades
        // or `Connection: close`, the only things it would need the written header for.
        let mut session = HttpSession::new_with_options(stream, &*peer);
        // The per-attempt clock starts once the Worker has the whole task.
        let head_limit = limits
            .response_header
            .map(|t| (Instant::now() + t, t))
            .filter(|(by, _)| *by < deadline);
        loop {
            let read = session.read_response();
            match crate::limit::by(head_limit.map_or(deadline, |(by, _)| by), read).await {
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
            session: Some(Box::new(session)),
            reuse_hash: peer.reuse_hash(),
            body_limit: match limits.body_idle {
                Some(idle) => BodyLimit::Idle(idle),
                None => BodyLimit::By(deadline),
            },
        })
    }

    /// A whole GET exchange with a small body, for polls and log fetches.
    pub(crate) async fn get(
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
        let mut exchange = self
            .send(url, wire_head(&req)?, &Bytes::new(), limits)
            .await?;
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
        exchange.finish();
        Ok((status, body.freeze()))
    }
}

/// `header` as it goes on the wire: Pingora's HTTP/1 serialisation, for [`Upstream::send`].
pub(crate) fn wire_head(header: &RequestHeader) -> Result<BytesMut, ExchangeError> {
    http_req_header_to_wire(header).ok_or_else(|| {
        ExchangeError::NotDelivered(pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "request-line contains forbidden delimiter bytes or unsupported HTTP version",
        ))
    })
}

/// The time limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
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
pub(crate) struct Exchange<'a> {
    upstream: &'a Upstream,
    /// Boxed: a task's future keeps room for its `Exchange` also while the task waits
    /// for a slot, before there is any exchange; with Pingora's client session inline
    /// that room cost every waiting task 0.9 KiB more (bench/heap).
    session: Option<Box<HttpSession>>,
    /// The pool key of the Worker's connections (the peer itself is 672 bytes, and
    /// every relay future would carry it).
    reuse_hash: u64,
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
    pub(crate) fn header(&self) -> &ResponseHeader {
        self.session
            .as_ref()
            .and_then(|s| s.resp_header())
            .expect("an Exchange exists only after its response header was read")
    }

    /// The next body chunk as the Worker wrote it, or `None` at the end.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, ExchangeError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        let (by, error) = match self.body_limit {
            BodyLimit::Idle(idle) => (Instant::now() + idle, ExchangeError::BodyStalled(idle)),
            BodyLimit::By(deadline) => (deadline, ExchangeError::TimedOut),
        };
        match crate::limit::by(by, session.read_body_bytes()).await {
            Err(_) => Err(error),
            Ok(Err(e)) => Err(ExchangeError::AfterDelivery(e)),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    /// True once the Worker's whole answer body has been read.
    pub(crate) fn body_done(&mut self) -> bool {
        self.session.as_mut().is_none_or(|s| s.is_body_done())
    }

    /// Returns the connection to the keep-alive pool if the response was read to its
    /// end, else closes it.
    ///
    /// Not async: Pingora's `reuse` awaits only to shut down a connection it will not
    /// keep, and is otherwise ready at once. Awaiting it would make every task's
    /// future carry (and move) the session twice over, about 4 KiB.
    pub(crate) fn finish(mut self) {
        if let Some(session) = self.session.take() {
            let mut session = *session;
            // What Pingora's `http::v1::Connector::release_http_session` does.
            session.respect_keepalive();
            // A connection that is not kept is dropped (closed) if its shutdown would wait.
            if let Some(Some(stream)) = session.reuse().now_or_never() {
                self.upstream.connector.release_stream(
                    stream,
                    self.reuse_hash,
                    Some(self.upstream.idle_timeout),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_goes_out_as_one_buffer_head_then_body() {
        let mut header = RequestHeader::build("POST", b"/w3/task", None).unwrap();
        header.insert_header("host", "worker:8080").unwrap();
        header.insert_header("content-length", 7).unwrap();
        let mut chained = wire_head(&header)
            .unwrap()
            .chain(Bytes::from_static(b"{\"a\":1}"));
        let wire = chained.copy_to_bytes(chained.remaining());
        assert_eq!(
            &wire[..],
            b"POST /w3/task HTTP/1.1\r\nhost: worker:8080\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn a_request_pingora_cannot_write_as_http1_is_not_sent() {
        let mut header = RequestHeader::build("GET", b"/health", None).unwrap();
        header.set_version(http::Version::HTTP_3);
        assert!(matches!(
            wire_head(&header),
            Err(ExchangeError::NotDelivered(_))
        ));
    }
}

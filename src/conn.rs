//! The HTTP/1 connection loop of the client and admin services, with the limits
//! Pingora's own loop lacks.
//!
//! Pingora's keep-alive loop (`ServerApp` for any `HttpServerApp`) times each header
//! read separately (a client sending one byte every few seconds is never cut), keeps
//! an idle HTTP/1.1 connection forever once it has served a request, accepts request
//! headers up to 1 MiB and answers a malformed one with a bodiless `400`.
//! [`GuardedApp`] runs the same loop over a [`GuardedIo`] that watches the bytes of
//! each request header: the whole header must arrive within
//! [`ClientLimits::header_timeout`] of its first byte and fit in
//! [`ClientLimits::max_header_bytes`], and a connection may wait
//! [`ClientLimits::idle_timeout`] for its next request. Pingora still parses every
//! request (pipelined ones included); the guard only decides when to stop it.
//! What the LB refuses before routing gets a JSON `{"error": ...}` answer.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::client::ClientLimits;
use crate::drain::{ActiveTask, Drain};
use crate::metrics::METRICS;

/// How long the LB tries to deliver its own refusal before closing anyway.
const REFUSAL_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Between requests: waiting for the first byte of the next header.
    Idle = 0,
    /// Reading a request header.
    Header = 1,
    /// The header was parsed: the request belongs to the proxy, no guard applies.
    Body = 2,
    /// The header outgrew the cap.
    TooLarge = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Header,
            2 => Phase::Body,
            _ => Phase::TooLarge,
        }
    }
}

/// Header-phase bookkeeping, touched only while a header is being read.
#[derive(Debug)]
struct HeaderState {
    /// When the current phase began (the idle wait starts here).
    since: Instant,
    /// When the first header byte arrived (a new connection counts from accept).
    first_byte: Option<Instant>,
    /// Header bytes read from the socket for the current request.
    bytes: usize,
    /// Status of an answer Pingora tried to write before routing (its bodiless 400).
    refused: Option<u16>,
}

/// State shared by a connection's [`GuardedIo`] and its loop in [`GuardedApp`].
struct ConnGuard {
    phase: AtomicU8,
    state: Mutex<HeaderState>,
    /// The socket, handed back when Pingora drops the session.
    orphan: Mutex<Option<Stream>>,
    /// Wakes the loop when the phase changes (first byte, header parsed, cap hit).
    changed: Notify,
}

impl ConnGuard {
    fn new() -> Self {
        ConnGuard {
            phase: AtomicU8::new(Phase::Header as u8),
            state: Mutex::new(HeaderState {
                since: Instant::now(),
                first_byte: Some(Instant::now()),
                bytes: 0,
                refused: None,
            }),
            orphan: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// Starts waiting for a request: `Header` on a new connection (the header clock
    /// runs from accept, as nginx's does), `Idle` between keep-alive requests.
    fn begin(&self, phase: Phase) {
        let now = Instant::now();
        *self.state.lock() = HeaderState {
            since: now,
            first_byte: (phase == Phase::Header).then_some(now),
            bytes: 0,
            refused: None,
        };
        self.set_phase(phase);
    }

    /// Counts `n` header bytes just read; the first one starts the header clock.
    fn header_bytes(&self, n: usize) {
        let mut s = self.state.lock();
        s.bytes += n;
        if s.first_byte.is_none() {
            s.first_byte = Some(Instant::now());
            drop(s);
            self.set_phase(Phase::Header);
        }
    }

    /// Header bytes still allowed for the current request.
    fn room(&self, cap: usize) -> usize {
        cap.saturating_sub(self.state.lock().bytes)
    }
}

impl fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnGuard")
            .field("phase", &self.phase())
            .finish()
    }
}

/// Handed to the proxy as the connection's user context; [`header_read`] turns
/// the guard off for the rest of the request.
struct HeaderDone(Arc<ConnGuard>);

/// Called by the proxies' `on_connection_reuse` hook, which Pingora runs right after
/// it parsed a request header: from here on the request is the proxy's.
pub fn header_read(prev_ctx: &(dyn std::any::Any + Send + Sync)) {
    if let Some(HeaderDone(guard)) = prev_ctx.downcast_ref::<HeaderDone>() {
        guard.set_phase(Phase::Body);
    }
}

/// A client socket whose header reads are counted and capped. Outside a header it
/// passes everything through; while a header is read, writes (Pingora's own error
/// answers) are swallowed so that the loop can answer in JSON instead.
#[derive(Debug)]
pub struct GuardedIo {
    inner: Option<Stream>,
    guard: Arc<ConnGuard>,
    cap: usize,
}

impl GuardedIo {
    fn inner(&mut self) -> &mut Stream {
        self.inner
            .as_mut()
            .expect("the stream is only taken on drop")
    }

    fn passthrough(&self) -> bool {
        self.guard.phase() == Phase::Body
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        // The loop may still owe the client an answer on this socket.
        *self.guard.orphan.lock() = self.inner.take();
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.guard.phase() {
            Phase::Body => return Pin::new(this.inner()).poll_read(cx, buf),
            // The loop is about to drop this connection.
            Phase::TooLarge => return Poll::Pending,
            Phase::Idle | Phase::Header => {}
        }
        let room = this.guard.room(this.cap);
        if room == 0 {
            this.guard.set_phase(Phase::TooLarge);
            return Poll::Pending;
        }
        let before = buf.filled().len();
        if buf.remaining() <= room {
            std::task::ready!(Pin::new(this.inner()).poll_read(cx, buf))?;
        } else {
            // Only near the cap: read no more than the header may still use.
            let mut scratch = vec![0u8; room];
            let mut small = ReadBuf::new(&mut scratch);
            std::task::ready!(Pin::new(this.inner()).poll_read(cx, &mut small))?;
            buf.put_slice(small.filled());
        }
        let n = buf.filled().len() - before;
        if n > 0 {
            this.guard.header_bytes(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.passthrough() {
            return Pin::new(this.inner()).poll_write(cx, buf);
        }
        // Before routing Pingora only writes its own error answers: note the status.
        let mut s = this.guard.state.lock();
        if s.refused.is_none() {
            s.refused = buf
                .strip_prefix(b"HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| std::str::from_utf8(code).ok())
                .and_then(|code| code.parse().ok());
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.passthrough() {
            return Pin::new(this.inner()).poll_write_vectored(cx, bufs);
        }
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) => Pin::new(this).poll_write(cx, first),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.passthrough() {
            return Pin::new(this.inner()).poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.passthrough() {
            return Pin::new(this.inner()).poll_shutdown(cx);
        }
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Shutdown for GuardedIo {
    async fn shutdown(&mut self) {
        // Before routing, the loop closes the socket itself after its JSON answer.
        if self.passthrough() {
            Shutdown::shutdown(self.inner().as_mut()).await;
        }
    }
}

impl UniqueID for GuardedIo {
    fn id(&self) -> UniqueIDType {
        self.inner.as_ref().map_or(-1, |s| s.id())
    }
}

impl Ssl for GuardedIo {}

impl GetTimingDigest for GuardedIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |s| s.get_timing_digest())
    }
}

impl GetProxyDigest for GuardedIo {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.as_ref().and_then(|s| s.get_proxy_digest())
    }
}

impl GetSocketDigest for GuardedIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.as_ref().and_then(|s| s.get_socket_digest())
    }
}

#[async_trait]
impl Peek for GuardedIo {}

/// How one request's header phase ended.
enum Verdict<T> {
    /// Pingora finished the request (`Some` when the connection may be reused).
    Done(Option<T>),
    /// The idle or header deadline passed.
    Expired(Phase),
    /// The header outgrew the cap.
    TooLarge,
}

/// A Pingora HTTP application (an `HttpProxy`) served through the guarded loop.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    limits: ClientLimits,
    /// `service` label of the responses counted here (`client`, `admin`).
    service: &'static str,
    /// Counts connections with a request in progress, so that the drain does not
    /// end the process under a request it has accepted but not yet routed.
    drain: Arc<Drain>,
}

impl<A> GuardedApp<A> {
    /// Serves `inner` with `limits` on every connection; refusals are counted in
    /// `http_responses` under `service` with route `refused`. A connection counts
    /// in `drain` from accept (or a later request's first byte) until its answer
    /// is sent.
    pub fn new(inner: A, limits: ClientLimits, service: &'static str, drain: Arc<Drain>) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            limits,
            service,
            drain,
        }
    }
}

/// Seconds of the keep-alive timeout as Pingora wants them (at least 1).
fn whole_secs(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl<A: HttpServerApp + Send + Sync + 'static> GuardedApp<A> {
    /// Prepares the session for the next request on this connection.
    fn session(
        &self,
        io: Stream,
        persisted: Option<HttpPersistentSettings>,
        guard: &Arc<ConnGuard>,
        shutdown: &ShutdownWatch,
    ) -> ServerSession {
        let mut session = ServerSession::new_http1(io);
        match persisted {
            Some(p) => p.apply_to_session(&mut session),
            None => session.set_keepalive_reuses_remaining(
                self.inner
                    .server_options()
                    .and_then(|o| o.keepalive_request_limit),
            ),
        }
        if *shutdown.borrow() {
            // No keep-alive once shutdown has begun, as in Pingora's own loop.
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(whole_secs(self.limits.idle_timeout)));
        }
        // Pingora applies these per read / per write of the body.
        session.set_read_timeout(Some(self.limits.body_timeout));
        session.set_write_timeout(Some(self.limits.send_timeout));
        // Answer pipelined requests in order instead of dropping all but the first.
        session.set_pipelining_enabled(true);
        session.set_connection_user_context(Some(Box::new(HeaderDone(guard.clone()))));
        session
    }

    /// Runs one request through Pingora, stopping it if its header phase overruns.
    async fn one_request(
        &self,
        session: ServerSession,
        guard: &ConnGuard,
        shutdown: &ShutdownWatch,
        busy: &mut Option<ActiveTask>,
    ) -> Verdict<pingora::apps::ReusedHttpStream> {
        let work = self.inner.process_new_http(session, shutdown);
        tokio::pin!(work);
        loop {
            if busy.is_none() && guard.phase() != Phase::Idle {
                // The next request's first byte: it counts until it is answered.
                *busy = Some(self.drain.track());
            }
            let deadline = {
                let s = guard.state.lock();
                match guard.phase() {
                    Phase::Idle => Some(s.since + self.limits.idle_timeout),
                    Phase::Header => s.first_byte.map(|t| t + self.limits.header_timeout),
                    Phase::Body => None,
                    Phase::TooLarge => return Verdict::TooLarge,
                }
            };
            let far = Instant::now() + std::time::Duration::from_secs(86_400);
            tokio::select! {
                biased;
                r = &mut work => return Verdict::Done(r),
                _ = guard.changed.notified() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    return Verdict::Expired(guard.phase());
                }
            }
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let guard = Arc::new(ConnGuard::new());
        let mut io: Stream = Box::new(GuardedIo {
            inner: Some(stream),
            guard: guard.clone(),
            cap: self.limits.max_header_bytes,
        });
        let mut persisted = None;
        let mut phase = Phase::Header;
        // A new connection counts at once: its request is on the way.
        let mut busy = Some(self.drain.track());
        loop {
            let session = self.session(io, persisted, &guard, shutdown);
            guard.begin(phase);
            let verdict = self.one_request(session, &guard, shutdown, &mut busy).await;
            // The request future is gone: a socket Pingora dropped is back in `orphan`.
            let refusal = match verdict {
                Verdict::Done(Some(reused)) => {
                    let (stream, settings) = reused.consume();
                    io = stream;
                    persisted = settings;
                    phase = Phase::Idle;
                    busy = None;
                    continue;
                }
                Verdict::Done(None) => {
                    let refused = guard.state.lock().refused;
                    refused.map(|status| (status, refusal_message(status)))
                }
                Verdict::Expired(Phase::Header) if guard.state.lock().bytes > 0 => {
                    Some((408, "Request header timed out"))
                }
                Verdict::Expired(_) => None,
                Verdict::TooLarge => Some((431, "Request header too large")),
            };
            let orphan = guard.orphan.lock().take();
            if let (Some((status, message)), Some(mut stream)) = (refusal, orphan) {
                log::debug!("client connection refused before routing: {status} {message}");
                METRICS
                    .http_responses
                    .with_label_values(&[self.service, "refused", &status.to_string()])
                    .inc();
                let answer = refusal_bytes(status, message);
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                    stream.write_all(&answer).await?;
                    stream.flush().await?;
                    stream.shutdown().await
                })
                .await;
            }
            return None;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// The JSON message for a status Pingora refused a request with before routing.
fn refusal_message(status: u16) -> &'static str {
    match status {
        405 => "Method not allowed",
        431 => "Request header too large",
        _ => "Malformed request header",
    }
}

/// A complete `{"error": ...}` answer that closes the connection.
fn refusal_bytes(status: u16, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_complete_json_answer() {
        let text = String::from_utf8(refusal_bytes(431, "Request header too large")).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("connection: close"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "Request header too large");
    }

    #[test]
    fn keepalive_seconds_round_up() {
        assert_eq!(whole_secs(std::time::Duration::from_millis(1500)), 2);
        assert_eq!(whole_secs(std::time::Duration::from_millis(10)), 1);
    }
}

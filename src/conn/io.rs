//! The guarded client socket: [`GuardedIo`] counts and caps the bytes of each
//! request header and holds the first bytes of the next request, read by the
//! connection loop before Pingora builds a session for it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::BytesMut;
use parking_lot::Mutex;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
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
pub(super) struct HeaderState {
    /// When the current phase began (the idle wait starts here).
    pub(super) since: Instant,
    /// When the first header byte arrived (a new connection counts from accept).
    pub(super) first_byte: Option<Instant>,
    /// Header bytes read from the socket for the current request.
    pub(super) bytes: usize,
    /// Status of an answer Pingora tried to write before routing (its bodiless 400).
    pub(super) refused: Option<u16>,
}

/// State shared by a connection's [`GuardedIo`] and its loop in [`GuardedApp`].
pub(super) struct ConnGuard {
    phase: AtomicU8,
    /// The last request ended with its body unread: a close lingers.
    pub(super) body_unread: std::sync::atomic::AtomicBool,
    pub(super) state: Mutex<HeaderState>,
    /// The socket, handed back when Pingora drops the session.
    pub(super) orphan: Mutex<Option<Stream>>,
    /// Wakes the loop when the phase changes (first byte, header parsed, cap hit).
    pub(super) changed: Notify,
}

impl ConnGuard {
    pub(super) fn new() -> Self {
        ConnGuard {
            phase: AtomicU8::new(Phase::Header as u8),
            body_unread: std::sync::atomic::AtomicBool::new(false),
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

    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// Starts waiting for a request: `Header` on a new connection (the header clock
    /// runs from accept, as nginx's does), `Idle` between keep-alive requests.
    pub(super) fn begin(&self, phase: Phase) {
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
pub(super) struct HeaderDone(pub(super) Arc<ConnGuard>);

/// Called by the proxies' `on_connection_reuse` hook, which Pingora runs right after
/// it parsed a request header: from here on the request is the proxy's. Returns the
/// connection's handle, for [`ConnHandle::request_ended`].
pub(crate) fn header_read(prev_ctx: &(dyn std::any::Any + Send + Sync)) -> Option<ConnHandle> {
    let HeaderDone(guard) = prev_ctx.downcast_ref::<HeaderDone>()?;
    guard.set_phase(Phase::Body);
    Some(ConnHandle(guard.clone()))
}

/// A request's view of its connection's guard.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle(Arc<ConnGuard>);

impl ConnHandle {
    /// Notes how the request ended: when its body was not read to the end (an early
    /// answer: `413`, `401`, a malformed body), a close of the connection lingers,
    /// for the client may still be writing it. A request whose body was read whole
    /// (a send timeout, a client that stopped reading) closes at once.
    pub(crate) fn request_ended(&self, body_done: bool, error: Option<&pingora::Error>) {
        use pingora::ErrorType::{ConnectionClosed, WriteError, WriteTimedout};
        // A request that failed reading (a malformed or oversized body) may have left
        // bytes unread whatever the reader says; one that failed writing (the client
        // stopped reading) has nothing more coming.
        let failed_reading = error
            .is_some_and(|e| !matches!(e.etype(), WriteTimedout | WriteError | ConnectionClosed));
        self.0
            .body_unread
            .store(!body_done || failed_reading, Ordering::Release);
    }
}

/// A client socket whose header reads are counted and capped. Outside a header it
/// passes everything through; while a header is read, writes (Pingora's own error
/// answers) are swallowed so that the loop can answer in JSON instead.
#[derive(Debug)]
pub(crate) struct GuardedIo {
    inner: Option<Stream>,
    guard: Arc<ConnGuard>,
    cap: usize,
    /// The start of the next request, read by [`GuardedIo::poll_prefetch`] and
    /// handed to Pingora as the session's first bytes (already counted as header
    /// bytes): by [`GuardedIo::take_prefetched`], else by the next reads.
    prefetched: Option<BytesMut>,
}

/// The most a prefetch reads: a typical request header in one read, as Pingora's
/// own first read (4 KiB); the rest is read by Pingora.
const PREFETCH_BYTES: usize = 4096;

impl GuardedIo {
    /// Guards `inner` with `guard`; a request header may have at most `cap` bytes.
    pub(super) fn new(inner: Stream, guard: Arc<ConnGuard>, cap: usize) -> Self {
        GuardedIo {
            inner: Some(inner),
            guard,
            cap,
            prefetched: None,
        }
    }

    /// Waits until the client sends the first bytes of its next request and keeps
    /// them for Pingora; `false` when the client closed the connection instead.
    ///
    /// The bytes are read into a buffer on this poll's stack and copied out only
    /// once they arrive, so that a waiting connection holds no read buffer.
    pub(super) fn poll_prefetch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        // Uninitialised: zeroing 4 KiB on every poll would cost more than the read.
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); PREFETCH_BYTES];
        let mut read = ReadBuf::uninit(&mut scratch);
        std::task::ready!(Pin::new(&mut *self).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Ok(false));
        }
        as_http11(read.filled_mut());
        // Sized to what arrived: it becomes the buffer the request header is parsed
        // (and kept) in, see `take_prefetched`.
        self.prefetched = Some(BytesMut::from(read.filled()));
        Poll::Ready(Ok(true))
    }

    /// The prefetched start of the next request, for the session to parse first
    /// (`set_pipelined_prefix`). Pingora's own first read would allocate a 4 KiB
    /// buffer and keep it, whole, for the life of the request (the header's values
    /// point into it): with this one, a request that arrived in one read keeps a
    /// buffer of its own size, which for a task waiting for a slot is most of 4 KiB.
    pub(super) fn take_prefetched(&mut self) -> Option<BytesMut> {
        self.prefetched.take()
    }

    fn inner(&mut self) -> &mut Stream {
        self.inner
            .as_mut()
            .expect("the stream is only taken on drop")
    }

    fn passthrough(&self) -> bool {
        self.guard.phase() == Phase::Body
    }
}

/// Reads a request line's `HTTP/1.2`…`HTTP/1.9` as `HTTP/1.1`, in place: a 1.x
/// server answers a later 1.x minor version as the highest it implements (RFC 9110
/// §2.5, as nginx does), where Pingora's parser refuses anything but 1.0 and 1.1.
/// Only a request line that arrived whole in `head` is touched.
fn as_http11(head: &mut [u8]) {
    let Some(mut end) = head.iter().position(|&b| b == b'\n') else {
        return;
    };
    if end > 0 && head[end - 1] == b'\r' {
        end -= 1;
    }
    // " HTTP/1.x": the version and the space before it.
    let Some(start) = end.checked_sub(9) else {
        return;
    };
    let tail = &mut head[start..end];
    if tail.starts_with(b" HTTP/1.") && (b'2'..=b'9').contains(&tail[8]) {
        tail[8] = b'1';
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
        if let Some(ahead) = this.prefetched.as_mut() {
            let n = ahead.len().min(buf.remaining());
            buf.put_slice(&ahead.split_to(n));
            if ahead.is_empty() {
                this.prefetched = None;
            }
            return Poll::Ready(Ok(()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_later_http1_minor_version_is_read_as_1_1() {
        let read = |line: &str| {
            let mut bytes = line.as_bytes().to_vec();
            as_http11(&mut bytes);
            String::from_utf8(bytes).unwrap()
        };
        assert_eq!(
            read("GET / HTTP/1.2\r\nHost: x\r\n"),
            "GET / HTTP/1.1\r\nHost: x\r\n"
        );
        assert_eq!(read("GET / HTTP/1.9\n"), "GET / HTTP/1.1\n");
        for same in [
            "GET / HTTP/1.0\r\n",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/2.0\r\n",
        ] {
            assert_eq!(read(same), same);
        }
        // A request line not yet whole, and a header that merely ends like one.
        assert_eq!(read("GET / HTTP/1.2"), "GET / HTTP/1.2");
        assert_eq!(
            read("GET / HTTP/1.1\r\nX: HTTP/1.2\r\n"),
            "GET / HTTP/1.1\r\nX: HTTP/1.2\r\n"
        );
    }

    /// A guarded server-side socket and the client end of its connection.
    async fn pair(cap: usize) -> (GuardedIo, Arc<ConnGuard>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        let guard = Arc::new(ConnGuard::new());
        (GuardedIo::new(stream, guard.clone(), cap), guard, client)
    }

    #[tokio::test]
    async fn bytes_read_ahead_are_handed_on_once_and_counted_once() {
        let (mut io, guard, mut client) = pair(16 * 1024).await;
        guard.begin(Phase::Idle);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let arrived = std::future::poll_fn(|cx| io.poll_prefetch(cx)).await;
        assert!(arrived.unwrap());
        // The first byte moved the connection from idle to reading a header.
        assert_eq!(guard.phase(), Phase::Header);
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 27 {
            let mut buf = [0u8; 64];
            let n = io.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            guard.state.lock().bytes,
            27,
            "each header byte counted once"
        );
    }

    #[tokio::test]
    async fn a_close_while_waiting_is_reported_and_a_small_cap_is_kept() {
        let (mut io, guard, client) = pair(16 * 1024).await;
        guard.begin(Phase::Idle);
        drop(client);
        let arrived = std::future::poll_fn(|cx| io.poll_prefetch(cx)).await;
        assert!(!arrived.unwrap(), "end of stream, not a request");

        // A read-ahead never takes more than the header may still use.
        let (mut io, guard, mut client) = pair(8).await;
        guard.begin(Phase::Idle);
        client.write_all(b"GET /0123456789").await.unwrap();
        let arrived = std::future::poll_fn(|cx| io.poll_prefetch(cx)).await;
        assert!(arrived.unwrap());
        assert_eq!(guard.state.lock().bytes, 8);
        assert_eq!(io.prefetched.as_deref(), Some(&b"GET /012"[..]));
    }
}

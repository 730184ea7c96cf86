//! A TCP listener for `axum::serve` whose accepted connections can all be cut
//! at once, so that shutting a simulated Worker down looks like a crash.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::faults::FaultCell;

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    killed: bool,
    /// A duplicate handle of every open connection's socket.
    conns: HashMap<u64, std::net::TcpStream>,
}

/// The set of open connections of one simulated Worker.
#[derive(Default)]
pub(crate) struct ConnRegistry {
    inner: Mutex<RegistryInner>,
}

impl ConnRegistry {
    /// Shuts every open connection down (both directions) and makes any
    /// connection registered later fail at once.
    pub(crate) fn kill_all(&self) {
        let conns: Vec<std::net::TcpStream> = {
            let mut inner = self.inner.lock();
            inner.killed = true;
            inner.conns.drain().map(|(_, s)| s).collect()
        };
        for conn in conns {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    fn register(self: &Arc<Self>, stream: TcpStream) -> io::Result<TrackedStream> {
        let std_stream = stream.into_std()?;
        let dup = std_stream.try_clone()?;
        let stream = TcpStream::from_std(std_stream)?;
        let _ = stream.set_nodelay(true);
        let mut inner = self.inner.lock();
        if inner.killed {
            let _ = dup.shutdown(Shutdown::Both);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "worker is shut down",
            ));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.conns.insert(id, dup);
        Ok(TrackedStream {
            inner: stream,
            id,
            registry: Arc::clone(self),
            faults: None,
            interim: None,
        })
    }

    fn forget(&self, id: u64) {
        self.inner.lock().conns.remove(&id);
    }
}

/// A listener whose connections are recorded in a [`ConnRegistry`].
pub(crate) struct TrackedListener {
    listener: TcpListener,
    registry: Arc<ConnRegistry>,
    faults: Option<Arc<FaultCell>>,
}

impl TrackedListener {
    /// Wraps a bound listener; `faults` lets its connections inject interim answers.
    pub(crate) fn new(
        listener: TcpListener,
        registry: Arc<ConnRegistry>,
        faults: Option<Arc<FaultCell>>,
    ) -> Self {
        TrackedListener {
            listener,
            registry,
            faults,
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match self.registry.register(stream) {
                    Ok(mut tracked) => {
                        tracked.faults = self.faults.clone();
                        return (tracked, addr);
                    }
                    Err(e) => log::debug!("sim: dropping connection from {addr}: {e}"),
                },
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Typically too many open files: back off instead of spinning.
                    log::error!("sim: accept error: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted connection that leaves the registry when dropped.
pub(crate) struct TrackedStream {
    inner: TcpStream,
    id: u64,
    registry: Arc<ConnRegistry>,
    faults: Option<Arc<FaultCell>>,
    /// An interim answer still to be written before the next response bytes.
    interim: Option<Bytes>,
}

impl TrackedStream {
    /// Writes what is left of a pending interim answer; ready once none is left.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(pending) = self.interim.as_mut() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            pending.advance(n);
            if pending.is_empty() {
                self.interim = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.registry.forget(self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if let Some(faults) = &self.faults {
            // A request's first read starts with its request line (the load balancer
            // waits for each answer before it sends the next request).
            if let Some(interim) = faults.interim_for(&buf.filled()[before..]) {
                self.interim = Some(interim);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_interim(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

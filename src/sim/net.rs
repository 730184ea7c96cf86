//! A TCP listener for `axum::serve` whose accepted connections can all be cut
//! at once, so that shutting a simulated Worker down looks like a crash.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

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
}

impl TrackedListener {
    /// Wraps a bound listener.
    pub(crate) fn new(listener: TcpListener, registry: Arc<ConnRegistry>) -> Self {
        TrackedListener { listener, registry }
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
                    Ok(tracked) => return (tracked, addr),
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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

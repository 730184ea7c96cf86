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

pub(crate) mod framing;
mod io;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use io::{header_read, ConnHandle, GuardedIo};
use io::{ConnGuard, HeaderDone, Phase};

use crate::config::client::ClientLimits;
use crate::drain::{ActiveTask, Drain};
use crate::metrics::METRICS;

/// How long the LB tries to deliver its own refusal before closing anyway.
const REFUSAL_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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
pub(crate) struct GuardedApp<A> {
    inner: Arc<A>,
    limits: ClientLimits,
    /// `service` label of the responses counted here (`client`, `admin`).
    service: &'static str,
    /// Counts connections with a request in progress, so that the drain does not
    /// end the process under a request it has accepted but not yet routed.
    drain: Arc<Drain>,
    /// Set, and its waiters woken, when the service shuts down: connections waiting
    /// for their next request close once [`ClientLimits::shutdown_idle`] has passed.
    closing: AtomicBool,
    /// When shutdown began.
    closing_since: std::sync::OnceLock<Instant>,
    closed: Notify,
}

impl<A> GuardedApp<A> {
    /// Serves `inner` with `limits` on every connection; refusals are counted in
    /// `http_responses` under `service` with route `refused`. A connection counts
    /// in `drain` from accept (or a later request's first byte) until its answer
    /// is sent.
    pub(crate) fn new(
        inner: A,
        limits: ClientLimits,
        service: &'static str,
        drain: Arc<Drain>,
    ) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            limits,
            service,
            drain,
            closing: AtomicBool::new(false),
            closing_since: std::sync::OnceLock::new(),
            closed: Notify::new(),
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
        mut io: Box<GuardedIo>,
        persisted: Option<HttpPersistentSettings>,
        guard: &Arc<ConnGuard>,
        shutdown: &ShutdownWatch,
    ) -> ServerSession {
        let prefetched = io.take_prefetched();
        let mut session = ServerSession::new_http1(io);
        if let Some(head) = prefetched {
            // Only read ahead when no pipelined prefix was kept (`process_new`), so
            // this is the session's only prefix.
            session.set_pipelined_prefix(head);
        }
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
        // A small body left unread by an early answer is discarded within this.
        session.set_total_drain_timeout(Some(self.limits.body_timeout));
        session.set_write_timeout(Some(self.limits.send_timeout));
        // Answer pipelined requests in order instead of dropping all but the first.
        session.set_pipelining_enabled(true);
        session.set_connection_user_context(Some(Box::new(HeaderDone(guard.clone()))));
        session
    }

    /// When the current phase must end: `Ok(None)` for no limit (the proxy's own
    /// timeouts apply), `Err` when the header already outgrew the cap.
    fn deadline<T>(&self, guard: &ConnGuard) -> Result<Option<Instant>, Verdict<T>> {
        let s = guard.state.lock();
        match guard.phase() {
            Phase::Idle => Ok(Some(s.since + self.limits.idle_timeout)),
            Phase::Header => Ok(s.first_byte.map(|t| t + self.limits.header_timeout)),
            Phase::Body => Ok(None),
            Phase::TooLarge => Err(Verdict::TooLarge),
        }
    }

    /// Waits for the first bytes of the connection's next request before Pingora
    /// builds a session and its request future for it (together about 20 KiB):
    /// until then an idle connection holds only its socket and this loop. Ends the
    /// connection when the idle or header deadline passes, the client closes, or
    /// [`ClientLimits::shutdown_idle`] after the service began to shut down.
    ///
    /// The shutdown window is for proxies in front that keep connections alive: one
    /// may be sending a request on this connection right now, and closing it would
    /// fail that request (nginx and Caddy never resend a `POST`). A request that
    /// arrives in the window is served, with `Connection: close`.
    async fn await_request<T>(
        &self,
        mut io: Box<GuardedIo>,
        guard: &ConnGuard,
    ) -> Result<Box<GuardedIo>, Verdict<T>> {
        let closed = self.closed.notified();
        let by = self.deadline(guard)?;
        let window_over = async {
            if !self.closing.load(Ordering::Acquire) {
                closed.await;
            }
            let since = self
                .closing_since
                .get()
                .copied()
                .unwrap_or_else(Instant::now);
            tokio::time::sleep_until(since + self.limits.shutdown_idle).await;
        };
        tokio::select! {
            biased;
            arrived = std::future::poll_fn(|cx| io.poll_prefetch(cx)) => match arrived {
                Ok(true) => Ok(io),
                Ok(false) | Err(_) => Err(Verdict::Done(None)),
            },
            _ = window_over => Err(Verdict::Done(None)),
            _ = crate::limit::sleep_until(by) => Err(Verdict::Expired(guard.phase())),
        }
    }

    /// Closes a connection the way nginx's lingering close does: the write side is
    /// shut (the client sees the end of the answer), then what the client still sends
    /// is read and discarded until it closes, pauses for
    /// [`ClientLimits::lingering_timeout`], [`ClientLimits::lingering_time`] passes,
    /// or the service shuts down. Closing with unread input would send a reset, and
    /// a client still writing its body would lose the answer (a `413`, a `401`).
    async fn linger(&self, mut stream: Stream) {
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.shutdown()).await;
        let closed = self.closed.notified();
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let discard = async {
            let mut sink = vec![0u8; 16 * 1024];
            loop {
                match tokio::time::timeout(self.limits.lingering_timeout, stream.read(&mut sink))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => METRICS.lingering_bytes.inc_by(n as u64),
                    _ => return,
                }
            }
        };
        tokio::select! {
            _ = discard => {}
            _ = closed => {}
            _ = tokio::time::sleep(self.limits.lingering_time) => {}
        }
    }

    /// Ends a connection: writes the `refusal` if there is one, then closes it,
    /// lingering when the client may still be writing (`linger`).
    async fn close(
        &self,
        mut stream: Stream,
        refusal: Option<(u16, &'static str)>,
        linger: bool,
        busy: Option<ActiveTask>,
    ) {
        if let Some((status, message)) = refusal {
            log::debug!("client connection refused before routing: {status} {message}");
            METRICS
                .http_responses
                .with_label_values(&[self.service, "refused", &status.to_string()])
                .inc();
            let answer = refusal_bytes(status, message);
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                stream.write_all(&answer).await?;
                stream.flush().await
            })
            .await;
        }
        if linger {
            // The answer is sent: the connection no longer holds up a drain.
            drop(busy);
            self.linger(stream).await;
        } else {
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.shutdown()).await;
        }
    }

    /// Runs one request through Pingora, stopping it if its header phase overruns.
    ///
    /// `work` is Pingora's request future, made by the caller: a session passed in
    /// here would keep its 680 bytes in this future for as long as the request lasts
    /// (a task waiting for a slot), though Pingora has moved it to its own.
    async fn one_request(
        &self,
        mut work: RequestWork<'_>,
        guard: &ConnGuard,
        busy: &mut Option<ActiveTask>,
    ) -> Verdict<pingora::apps::ReusedHttpStream> {
        loop {
            if busy.is_none() && guard.phase() != Phase::Idle {
                // The next request's first byte: it counts until it is answered.
                *busy = Some(self.drain.track());
            }
            // Read once `work` has been polled: a header that came whole has ended its
            // phase by then, and no timer is armed for it.
            let expiry = async {
                match self.deadline(guard) {
                    Ok(by) => {
                        crate::limit::sleep_until(by).await;
                        Verdict::Expired(guard.phase())
                    }
                    Err(verdict) => verdict,
                }
            };
            tokio::select! {
                biased;
                r = &mut work => return Verdict::Done(r),
                _ = guard.changed.notified() => {}
                verdict = expiry => return verdict,
            }
        }
    }
}

/// Pingora's future for one request (`HttpServerApp::process_new_http`).
type RequestWork<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<pingora::apps::ReusedHttpStream>> + Send + 'a>,
>;

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.drain.track_connection();
        let guard = Arc::new(ConnGuard::new());
        let mut io = Box::new(GuardedIo::new(
            stream,
            guard.clone(),
            self.limits.max_header_bytes,
        ));
        let mut persisted = None;
        let mut phase = Phase::Header;
        // A new connection counts at once: its request is on the way.
        let mut busy = Some(self.drain.track());
        loop {
            guard.begin(phase);
            // A pipelined request already read is parsed at once, without waiting.
            let buffered = persisted
                .as_ref()
                .is_some_and(HttpPersistentSettings::has_pipelined_prefix);
            let arrived = if buffered {
                Ok(io)
            } else {
                self.await_request(io, &guard).await
            };
            let verdict = match arrived {
                Ok(arrived) => {
                    let session = self.session(arrived, persisted, &guard, shutdown);
                    let work = self.inner.process_new_http(session, shutdown);
                    self.one_request(work, &guard, &mut busy).await
                }
                Err(ended) => ended,
            };
            // The request future is gone: a socket Pingora dropped is back in `orphan`.
            // Only where the client may still be writing: a header too large, or a
            // request answered before its body was read to the end.
            let linger = match verdict {
                Verdict::TooLarge => true,
                Verdict::Done(None) => {
                    guard.state.lock().refused.is_some()
                        || guard.body_unread.load(Ordering::Acquire)
                }
                _ => false,
            };
            let refusal = match verdict {
                Verdict::Done(Some(reused)) => {
                    let (stream, settings) = reused.consume();
                    // The session hands back the socket it was given: our GuardedIo.
                    let Ok(guarded) = stream.into_any().downcast::<GuardedIo>() else {
                        return None;
                    };
                    io = guarded;
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
            let stream = orphan?;
            // Boxed: the connection's end is rare, and its states (timers, the stream,
            // the lingering read) would otherwise size every connection's future
            // while it waits for its request or its task.
            Box::pin(self.close(stream, refusal, linger, busy)).await;
            return None;
        }
    }

    async fn cleanup(&self) {
        let _ = self.closing_since.set(Instant::now());
        self.closing.store(true, Ordering::Release);
        self.closed.notify_waiters();
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

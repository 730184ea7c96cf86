//! The access log (`logging.access_log`): one JSON line per request, on both ports,
//! written off the data path.
//!
//! A request's line is queued to a writer on its own thread through a bounded
//! channel: a slow disk never holds a task up; when the queue is full the line is
//! dropped and counted (`andera_lb_access_log_dropped_total`), as Envoy's access
//! loggers do. A file is appended to and reopened on SIGUSR1 (logrotate's
//! `postrotate`), or by itself when the path no longer names the open file
//! (logrotate's rename, `rm`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};

use crate::app::{App, RequestCtx};
use crate::config::AccessLogTarget;
use crate::metrics::METRICS;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// How often the writer flushes and checks whether the file was renamed.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The sending side, held by the services.
pub(crate) struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    reopen: Arc<AtomicBool>,
}

/// The writing side, run by [`AccessLogService`].
pub(crate) struct AccessLogWriter {
    rx: Receiver<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    target: AccessLogTarget,
}

/// Opens `target` once (so that a path that cannot be written stops start-up with
/// its reason) and returns both sides of the log.
pub(crate) fn open(target: &AccessLogTarget) -> io::Result<(AccessLog, AccessLogWriter)> {
    if let AccessLogTarget::File(path) = target {
        open_file(path)?;
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    let reopen = Arc::new(AtomicBool::new(false));
    Ok((
        AccessLog {
            tx,
            reopen: reopen.clone(),
        },
        AccessLogWriter {
            rx,
            reopen,
            target: target.clone(),
        },
    ))
}

fn open_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl AccessLog {
    /// Queues one line (a newline is added); drops it, counted, when the writer is
    /// behind.
    pub(crate) fn write(&self, mut line: Vec<u8>) {
        line.push(b'\n');
        if self.tx.try_send(line).is_err() {
            METRICS.access_log_dropped.inc();
        }
    }

    /// Asks the writer to reopen its file (SIGUSR1).
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

/// Where the writer writes, with what identifies the file it opened.
enum Sink {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    File {
        path: PathBuf,
        out: io::BufWriter<File>,
        id: Option<(u64, u64)>,
    },
}

/// The file's device and inode.
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Sink> {
        Ok(match target {
            AccessLogTarget::Stdout => Sink::Stdout(io::stdout()),
            AccessLogTarget::Stderr => Sink::Stderr(io::stderr()),
            AccessLogTarget::File(path) => {
                let file = open_file(path)?;
                let id = file.metadata().ok().map(|m| file_id(&m));
                Sink::File {
                    path: path.clone(),
                    out: io::BufWriter::with_capacity(64 * 1024, file),
                    id,
                }
            }
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(s) => s,
            Sink::Stderr(s) => s,
            Sink::File { out, .. } => out,
        }
    }

    /// True when the path no longer names the file this sink writes (renamed or
    /// removed by a rotation).
    fn moved(&self) -> bool {
        match self {
            Sink::File { path, id, .. } => std::fs::metadata(path).ok().map(|m| file_id(&m)) != *id,
            _ => false,
        }
    }
}

impl AccessLogWriter {
    /// Writes lines until every [`AccessLog`] is gone (blocking: runs on its own
    /// thread).
    fn run(self) {
        let mut sink = match Sink::open(&self.target) {
            Ok(s) => s,
            Err(e) => {
                log::error!("access log: cannot open it: {e}; no access log is written");
                return;
            }
        };
        let mut flushed = std::time::Instant::now();
        loop {
            match self.rx.recv_timeout(CHECK_EVERY) {
                Ok(line) => {
                    if let Err(e) = sink.out().write_all(&line) {
                        log::warn!("access log: write failed: {e}");
                    }
                    // Under steady traffic the channel is never idle: flush on time too.
                    if flushed.elapsed() < CHECK_EVERY {
                        continue;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = sink.out().flush();
                    return;
                }
            }
            let _ = sink.out().flush();
            flushed = std::time::Instant::now();
            if self.reopen.swap(false, Ordering::Relaxed) || sink.moved() {
                match Sink::open(&self.target) {
                    Ok(reopened) => sink = reopened,
                    Err(e) => log::warn!("access log: cannot reopen it: {e}"),
                }
            }
        }
    }
}

/// Runs the writer on a blocking thread (started after Pingora daemonizes), and
/// turns SIGUSR1 into a reopen.
pub(crate) struct AccessLogService {
    /// The writing side, taken when the service starts.
    pub writer: parking_lot::Mutex<Option<AccessLogWriter>>,
    /// Shared state (its [`App::access_log`] is reopened on SIGUSR1).
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for AccessLogService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(writer) = self.writer.lock().take() else {
            return;
        };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run());
        if let Err(e) = thread {
            log::error!("access log: cannot start its writer: {e}");
            return;
        }
        let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        else {
            log::warn!("access log: SIGUSR1 cannot be handled; the file is still followed");
            return;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    if let Some(log) = self.app.access_log() {
                        log.reopen();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not a trusted proxy (else
/// `X-Real-IP`), as nginx's `real_ip` module with `real_ip_recursive on` reads it.
pub(crate) fn remote_addr(session: &Session, trusted: &[ipnet::IpNet]) -> Option<String> {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let Some(peer) = peer else {
        return session.client_addr().map(|a| a.to_string());
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer.to_string());
    }
    let headers = &session.req_header().headers;
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    if let Some(client) = forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        return Some(client.to_string());
    }
    if let Some(first) = forwarded.first() {
        return Some(first.to_string());
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
        .or(Some(peer.to_string()))
}

/// The trace id of the client's W3C `traceparent`, if it sent a valid one (the
/// trace id of a request that is not a traced task).
fn trace_id(session: &Session) -> Option<String> {
    let value = session
        .req_header()
        .headers
        .get("traceparent")?
        .to_str()
        .ok()?;
    let id = value.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Writes the access log line of the request that just ended, when the access log
/// is on. Task fields come from the task's board record.
pub(crate) fn log_request(app: &App, session: &Session, ctx: &RequestCtx, service: &'static str) {
    let Some(log) = app.access_log() else {
        return;
    };
    let req = session.req_header();
    let duration_ms = ctx
        .started
        .map(|t| (t.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0);
    let task = ctx.task_id.as_deref().and_then(|id| {
        app.board().read(id, |r| {
            json!({
                "group": r.group(), "function": r.function(), "mode": r.mode(),
                "priority": r.priority(), "worker": r.worker(), "attempts": r.attempts(),
                "queue_ms": r.queue_ms(), "reason": r.outcome(),
            })
        })
    });
    let field = |name: &str| task.as_ref().map_or(Value::Null, |t| t[name].clone());
    // The reason the balancer answered with (its `x-andera-reason`), else the task's
    // outcome, else the route of a failed request.
    let answered = session
        .response_written()
        .and_then(|h| h.headers.get("x-andera-reason"))
        .and_then(|v| v.to_str().ok())
        .map(|r| json!(r));
    let reason = match (answered, field("reason")) {
        (Some(r), _) => r,
        (None, Value::Null) if ctx.status >= 400 => json!(ctx.route),
        (None, r) => r,
    };
    let line = json!({
        "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "service": service,
        "task_id": ctx.task_id,
        "client": ctx.client.as_deref(),
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "status": ctx.status,
        "reason": reason,
        "group": field("group"),
        "function": field("function"),
        "mode": field("mode"),
        "priority": field("priority"),
        "queue_ms": field("queue_ms"),
        "duration_ms": duration_ms,
        "worker": field("worker"),
        "attempts": field("attempts"),
        "bytes_in": session.as_downstream().body_bytes_read(),
        "bytes_out": session.body_bytes_sent(),
        "remote_addr": remote_addr(session, &app.settings().client.trusted_proxies),
        "trace_id": ctx.trace_id.clone().or_else(|| trace_id(session)),
    });
    log.write(serde_json::to_vec(&line).unwrap_or_default());
}

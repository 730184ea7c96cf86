//! Webhook tasks: answered "accepted" at once, then run in the background. With a
//! task journal they are written to it before the answer, marked dispatched before
//! they are sent, forgotten when they end, and resumed by whichever instance
//! claims them after a crash, a restart or an upgrade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;
use tokio::time::Instant;

use super::task::{admit, queue_ms, Outcome};
use crate::app::{App, RequestCtx};
use crate::board::{TaskHandle, TaskState};
use crate::dispatch::{Delivery, DispatchGate, ForwardHeaders, Outbound, TaskError};
use crate::journal::{
    ClaimKind, Claimed, Detail, DispatchMark, Journal, JournalError, Location, RedisJournal,
    SqliteJournal, StoredTask, JOURNAL_METRICS,
};
use crate::reason::Reason;
use crate::respond;
use crate::scheduler::Acquire;
use crate::task::{self, TaskSpec};

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the client port needs to accept a webhook task.
pub(super) struct Accepted {
    pub record: TaskHandle,
    pub spec: TaskSpec,
    pub admission: Acquire,
    pub headers: ForwardHeaders,
    pub body: Bytes,
    pub deadline: Instant,
    /// Fired by `DELETE /task/{id}`.
    pub cancel: crate::cancel::CancelGuard,
    /// Its `Idempotency-Key`, kept once the task is accepted.
    pub idempotency: Option<crate::idempotency::Claim>,
}

/// Longest a webhook task waits for the journal to open at start-up before it is
/// refused with 503 (opening takes milliseconds; a slow disk may take longer).
const JOURNAL_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the task (in the journal when there is one), starts it in the background,
/// and answers the client. A task the journal cannot keep is refused with 503.
pub(super) async fn accept(
    app: &Arc<App>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut task: Accepted,
) -> Result<()> {
    let task_id = task.record.id();
    let journal = match &app.settings().tasks.journal {
        None => None,
        Some(location) => match app.journal_within(JOURNAL_OPEN_WAIT).await {
            Some(j) => Some(j),
            None => {
                let e = JournalError::Unavailable(Detail::new(format!(
                    "task journal {location} is not open"
                )));
                return refuse(app, session, ctx, &task, &e).await;
            }
        },
    };
    if let Some(journal) = &journal {
        let now = SystemTime::now();
        let left = task.deadline.saturating_duration_since(Instant::now());
        let stored = StoredTask {
            id: task_id.clone(),
            priority: task.spec.priority,
            accepted_ms: unix_ms(now),
            deadline_ms: unix_ms(now + left),
            headers: task.headers.to_block(),
            body: task.body.to_vec(),
            client: ctx.client.as_deref().map(str::to_string),
            idempotency: task.idempotency.as_ref().map(|c| {
                let (key, body) = c.digests();
                let expires_ms = unix_ms(now + app.idempotency().ttl());
                crate::journal::StoredKey {
                    key,
                    body,
                    expires_ms,
                }
            }),
        };
        if let Err(e) = journal.accept(stored).await {
            return refuse(app, session, ctx, &task, &e).await;
        }
    }
    // Repeats of its Idempotency-Key get this answer from now on.
    if let Some(claim) = task.idempotency.take() {
        claim.accepted();
    }
    match journal {
        Some(j) if j.is_shared_queue() => {
            // Whichever instance has room takes it from the shared queue (this one
            // too): holding the slot here would make it run where it was accepted.
            drop(task.admission);
            let why = "queued in Redis for the first instance with room";
            task.record
                .set_aside(TaskState::HandedOver, "shared_queue", Some(why.into()));
        }
        journal => {
            // The drain waits for the runner, not for this request, which ends now.
            let runner = run(app.clone(), task, journal, app.drain().track());
            tokio::spawn(runner);
        }
    }
    ctx.status = 200;
    let accepted =
        json!({"success": true, "message": "Task accepted, result will be sent to webhook"});
    let extra = [
        queue_ms(app.board(), &task_id),
        ("x-andera-task-id", task_id),
    ];
    respond::json(session, 200, &accepted, &extra).await
}

/// Refuses a webhook task the journal cannot keep: `503` JSON with the journal's
/// `reason` (`journal_full` or `journal_unavailable`) beside the `error`.
async fn refuse(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    task: &Accepted,
    e: &JournalError,
) -> Result<()> {
    let error = TaskError::NotKept(e.to_string());
    let message = error.message();
    log::warn!("webhook task {} refused (503): {message}", task.record.id());
    let outcome = Outcome::failed(&error, message.clone());
    task.record.close(app.board(), &task.spec, outcome);
    ctx.status = 503;
    let reason = journal_reason(e);
    let task_id = task.record.id();
    let extra = [
        queue_ms(app.board(), &task_id),
        ("x-andera-task-id", task_id),
    ];
    respond::refuse(session, 503, reason, &message, &extra).await
}

/// The reason of a journal's refusal: it is full, or it cannot keep tasks now.
fn journal_reason(e: &JournalError) -> Reason {
    match e {
        JournalError::Full(_) => Reason::JournalFull,
        _ => Reason::JournalUnavailable,
    }
}

/// How much of a Worker's refusal is kept for the failure notice.
const NOTICE_BYTES: usize = 4096;

/// The failure notice for a Worker's refusal: its own `error` when it gave one.
fn refusal_message(status: u16, answer: &[u8]) -> String {
    let error = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    match error {
        _ if status == 401 => super::task::WORKER_KEY_REJECTED.to_string(),
        Some(e) => format!("Worker refused the task ({status}): {e}"),
        None => format!("Worker refused the task ({status})"),
    }
}

/// First and longest wait between tries of a dispatch mark that failed.
const MARK_RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// The journal's dispatch mark, awaited holding the slot right before the first
/// send. A task is never sent unmarked: a mark that cannot be written (disk full,
/// Redis unreachable) is tried again with back-off until the task's deadline, and
/// the task then fails without having been sent.
fn journal_gate<'a>(
    journal: &'a Journal,
    id: &'a str,
    deadline: Instant,
    entered: &'a AtomicBool,
) -> DispatchGate<'a> {
    Box::pin(async move {
        entered.store(true, Ordering::Release);
        let mut wait = MARK_RETRY.0;
        let mut tries = 0u32;
        loop {
            let error = match journal.dispatch(id).await {
                Ok(DispatchMark::Go) => return Ok(()),
                Ok(DispatchMark::HandedOver) => return Err(TaskError::HandedOver),
                Err(e) => e,
            };
            tries += 1;
            if tries == 1 {
                log::warn!("task {id}: cannot mark dispatched in the journal ({error}); not sent, trying again");
            }
            if Instant::now() + wait >= deadline {
                let why = format!("not sent: its dispatch mark could not be written ({error})");
                return Err(TaskError::NotKept(why));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MARK_RETRY.1);
        }
    })
}

/// Runs a webhook task to its end, counted by the drain (`_active`) like a client's task.
async fn run(
    app: Arc<App>,
    task: Accepted,
    journal: Option<Arc<Journal>>,
    _active: crate::drain::ActiveTask,
) {
    let Accepted {
        record,
        spec,
        admission,
        headers,
        body,
        deadline,
        cancel,
        idempotency: _,
    } = task;
    let task_id = record.id();
    let entered = AtomicBool::new(false);
    let gate = journal
        .as_deref()
        .map(|j| journal_gate(j, &task_id, deadline, &entered));
    let outbound = Outbound {
        spec: &spec,
        headers: &headers,
        body: &body,
        deadline,
        task: &record,
    };
    let delivery = app.dispatcher().deliver(outbound, admission, gate);
    tokio::pin!(delivery);
    let released = async {
        match &journal {
            Some(j) => j.released().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(released);
    let mut release_seen = false;
    let delivery = loop {
        tokio::select! {
            d = &mut delivery => break d,
            _ = app.drain().aborted() => break Err(TaskError::ShuttingDown),
            _ = cancel.cancelled() => {
                crate::routes::task_control::record_cancelled(&app, &record, &spec);
                if let Some(j) = &journal {
                    j.finish(&task_id);
                }
                return;
            }
            _ = &mut released, if !release_seen => {
                release_seen = true;
                // Once the dispatch mark is under way, the journal decides.
                if !entered.load(Ordering::Acquire) {
                    break Err(TaskError::HandedOver);
                }
            }
        }
    };
    // Boxed: its states would otherwise size a webhook task that waits for a slot.
    Box::pin(settle(
        &app,
        &record,
        &spec,
        &body,
        journal.as_deref(),
        delivery,
    ))
    .await;
}

/// Ends a webhook task once its delivery has: handed over, failed (with a failure
/// notice) or answered by the Worker (read to its end; a refusal gets a notice too).
async fn settle(
    app: &App,
    record: &TaskHandle,
    spec: &TaskSpec,
    body: &Bytes,
    journal: Option<&Journal>,
    delivery: Result<Delivery<'_>, TaskError>,
) {
    let task_id = record.id();
    let done = |outcome: &str| {
        if let Some(j) = &journal {
            j.finish(&task_id);
        }
        log::debug!("webhook task {task_id} ended: {outcome}");
    };
    match delivery {
        Err(TaskError::HandedOver) => {
            log::info!("webhook task {task_id} {}", handed_to(journal));
            record.set_aside(TaskState::HandedOver, "handed_over", None);
        }
        Err(TaskError::ShuttingDown) if journal.is_some() => {
            log::info!("webhook task {task_id} stays in the journal for the next instance");
            record.set_aside(TaskState::HandedOver, "handed_over", None);
        }
        Err(e) => {
            let message = e.message();
            log::warn!("webhook task {task_id} failed ({}): {message}", e.status());
            super::notify::failure(app, &task_id, body, &message, record.trace());
            record.close(app.board(), spec, Outcome::failed(&e, message));
            done(e.outcome());
        }
        Ok(mut delivery) => {
            let status = delivery.status();
            let mut failure = None;
            // The start of a refusal's body, for the failure notice.
            let mut answer = Vec::new();
            loop {
                match delivery.next_chunk().await {
                    Ok(Some(chunk)) => {
                        if status >= 400 && answer.len() < NOTICE_BYTES {
                            let room = NOTICE_BYTES - answer.len();
                            answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            log::info!(
                "webhook task {task_id} handed to {} ({status})",
                delivery.worker()
            );
            match failure {
                None => {
                    delivery.finish();
                    if status >= 400 {
                        // The Worker refused the task: it will not call the webhook.
                        let why = refusal_message(status, &answer);
                        super::notify::failure(app, &task_id, body, &why, record.trace());
                    }
                    record.close(app.board(), spec, Outcome::answered(status));
                }
                Some(e) => {
                    let worker = delivery.worker();
                    log::warn!("webhook task {task_id}: worker {worker} failed: {e}");
                    let why = "worker failed mid-response".to_string();
                    record.close(app.board(), spec, Outcome::cut(false, why));
                }
            }
            done("answered");
        }
    }
}

/// Where a task given up by this instance goes: to a live instance sharing the
/// journal (an upgrade's successor, a peer), or it stays for the next start.
fn handed_to(journal: Option<&Journal>) -> &'static str {
    match journal {
        Some(j) if j.is_shared_queue() => "given back to the shared queue for another instance",
        Some(j) if j.live_peers() > 0 => "handed over to another instance",
        _ => "stays in the journal for the next start",
    }
}

/// Takes up a task claimed from the journal: runs it, or records it as `unknown`.
async fn resume(app: &Arc<App>, journal: &Arc<Journal>, claimed: Claimed) {
    let Claimed { task, kind } = claimed;
    let spec = match task::parse(&task.body) {
        // The journaled body no longer carries `priority` (Workers never get it).
        Ok(s) => TaskSpec {
            priority: task.priority,
            ..s
        },
        Err(e) => {
            log::warn!(
                "journal: task {} has an invalid body ({e}); dropped",
                task.id
            );
            journal.finish(&task.id);
            return;
        }
    };
    let record = app.board().open(&task.id, &spec);
    if let Some(name) = &task.client {
        record.client(name);
    }
    if kind == ClaimKind::Unknown {
        JOURNAL_METRICS.unknown.inc();
        let why = "sent to a Worker by an instance that stopped before the answer: it may or may not have run";
        log::warn!("journal: task {} is unknown: {why}", task.id);
        record.set_aside(TaskState::Unknown, "unknown", Some(why.into()));
        return;
    }
    if kind != ClaimKind::Fresh {
        JOURNAL_METRICS.resumed.inc();
    }
    let now = unix_ms(SystemTime::now());
    let left = Duration::from_millis(task.deadline_ms.saturating_sub(now));
    let deadline = Instant::now() + left;
    let admission = if left.is_zero() {
        Err(TaskError::Timeout)
    } else {
        admit(app, &spec, deadline).await
    };
    let admission = match admission {
        Ok(a) => a,
        Err(e) => {
            let message = e.message();
            log::warn!(
                "journal: task {} failed ({}): {message}",
                task.id,
                e.status()
            );
            super::notify::failure(app, &task.id, &task.body, &message, record.trace());
            record.close(app.board(), &spec, Outcome::failed(&e, message));
            journal.finish(&task.id);
            return;
        }
    };
    if kind == ClaimKind::Fresh {
        log::debug!(
            "journal: webhook task {} taken from the shared queue",
            task.id
        );
    } else {
        log::info!(
            "journal: resuming webhook task {} (priority {}{})",
            task.id,
            spec.priority,
            if kind == ClaimKind::Redeliver {
                ", sent before but unconfirmed: redelivered"
            } else {
                ""
            }
        );
    }
    let accepted = Accepted {
        cancel: app
            .cancels()
            .register(&task.id, task.client.as_deref().map(Arc::from)),
        idempotency: None,
        headers: ForwardHeaders::from_block(&task.headers, app.settings().lb_key.expose()),
        body: Bytes::from(task.body),
        record,
        spec,
        admission,
        deadline,
    };
    accepted.cancel.waits_at(&accepted.admission);
    let active = app.drain().track();
    tokio::spawn(run(app.clone(), accepted, Some(journal.clone()), active));
}

/// Background service: opens the journal, then resumes what it claims until shutdown.
pub(crate) struct JournalService {
    /// Shared state.
    pub app: Arc<App>,
    /// Set by `--recover`: move an unreadable journal aside instead of refusing.
    pub recover: bool,
}

/// How many webhook tasks this instance can take from a shared queue now: its free
/// slots plus a small local queue; none without a usable Worker, nor once draining.
fn shared_capacity(app: &Arc<App>) -> crate::journal::streams::Capacity {
    let app = Arc::downgrade(app);
    Box::new(move || {
        let Some(app) = app.upgrade().filter(|a| !a.is_draining()) else {
            return 0;
        };
        app.scheduler().free_slots().map_or(0, |free| {
            free as usize + crate::journal::streams::LOCAL_QUEUE
        })
    })
}

/// Opens the configured journal.
async fn open(app: &Arc<App>, location: &Location, recover: bool) -> Result<Journal, JournalError> {
    let settings = app.settings();
    Ok(match location {
        Location::File(path) => Journal::Sqlite(SqliteJournal::open(
            path,
            settings.tasks.journal_max_bytes,
            recover,
            settings.tasks.redeliver_unconfirmed,
        )?),
        Location::Redis(url) => Journal::Redis(
            RedisJournal::open(
                url,
                settings.tasks.claim_idle,
                settings.tasks.redeliver_unconfirmed,
                shared_capacity(app),
            )
            .await?,
        ),
    })
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for JournalService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let app = &self.app;
        let Some(location) = &app.settings().tasks.journal else {
            return;
        };
        let journal = match open(app, location, self.recover).await {
            Ok(j) => Arc::new(j),
            Err(e) => {
                let hint = match (location, &e) {
                    (Location::File(_), JournalError::Open(_)) => {
                        " (start with --recover to move it aside)"
                    }
                    _ => "",
                };
                log::error!("{e}; refusing to run without it{hint}");
                eprintln!("andera-lb: {e}");
                std::process::exit(2);
            }
        };
        log::info!("task journal {location} open ({})", journal.engine());
        JOURNAL_METRICS
            .engine
            .with_label_values(&[journal.engine()])
            .set(1);
        crate::routes::idempotent::restore_keys(app, &journal);
        app.journal_is_open(journal.clone());
        loop {
            tokio::select! {
                claims = journal.next_claims() => {
                    for c in claims {
                        resume(app, &journal, c).await;
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_401_names_the_worker_key() {
        let m = refusal_message(401, br#"{"error":"Unauthorized"}"#);
        assert_eq!(m, super::super::task::WORKER_KEY_REJECTED);
        let m = refusal_message(400, br#"{"success":false,"error":"Contract mismatch"}"#);
        assert_eq!(m, "Worker refused the task (400): Contract mismatch");
    }
}

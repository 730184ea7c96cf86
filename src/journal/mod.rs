//! The webhook task journal: an accepted webhook task is kept before the client is
//! told "accepted", so that it survives a crash, a restart or an upgrade.
//!
//! Two engines sit behind [`Journal`], so that the data path does not care which
//! one is in use:
//! - [`sqlite`] (a file path): one host, one SQLite file in WAL mode; each task is
//!   run by the instance that accepted it, or claimed by another after a crash.
//! - [`streams`] (`redis://…`): several hosts share one queue in a Redis Stream with
//!   a consumer group; a task is run by whichever instance reads it first.

mod disk;
mod error;
mod handoff;
mod keys;
mod recreate;
pub mod sqlite;
mod state;
mod store;
pub mod streams;
mod upkeep;
mod wire;

use std::path::Path;
use std::sync::Arc;

pub use crate::config::journal::{redact, Location};
pub use error::{Detail, JournalError};
pub use sqlite::{SqliteJournal, HEARTBEAT, OWNER_STALE};
pub use state::{JournalHealth, JournalState};
pub use streams::{RedisJournal, SharedCancel, SharedTask};

/// The journal's Prometheus series (registered in the process registry).
pub struct JournalMetrics {
    /// Journal size: file (database + WAL) for SQLite, stream memory for Redis, bytes.
    pub bytes: prometheus::IntGauge,
    /// Webhook tasks in the journal (every instance's).
    pub tasks: prometheus::IntGauge,
    /// Tasks resumed from the journal (after a crash, restart or hand-over).
    pub resumed: prometheus::IntCounter,
    /// Tasks found sent but unconfirmed after their instance stopped.
    pub unknown: prometheus::IntCounter,
    /// Journal writes that failed (the task was refused, or sent unmarked).
    pub write_errors: prometheus::IntCounter,
    /// 1 for the engine in use (`engine` = `sqlite` or `redis`).
    pub engine: prometheus::IntGaugeVec,
    /// 1 for the journal's state now (`state` = `ok`, `full` or `unavailable`).
    pub state: prometheus::IntGaugeVec,
}

/// The journal's metrics.
pub static JOURNAL_METRICS: std::sync::LazyLock<JournalMetrics> = std::sync::LazyLock::new(|| {
    let r = &crate::metrics::METRICS.registry;
    let gauge = |name: &str, help: &str| {
        let g = prometheus::IntGauge::with_opts(
            prometheus::Opts::new(name, help).namespace("andera_lb"),
        )
        .expect("valid metric");
        r.register(Box::new(g.clone())).expect("unique metric");
        g
    };
    let counter = |name: &str, help: &str| {
        let c = prometheus::IntCounter::with_opts(
            prometheus::Opts::new(name, help).namespace("andera_lb"),
        )
        .expect("valid metric");
        r.register(Box::new(c.clone())).expect("unique metric");
        c
    };
    let engine = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "journal_engine",
            "The task journal engine in use (1 for the one in use).",
        )
        .namespace("andera_lb"),
        &["engine"],
    )
    .expect("valid metric");
    r.register(Box::new(engine.clone())).expect("unique metric");
    let state = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "journal_state",
            "The task journal's state (1 for the current one): ok, full (no room for new tasks) or unavailable (new tasks refused).",
        )
        .namespace("andera_lb"),
        &["state"],
    )
    .expect("valid metric");
    r.register(Box::new(state.clone())).expect("unique metric");
    JournalMetrics {
        bytes: gauge(
            "journal_bytes",
            "Task journal size: SQLite database and WAL on disk, or the Redis stream's memory, bytes.",
        ),
        tasks: gauge("journal_tasks", "Webhook tasks in the task journal."),
        resumed: counter("journal_resumed_total", "Webhook tasks resumed from the journal."),
        unknown: counter(
            "journal_unknown_total",
            "Webhook tasks sent by an instance that stopped before the answer (may or may not have run).",
        ),
        write_errors: counter("journal_write_errors_total", "Task journal writes that failed."),
        engine,
        state,
    }
});

/// What a dispatch mark found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchMark {
    /// The task is now `dispatched` by this instance: send it.
    Go,
    /// The task was handed to another instance (or is gone): do not send it.
    HandedOver,
}

/// An accepted webhook task as the journal keeps it. The LB key is not stored: it
/// is added again when the task is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTask {
    /// Task id (also the client's `x-andera-task-id`).
    pub id: String,
    /// Priority, 1 most urgent.
    pub priority: u32,
    /// When it was accepted, ms since the Unix epoch.
    pub accepted_ms: u64,
    /// When it times out, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// Headers to forward, as an HTTP/1 header block (`name: value\r\n`…).
    pub headers: Vec<u8>,
    /// The body to forward.
    pub body: Vec<u8>,
    /// The named client that sent it (`None` in journals written before clients
    /// were kept: such a task is visible to operator keys only).
    pub client: Option<String>,
    /// Its `Idempotency-Key`, kept (SQLite) until it expires, beyond the task.
    pub idempotency: Option<StoredKey>,
}

/// An accepted webhook task's `Idempotency-Key`, as digests (see `crate::idempotency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey {
    /// SHA-256 of the client's name and the key.
    pub key: [u8; 32],
    /// SHA-256 of the body the client sent.
    pub body: [u8; 32],
    /// When it is forgotten, ms since the Unix epoch.
    pub expires_ms: u64,
}

/// Who holds an `Idempotency-Key` in a journal shared by instances (Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHolder {
    /// Nobody did: the asking task takes it.
    Mine,
    /// Task (id) is being accepted under it.
    Pending(String),
    /// Task (id) was accepted under it.
    Accepted(String),
    /// Task (id) was sent under it with another body.
    OtherBody(String),
}

/// A kept `Idempotency-Key` read back at start-up, with its task's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredKey {
    /// The key.
    pub key: StoredKey,
    /// The task accepted under it.
    pub task_id: String,
}

/// How a claimed task came to this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// Read from the shared queue (Redis) as a new task: run it.
    Fresh,
    /// Never sent to a Worker, taken over from an instance that stopped: run it.
    Queued,
    /// Sent by an instance that died before it was confirmed, and
    /// `redeliver_unconfirmed` is on: run it again.
    Redeliver,
    /// Sent by an instance that died before it was confirmed: it may or may not
    /// have run. Recorded as `unknown`, not run; already gone from the journal.
    Unknown,
}

/// A task this instance took from the journal.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task.
    pub task: StoredTask,
    /// Why it was taken.
    pub kind: ClaimKind,
}

/// The journal in use, whichever the engine.
pub enum Journal {
    /// One host, a local SQLite file.
    Sqlite(Arc<SqliteJournal>),
    /// Several hosts, a Redis Stream with a consumer group.
    Redis(Arc<RedisJournal>),
}

impl Journal {
    /// The engine's name, for logs and the `andera_lb_journal_engine` metric.
    pub fn engine(&self) -> &'static str {
        match self {
            Journal::Sqlite(_) => "sqlite",
            Journal::Redis(_) => "redis",
        }
    }

    /// Keeps an accepted task; the client may be told "accepted" once this returns `Ok`.
    pub async fn accept(&self, task: StoredTask) -> Result<(), JournalError> {
        match self {
            Journal::Sqlite(j) => j.accept(task).await,
            Journal::Redis(j) => j.accept(task).await,
        }
    }

    /// True when an accepted task is run by whichever instance takes it from the
    /// shared queue, not at once by the instance that accepted it.
    pub fn is_shared_queue(&self) -> bool {
        matches!(self, Journal::Redis(_))
    }

    /// Marks a task as sent to a Worker, durably, before it is sent. `HandedOver`
    /// means another instance owns it now and this one must not send it.
    pub async fn dispatch(&self, id: &str) -> Result<DispatchMark, JournalError> {
        match self {
            Journal::Sqlite(j) => j.dispatch(id).await,
            Journal::Redis(j) => j.dispatch(id).await,
        }
    }

    /// Task `id` in the queue shared by several instances (Redis engine), when
    /// another instance holds it; `None` for a local journal or an unknown task.
    pub async fn find_shared(&self, id: &str) -> Result<Option<SharedTask>, JournalError> {
        match self {
            Journal::Sqlite(_) => Ok(None),
            Journal::Redis(j) => j.find(id).await,
        }
    }

    /// Cancels task `id` in the shared queue and on the instance holding it (Redis
    /// engine); a local journal has no other instance to ask.
    pub async fn cancel_shared(&self, id: &str) -> Result<SharedCancel, JournalError> {
        match self {
            Journal::Sqlite(_) => Ok(SharedCancel::Gone),
            Journal::Redis(j) => j.cancel_shared(id).await,
        }
    }

    /// Forgets a finished (done or failed) task.
    pub fn finish(&self, id: &str) {
        match self {
            Journal::Sqlite(j) => j.finish(id),
            Journal::Redis(j) => j.finish(id),
        }
    }

    /// Hands every task of this instance not yet dispatched to whichever instance
    /// takes it next, and wakes the runners waiting for them so they stand down.
    pub async fn release(&self) -> Result<u64, JournalError> {
        match self {
            Journal::Sqlite(j) => j.release().await,
            Journal::Redis(j) => j.release().await,
        }
    }

    /// Resolves when this instance releases its queued tasks.
    pub async fn released(&self) {
        match self {
            Journal::Sqlite(j) => j.released().await,
            Journal::Redis(j) => j.released().await,
        }
    }

    /// Waits for tasks taken from the journal, in priority order.
    pub async fn next_claims(&self) -> Vec<Claimed> {
        match self {
            Journal::Sqlite(j) => j.next_claims().await,
            Journal::Redis(j) => j.next_claims().await,
        }
    }

    /// Other live instances sharing this journal (e.g. an upgrade's successor).
    pub fn live_peers(&self) -> u64 {
        match self {
            Journal::Sqlite(j) => j.live_peers(),
            Journal::Redis(j) => j.live_peers(),
        }
    }

    /// Stops after the pending writes, so that others may take this instance's
    /// remaining tasks at once.
    pub async fn close(&self) {
        match self {
            Journal::Sqlite(j) => j.close().await,
            Journal::Redis(j) => j.close().await,
        }
    }

    /// Checks that the journal is usable before the server starts: a file that is
    /// (or can become) a journal, or a Redis server that answers.
    pub fn check(location: &Location) -> Result<(), JournalError> {
        match location {
            Location::File(path) => SqliteJournal::check(path),
            Location::Redis(url) => streams::check(url),
        }
    }

    /// Whether the journal can keep new tasks now, and why not.
    pub fn health(&self) -> &JournalHealth {
        match self {
            Journal::Sqlite(j) => j.health(),
            Journal::Redis(j) => j.health(),
        }
    }

    /// The `Idempotency-Key`s of accepted webhook tasks still valid (SQLite: kept
    /// beyond their tasks), at most `max`, newest last; read once at start-up. With
    /// Redis, keys live in Redis and are asked for there: none.
    pub fn restored_keys(&self, max: usize) -> Vec<RestoredKey> {
        let Journal::Sqlite(j) = self else {
            return Vec::new();
        };
        keys::read_file(j.path(), max).unwrap_or_else(|e| {
            log::warn!(
                "task journal {}: cannot read its Idempotency-Keys: {e}",
                j.path().display()
            );
            Vec::new()
        })
    }

    /// Takes `key` for task `id`, or tells who holds it. With SQLite the instance's
    /// own store decides (the keys are read back at start-up): always `Mine`.
    pub async fn take_key(&self, key: &StoredKey, id: &str) -> Result<KeyHolder, JournalError> {
        match self {
            Journal::Sqlite(_) => Ok(KeyHolder::Mine),
            Journal::Redis(j) => j.take_key(key, id).await,
        }
    }

    /// The SQLite file, when that is the engine.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Journal::Sqlite(j) => Some(j.path()),
            Journal::Redis(_) => None,
        }
    }
}

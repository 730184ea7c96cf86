//! The Redis engine of the task journal: instances on several hosts share one
//! webhook queue in a Redis Stream read through a consumer group.
//!
//! - Accept: `XADD` before the client is told "accepted".
//! - Take: each instance reads with `XREADGROUP` as its own consumer (host, pid and
//!   start time), and only as many tasks as it can run: its free Worker slots plus a
//!   small local queue ([`LOCAL_QUEUE`]), so that one instance does not hoard the queue.
//! - Send: a Lua script marks the entry dispatched (in a hash) only if this consumer
//!   still owns it; otherwise another instance took it over and it is not sent.
//! - End: `XACK` + `XDEL` + `HDEL` in one transaction, retried until Redis takes it.
//! - Take over: entries idle longer than `tasks.claim_idle_ms` (their consumer died;
//!   live ones refresh theirs) are taken with `XAUTOCLAIM`. Never-sent ones run;
//!   sent-but-unconfirmed ones are `unknown` unless `redeliver_unconfirmed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use tokio::sync::Notify;

mod control;
pub mod keys;
mod upkeep;

pub use control::{SharedCancel, SharedTask};

use super::handoff::{ClaimBox, ReleaseFlag};
use super::wire::{
    create_group, end_entries, entries, ACCEPT, DISPATCHED, GROUP, INDEX, MARK, REFRESH, RELEASE,
    RELEASED, STREAM,
};
use super::{
    redact, ClaimKind, Claimed, Detail, DispatchMark, JournalError, StoredTask, JOURNAL_METRICS,
};

/// Tasks an instance may hold beyond its free slots (waiting locally for one).
pub const LOCAL_QUEUE: usize = 8;
/// Longest wait of one `XREADGROUP`.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// Connect and answer timeout of every other Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Consumers with nothing pending and silent this long are removed from the group.
const CONSUMER_GONE: Duration = Duration::from_secs(3600);

// Scripts hash their source once; calls send the hash (EVALSHA), the source only
// when Redis does not know it yet.
static MARK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(MARK));
static REFRESH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REFRESH));
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

/// How many tasks this instance can take now (free slots plus a local queue; 0
/// when it has no usable Worker).
pub type Capacity = Box<dyn Fn() -> usize + Send + Sync>;

/// Finished tasks still in the stream: their entries and task ids.
#[derive(Debug, Default)]
struct Unfinished {
    entries: Vec<String>,
    ids: Vec<String>,
}

impl Unfinished {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push(&mut self, entry: String, id: String) {
        self.entries.push(entry);
        self.ids.push(id);
    }

    fn extend(&mut self, other: Unfinished) {
        self.entries.extend(other.entries);
        self.ids.extend(other.ids);
    }
}

/// A task this instance took from the stream and has not finished.
struct Held {
    entry: String,
    dispatched: bool,
}

/// Handle to the Redis journal, shared by the data path and the reader task.
pub struct RedisJournal {
    url: String,
    me: String,
    conn: ConnectionManager,
    claim_idle: Duration,
    redeliver_unconfirmed: bool,
    held: parking_lot::Mutex<HashMap<String, Held>>,
    /// Entries (and their task ids) whose end could not be written yet (Redis
    /// unreachable): retried.
    unfinished: Arc<parking_lot::Mutex<Unfinished>>,
    claims: ClaimBox,
    room: Notify,
    released: ReleaseFlag,
    stopped: AtomicBool,
    peers: AtomicU64,
    health: super::JournalHealth,
    /// Ids other instances asked to cancel, until the caller takes them.
    cancel_requests: parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<String>>>,
}

fn open_err(url: &str, e: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::Open(Detail::caused(redact(url), e))
}

fn write_err(e: redis::RedisError) -> JournalError {
    JournalError::Write(Detail::caused("redis", e))
}

/// True when the connection was found broken (e.g. Redis restarted): the
/// connection manager reconnects, so the command is worth one more try.
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Checks, before the server starts, that Redis answers at `url`.
pub fn check(url: &str) -> Result<(), JournalError> {
    let client = redis::Client::open(url).map_err(|e| open_err(url, e))?;
    let mut conn = client
        .get_connection_with_timeout(COMMAND_TIMEOUT)
        .map_err(|e| open_err(url, e))?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map(drop)
        .map_err(|e| open_err(url, e))
}

/// A per-process unique consumer name: host, pid and start time.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}-{}-{nanos:x}", std::process::id())
}

impl RedisJournal {
    /// Connects to Redis at `url`, creates the stream and group if missing, and
    /// starts reading tasks as far as `capacity` allows.
    pub async fn open(
        url: &str,
        claim_idle: Duration,
        redeliver_unconfirmed: bool,
        capacity: Capacity,
    ) -> Result<Arc<RedisJournal>, JournalError> {
        let client = redis::Client::open(url).map_err(|e| open_err(url, e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = client
            .get_connection_manager_with_config(
                config.clone().set_response_timeout(Some(COMMAND_TIMEOUT)),
            )
            .await
            .map_err(|e| open_err(url, e))?;
        // Blocking reads get their own connection: on a shared one they would hold
        // up every accept behind them.
        let reader = client
            .get_connection_manager_with_config(
                config.set_response_timeout(Some(READ_BLOCK + COMMAND_TIMEOUT)),
            )
            .await
            .map_err(|e| open_err(url, e))?;
        create_group(&mut conn)
            .await
            .map_err(|e| open_err(url, e))?;
        let (cancel_tx, cancel_rx) = tokio::sync::mpsc::channel(control::CANCEL_BACKLOG);
        tokio::spawn(control::listen_for_cancels(client, cancel_tx));
        let journal = Arc::new(RedisJournal {
            url: redact(url),
            me: consumer_name(),
            conn,
            claim_idle: claim_idle.max(Duration::from_millis(100)),
            redeliver_unconfirmed,
            held: Default::default(),
            unfinished: Default::default(),
            claims: ClaimBox::default(),
            room: Notify::new(),
            released: ReleaseFlag::default(),
            stopped: AtomicBool::new(false),
            peers: AtomicU64::new(0),
            health: super::JournalHealth::new(redact(url)),
            cancel_requests: parking_lot::Mutex::new(Some(cancel_rx)),
        });
        tokio::spawn(read_loop(Arc::downgrade(&journal), reader, capacity));
        tokio::spawn(upkeep::upkeep_loop(Arc::downgrade(&journal)));
        Ok(journal)
    }

    /// The Redis URL, without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This instance's consumer name in the group.
    pub fn instance(&self) -> &str {
        &self.me
    }

    /// Whether Redis took the last writes, and why not.
    pub fn health(&self) -> &super::JournalHealth {
        &self.health
    }

    /// Records how a write went in the journal's state.
    fn wrote<T>(&self, result: &redis::RedisResult<T>) {
        match result {
            Ok(_) => self.health.ok(),
            Err(e) => {
                JOURNAL_METRICS.write_errors.inc();
                let state = match e.code() {
                    Some("OOM") => super::JournalState::Full,
                    _ => super::JournalState::Unavailable,
                };
                self.health.set(state, format!("redis: {e}"));
            }
        }
    }

    /// Adds an accepted task to the stream; the client may be told "accepted" once
    /// this returns `Ok` (Redis has it in memory, persisted as its own settings say).
    /// A connection found broken (Redis restarted) is replaced and tried once more.
    pub async fn accept(&self, t: StoredTask) -> Result<(), JournalError> {
        let mut result = self.add(&t).await;
        if result.as_ref().is_err_and(broken) {
            result = self.add(&t).await;
        }
        self.wrote(&result);
        result.map_err(|e| match e.code() {
            Some("OOM") => JournalError::Full(Detail::caused("redis", e)),
            _ => write_err(e),
        })
    }

    async fn add(&self, t: &StoredTask) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        // XADD and the index entry in one script (EVAL: it also runs inside the
        // idempotency key's transaction below).
        let mut add = redis::cmd("EVAL");
        add.arg(ACCEPT)
            .arg(2)
            .arg(STREAM)
            .arg(INDEX)
            .arg(&t.id)
            .arg("id")
            .arg(&t.id)
            .arg("priority")
            .arg(t.priority)
            .arg("accepted_ms")
            .arg(t.accepted_ms)
            .arg("deadline_ms")
            .arg(t.deadline_ms)
            .arg("headers")
            .arg(&t.headers)
            .arg("body")
            .arg(&t.body);
        if let Some(client) = &t.client {
            add.arg("client").arg(client);
        }
        if t.idempotency.is_none() {
            return add.query_async::<String>(&mut conn).await.map(drop);
        }
        // With its Idempotency-Key, in one transaction.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut pipe = redis::pipe();
        pipe.atomic().add_command(add).ignore();
        keys::accept_in(&mut pipe, t, now);
        pipe.query_async::<redis::Value>(&mut conn).await.map(drop)
    }

    /// Marks a task as sent, if this instance still owns its entry.
    pub async fn dispatch(&self, id: &str) -> Result<DispatchMark, JournalError> {
        let Some(entry) = self.held.lock().get(id).map(|h| h.entry.clone()) else {
            return Ok(DispatchMark::HandedOver);
        };
        let mut owned = self.mark(&entry).await;
        if owned.as_ref().is_err_and(broken) {
            owned = self.mark(&entry).await;
        }
        self.wrote(&owned);
        if owned.map_err(write_err)? == 0 {
            self.held.lock().remove(id);
            self.room.notify_one();
            return Ok(DispatchMark::HandedOver);
        }
        if let Some(h) = self.held.lock().get_mut(id) {
            h.dispatched = true;
        }
        Ok(DispatchMark::Go)
    }

    async fn mark(&self, entry: &str) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        MARK_SCRIPT
            .key(STREAM)
            .key(DISPATCHED)
            .arg(GROUP)
            .arg(entry)
            .arg(&self.me)
            .invoke_async(&mut conn)
            .await
    }

    /// Removes a finished (done or failed) task from the stream, in the background;
    /// retried until Redis takes it.
    pub fn finish(&self, id: &str) {
        let Some(held) = self.held.lock().remove(id) else {
            return;
        };
        self.room.notify_one();
        let mut conn = self.conn.clone();
        let unfinished = self.unfinished.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let ended = end_entries(
                &mut conn,
                std::slice::from_ref(&held.entry),
                std::slice::from_ref(&id),
            );
            if let Err(e) = ended.await {
                log::warn!("task journal: cannot remove a finished task yet ({e}); will retry");
                unfinished.lock().push(held.entry, id);
            }
        });
    }

    /// Hands this instance's undispatched tasks to whichever instance reads next,
    /// stops reading, and wakes the runners waiting for them so they stand down.
    pub async fn release(&self) -> Result<u64, JournalError> {
        self.released.set();
        let entries: Vec<String> = self
            .held
            .lock()
            .values()
            .filter(|h| !h.dispatched)
            .map(|h| h.entry.clone())
            .collect();
        let mut n = 0;
        if !entries.is_empty() {
            let mut conn = self.conn.clone();
            let idle = self.claim_idle.as_millis() as u64 + 86_400_000;
            let mut call = RELEASE_SCRIPT.key(STREAM);
            call.key(DISPATCHED)
                .arg(GROUP)
                .arg(&self.me)
                .arg(RELEASED)
                .arg(idle)
                .arg(&entries);
            n = call.invoke_async(&mut conn).await.map_err(write_err)?;
        }
        self.released.wake();
        Ok(n)
    }

    /// True once [`RedisJournal::release`] was called.
    pub fn is_released(&self) -> bool {
        self.released.is_set()
    }

    /// Resolves when this instance releases its queued tasks.
    pub async fn released(&self) {
        self.released.wait().await
    }

    /// Waits for tasks read from the stream or taken over, in priority order.
    pub async fn next_claims(&self) -> Vec<Claimed> {
        self.claims.next().await
    }

    /// Other instances reading the group recently (within `tasks.claim_idle_ms`).
    pub fn live_peers(&self) -> u64 {
        self.peers.load(Ordering::Relaxed)
    }

    /// Tasks this instance holds (read and not finished).
    pub fn held(&self) -> usize {
        self.held.lock().len()
    }

    /// Stops reading, and tries once more to remove finished tasks.
    pub async fn close(&self) {
        self.stopped.store(true, Ordering::Release);
        self.room.notify_waiters();
        let left = std::mem::take(&mut *self.unfinished.lock());
        if !left.is_empty() {
            let mut conn = self.conn.clone();
            let ended = end_entries(&mut conn, &left.entries, &left.ids);
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, ended).await;
        }
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || self.is_released()
    }

    /// Takes `entries`, keeps them as held, and hands them to the runner.
    fn take(&self, mut claims: Vec<(String, Claimed)>) {
        if claims.is_empty() {
            return;
        }
        claims.sort_by_key(|(_, c)| (c.task.priority, c.task.accepted_ms));
        let mut held = self.held.lock();
        let mut out = Vec::with_capacity(claims.len());
        for (entry, claim) in claims {
            if held.contains_key(&claim.task.id) {
                // Its own entry, taken back after a refresh failed: already running here.
                continue;
            }
            if claim.kind != ClaimKind::Unknown {
                let h = Held {
                    entry,
                    dispatched: false,
                };
                held.insert(claim.task.id.clone(), h);
            }
            out.push(claim);
        }
        drop(held);
        self.claims.push(out);
    }

    /// Takes over entries idle longer than `claim_idle` (their consumer died, or
    /// released them), up to `want`. Returns how many were taken.
    async fn autoclaim(
        &self,
        conn: &mut ConnectionManager,
        want: usize,
    ) -> Result<usize, redis::RedisError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg(&self.me)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(want)
            .query_async(conn)
            .await?;
        let entries = match reply {
            Value::Array(mut parts) if parts.len() >= 2 => entries(parts.swap_remove(1)),
            _ => Vec::new(),
        };
        let mut claims = Vec::new();
        for (entry, task) in entries {
            let Some(task) = task else {
                end_entries(conn, std::slice::from_ref(&entry), &[]).await?;
                continue;
            };
            let sent_by: Option<String> = redis::cmd("HGET")
                .arg(DISPATCHED)
                .arg(&entry)
                .query_async(conn)
                .await?;
            let kind = match sent_by {
                None => ClaimKind::Queued,
                Some(_) if self.redeliver_unconfirmed => {
                    redis::cmd("HDEL")
                        .arg(DISPATCHED)
                        .arg(&entry)
                        .query_async::<()>(conn)
                        .await?;
                    ClaimKind::Redeliver
                }
                Some(_) => {
                    end_entries(
                        conn,
                        std::slice::from_ref(&entry),
                        std::slice::from_ref(&task.id),
                    )
                    .await?;
                    ClaimKind::Unknown
                }
            };
            claims.push((entry, Claimed { task, kind }));
        }
        let n = claims.len();
        self.take(claims);
        Ok(n)
    }

    /// Reads up to `want` new entries, waiting [`READ_BLOCK`] at most.
    async fn read(
        &self,
        conn: &mut ConnectionManager,
        want: usize,
    ) -> Result<usize, redis::RedisError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.me)
            .arg("COUNT")
            .arg(want)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query_async(conn)
            .await?;
        // [[stream, [entries…]]], or nil when nothing came.
        let list = match reply {
            Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Value::Array(mut pair) if pair.len() == 2 => entries(pair.swap_remove(1)),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let mut claims = Vec::new();
        for (entry, task) in list {
            match task {
                Some(task) => claims.push((
                    entry,
                    Claimed {
                        task,
                        kind: ClaimKind::Fresh,
                    },
                )),
                None => {
                    log::warn!("task journal: stream entry {entry} is not a task; removed");
                    end_entries(conn, std::slice::from_ref(&entry), &[]).await?;
                }
            }
        }
        let n = claims.len();
        self.take(claims);
        Ok(n)
    }
}

/// Reads tasks while this instance has room, taking over dead instances' first.
async fn read_loop(journal: Weak<RedisJournal>, mut conn: ConnectionManager, capacity: Capacity) {
    let mut next_claim = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        let Some(j) = journal.upgrade() else { return };
        if j.stopped() {
            return;
        }
        let want = capacity().saturating_sub(j.held());
        if want == 0 {
            // Free slots change without telling us: look again soon in any case.
            let _ = tokio::time::timeout(Duration::from_millis(100), j.room.notified()).await;
            continue;
        }
        let mut result = Ok(0);
        if tokio::time::Instant::now() >= next_claim {
            result = j.autoclaim(&mut conn, want).await;
            next_claim = tokio::time::Instant::now() + (j.claim_idle / 4).min(READ_BLOCK);
        }
        let result = match result {
            Ok(0) => j.read(&mut conn, want).await,
            other => other,
        };
        match result {
            Ok(_) => {
                if failing {
                    log::info!("task journal: Redis at {} reachable again", j.url);
                    j.health.recovered_from(super::JournalState::Unavailable);
                }
                failing = false;
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis restarted without its data (or the key was deleted): start over.
                log::warn!(
                    "task journal: the stream is gone from Redis at {}; creating it again",
                    j.url
                );
                if let Err(e) = create_group(&mut conn).await {
                    log::warn!("task journal: cannot create the stream again: {e}");
                    tokio::time::sleep(READ_BLOCK).await;
                }
            }
            Err(e) => {
                if !failing {
                    log::warn!(
                        "task journal: cannot read from Redis at {}: {e}; retrying",
                        j.url
                    );
                }
                failing = true;
                let detail = format!("cannot reach Redis: {e}");
                j.health.set(super::JournalState::Unavailable, detail);
                drop(j);
                tokio::time::sleep(READ_BLOCK).await;
            }
        }
    }
}

//! The SQLite engine of the task journal: accepted webhook tasks are written to a local SQLite
//! database (WAL mode, `synchronous=FULL`) before the client is told "accepted", so
//! they survive a crash, a restart or an upgrade.
//!
//! A task moves `accepted` → `dispatched` → deleted (done or failed). Each row is
//! owned by one running instance, which heartbeats in the `instances` table; rows of
//! an instance that stopped heartbeating (crashed) or released them (shutting down
//! with a live successor) are claimed by another instance. A row still `dispatched`
//! when its owner died may have run on a Worker: it is not run again unless
//! `tasks.redeliver_unconfirmed` is set.
//!
//! All database work happens on one writer thread that commits whatever requests
//! are waiting in one transaction (group commit), so an fsync is shared by every
//! task accepted in the same instant.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::handoff::{ClaimBox, ReleaseFlag};
use super::store;
use super::upkeep::Upkeep;
use super::{
    Claimed, Detail, DispatchMark, JournalError, JournalHealth, StoredTask, JOURNAL_METRICS,
};

/// How often an instance proves it is alive, and claims free rows.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Silence after which an instance counts as dead and its rows may be claimed.
pub const OWNER_STALE: Duration = Duration::from_secs(3);

type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

enum Op {
    Accept(Box<StoredTask>, Reply<()>),
    Dispatch(String, Reply<DispatchMark>),
    Finish(String),
    Release(Reply<u64>),
    Stop(Reply<()>),
}

/// Handle to the SQLite journal, shared by the data path and the background claimer.
pub struct SqliteJournal {
    ops: mpsc::Sender<Op>,
    path: PathBuf,
    instance: String,
    claims: ClaimBox,
    released: ReleaseFlag,
    file_bytes: AtomicU64,
    live_rows: AtomicU64,
    peers: AtomicU64,
    health: Arc<JournalHealth>,
}

impl SqliteJournal {
    /// Opens (or creates) the journal at `path` and starts its writer thread.
    /// A file that is not a journal is refused, unless `recover` moves it aside
    /// (`<file>.corrupt-<unix seconds>`) and starts a fresh one.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        recover: bool,
        redeliver_unconfirmed: bool,
    ) -> Result<Arc<SqliteJournal>, JournalError> {
        let conn = match store::open(path, max_bytes) {
            Ok(c) => c,
            Err(e @ JournalError::Open(_)) if recover && path.exists() => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
                log::warn!(
                    "task journal {} unreadable ({e}); moved to {} (--recover)",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(path, &aside).map_err(|e| {
                    JournalError::Open(Detail::caused(path.display().to_string(), e))
                })?;
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                store::open(path, max_bytes)?
            }
            Err(e) => return Err(e),
        };
        let instance = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(JournalHealth::new(path.display().to_string()));
        let upkeep = Upkeep::new(path, max_bytes, health.clone());
        let journal = Arc::new(SqliteJournal {
            ops: tx,
            path: path.to_path_buf(),
            instance: instance.clone(),
            claims: ClaimBox::default(),
            released: ReleaseFlag::default(),
            file_bytes: AtomicU64::new(0),
            live_rows: AtomicU64::new(0),
            peers: AtomicU64::new(0),
            health,
        });
        let weak = Arc::downgrade(&journal);
        let writer = store::Writer::new(conn, instance, redeliver_unconfirmed);
        std::thread::Builder::new()
            .name("task-journal".into())
            .spawn(move || writer_loop(writer, upkeep, rx, weak))
            .map_err(|e| JournalError::Open(Detail::caused("starting the journal thread", e)))?;
        Ok(journal)
    }

    /// Whether the journal can keep new tasks now, and why not.
    pub fn health(&self) -> &JournalHealth {
        &self.health
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This instance's owner id in the journal.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn call<T>(
        &self,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> oneshot::Receiver<Result<T, JournalError>> {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(op(tx)).is_err() {
            let (tx, rx2) = oneshot::channel();
            let _ = tx.send(Err(JournalError::Closed));
            return rx2;
        }
        rx
    }

    /// Writes an accepted task durably; the client may be told "accepted" once this returns `Ok`.
    pub async fn accept(&self, task: StoredTask) -> Result<(), JournalError> {
        self.call(|r| Op::Accept(Box::new(task), r))
            .await
            .unwrap_or(Err(JournalError::Closed))
    }

    /// Marks a task as sent to a Worker, durably, before it is sent. `HandedOver`
    /// means another instance owns it now and this one must not send it.
    pub async fn dispatch(&self, id: &str) -> Result<DispatchMark, JournalError> {
        self.call(|r| Op::Dispatch(id.to_string(), r))
            .await
            .unwrap_or(Err(JournalError::Closed))
    }

    /// Forgets a finished (done or failed) task; written with the next commit.
    pub fn finish(&self, id: &str) {
        let _ = self.ops.send(Op::Finish(id.to_string()));
    }

    /// Hands every task of this instance not yet dispatched to whichever instance
    /// claims it next, and wakes the runners waiting for them so they stand down.
    pub async fn release(&self) -> Result<u64, JournalError> {
        self.released.set();
        let n = self
            .call(Op::Release)
            .await
            .unwrap_or(Err(JournalError::Closed));
        self.released.wake();
        n
    }

    /// True once [`SqliteJournal::release`] was called.
    pub fn is_released(&self) -> bool {
        self.released.is_set()
    }

    /// Resolves when this instance releases its queued tasks.
    pub async fn released(&self) {
        self.released.wait().await
    }

    /// Waits for tasks claimed from the journal (recovered after a crash, or handed
    /// over by an instance that is shutting down), in priority order.
    pub async fn next_claims(&self) -> Vec<Claimed> {
        self.claims.next().await
    }

    /// Size of the journal file (database + WAL), bytes, as of the last heartbeat.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.load(Ordering::Relaxed)
    }

    /// Tasks in the journal (all owners), as of the last heartbeat.
    pub fn live_rows(&self) -> u64 {
        self.live_rows.load(Ordering::Relaxed)
    }

    /// Other live instances sharing this journal (e.g. an upgrade's successor).
    pub fn live_peers(&self) -> u64 {
        self.peers.load(Ordering::Relaxed)
    }

    /// Stops the writer thread after the pending writes, and leaves the instance
    /// table so that others may claim this instance's remaining tasks at once.
    pub async fn close(&self) {
        let done = self.call(Op::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
    }

    /// Checks that `path` is a usable journal (or can become one) and closes it.
    pub fn check(path: &Path) -> Result<(), JournalError> {
        store::open(path, u64::MAX).map(drop)
    }
}

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 512;

fn writer_loop(
    mut w: store::Writer,
    mut upkeep: Upkeep,
    rx: mpsc::Receiver<Op>,
    journal: std::sync::Weak<SqliteJournal>,
) {
    write_until_stopped(&mut w, &mut upkeep, rx, journal);
    // The connection closes before the watch's own descriptor of its file: closing
    // that first would drop the process's locks on it (see `disk::Watch`).
    drop(w);
    drop(upkeep);
}

fn write_until_stopped(
    w: &mut store::Writer,
    upkeep: &mut Upkeep,
    rx: mpsc::Receiver<Op>,
    journal: std::sync::Weak<SqliteJournal>,
) {
    let mut next_beat = std::time::Instant::now();
    let mut beat_failing = false;
    loop {
        let now = std::time::Instant::now();
        if now >= next_beat {
            let Some(j) = journal.upgrade() else { return };
            upkeep.before_write(w);
            match w.heartbeat_and_claim(OWNER_STALE, j.is_released()) {
                Ok(beat) => {
                    beat_failing = false;
                    upkeep.wrote(false);
                    j.file_bytes.store(beat.file_bytes, Ordering::Relaxed);
                    j.live_rows.store(beat.rows, Ordering::Relaxed);
                    JOURNAL_METRICS.bytes.set(beat.file_bytes as i64);
                    JOURNAL_METRICS.tasks.set(beat.rows as i64);
                    j.peers.store(beat.peers, Ordering::Relaxed);
                    j.claims.push(beat.claimed);
                }
                Err(e) => {
                    if !beat_failing {
                        log::warn!("task journal heartbeat: {e}");
                    }
                    beat_failing = true;
                    upkeep.failed_without_tasks(&e, w);
                }
            }
            upkeep.tick(w);
            if !upkeep.unfinished.is_empty() {
                w.apply(Vec::new(), upkeep);
            }
            next_beat = now + HEARTBEAT;
        }
        let first = match rx.recv_timeout(next_beat.saturating_duration_since(now)) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let stop = batch.iter().position(|op| matches!(op, Op::Stop(_)));
        let stop = stop.map(|i| batch.remove(i));
        w.apply(batch, upkeep);
        if let Some(Op::Stop(reply)) = stop {
            w.close();
            let _ = reply.send(Ok(()));
            return;
        }
    }
}

/// What one transaction of a batch wrote, request by request.
#[derive(Default)]
struct Written {
    accepts: Vec<Result<(), JournalError>>,
    dispatches: Vec<Result<DispatchMark, JournalError>>,
    releases: Vec<Result<u64, JournalError>>,
}

/// Bytes a new task takes in the journal, about.
fn task_bytes(t: &StoredTask) -> u64 {
    (t.body.len() + t.headers.len() + 256) as u64
}

impl store::Writer {
    /// Runs the batch's requests (new tasks only with `with_tasks`) and the
    /// `unfinished` deletes in one transaction. Any failed statement fails it all.
    fn write_batch(
        &mut self,
        batch: &[Op],
        with_tasks: bool,
        unfinished: &[String],
    ) -> (Result<(), JournalError>, Written) {
        let mut out = Written::default();
        let result = self.transaction(|tx, me| {
            for id in unfinished {
                store::delete(tx, id)?;
            }
            for op in batch {
                match op {
                    Op::Accept(task, _) if with_tasks => {
                        store::insert(tx, me, task)?;
                        out.accepts.push(Ok(()));
                    }
                    Op::Accept(..) | Op::Stop(_) => {}
                    Op::Dispatch(id, _) => {
                        out.dispatches.push(Ok(store::mark_dispatched(tx, me, id)?))
                    }
                    Op::Finish(id) => store::delete(tx, id)?,
                    Op::Release(_) => out.releases.push(Ok(store::release(tx, me)?)),
                }
            }
            Ok(())
        });
        (result, out)
    }

    /// Applies a batch of requests, in transactions of at most
    /// [`Upkeep::batch_bytes`] of new tasks (a larger task alone), and answers each.
    fn apply(&mut self, batch: Vec<Op>, upkeep: &mut Upkeep) {
        let limit = upkeep.batch_bytes();
        let (mut part, mut bytes) = (Vec::new(), 0);
        for op in batch {
            let b = match &op {
                Op::Accept(t, _) => task_bytes(t),
                _ => 0,
            };
            if b > 0 && bytes > 0 && bytes + b > limit {
                self.apply_part(std::mem::take(&mut part), upkeep);
                bytes = 0;
            }
            bytes += b;
            part.push(op);
        }
        self.apply_part(part, upkeep);
    }

    /// Applies requests in one transaction and answers each. New tasks
    /// that do not fit are refused and the rest is written without them, so that
    /// dispatch marks and deletes go on when the disk is full; deletes that fail
    /// are kept for the next batch.
    fn apply_part(&mut self, batch: Vec<Op>, upkeep: &mut Upkeep) {
        let bytes: u64 = batch
            .iter()
            .map(|op| match op {
                Op::Accept(t, _) => task_bytes(t),
                _ => 0,
            })
            .sum();
        let mut refused = match bytes {
            0 => None,
            _ => upkeep.room_for(self, bytes).err(),
        };
        let unfinished = std::mem::take(&mut upkeep.unfinished);
        upkeep.settle_thrift(self);
        upkeep.before_write(self);
        let (mut result, mut written) = self.write_batch(&batch, refused.is_none(), &unfinished);
        if let Err(e) = &result {
            if bytes > 0 && refused.is_none() {
                refused = Some(upkeep.failed(e, self, bytes));
                upkeep.settle_thrift(self);
                (result, written) = self.write_batch(&batch, false, &unfinished);
            }
        }
        match &result {
            Ok(()) => upkeep.wrote(true),
            Err(e) => {
                upkeep.failed_without_tasks(e, self);
                upkeep.unfinished = unfinished;
                upkeep
                    .unfinished
                    .extend(batch.iter().filter_map(|op| match op {
                        Op::Finish(id) => Some(id.clone()),
                        _ => None,
                    }));
            }
        }
        answer(batch, result, written, refused);
    }
}

/// Answers each request of a batch: a refusal for new tasks that were kept out,
/// the transaction's error when it failed, else the statement's own result.
fn answer(
    batch: Vec<Op>,
    result: Result<(), JournalError>,
    written: Written,
    refused: Option<JournalError>,
) {
    let Written {
        accepts,
        dispatches,
        releases,
    } = written;
    let (mut accepts, mut dispatches, mut releases) = (
        accepts.into_iter(),
        dispatches.into_iter(),
        releases.into_iter(),
    );
    fn settle<T>(
        r: Option<Result<T, JournalError>>,
        txn: &Result<(), JournalError>,
    ) -> Result<T, JournalError> {
        match txn {
            Ok(()) => r.unwrap_or(Err(JournalError::Closed)),
            Err(e) => Err(e.clone()),
        }
    }
    for op in batch {
        match op {
            Op::Accept(_, reply) => {
                let r = match &refused {
                    Some(e) => Err(e.clone()),
                    None => settle(accepts.next(), &result),
                };
                let _ = reply.send(r);
            }
            Op::Dispatch(_, reply) => {
                let _ = reply.send(settle(dispatches.next(), &result));
            }
            Op::Release(reply) => {
                let _ = reply.send(settle(releases.next(), &result));
            }
            Op::Finish(_) | Op::Stop(_) => {}
        }
    }
}

//! The SQLite side of the journal: schema, and the statements the writer thread runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::disk;
use super::{ClaimKind, Claimed, Detail, DispatchMark, JournalError, StoredTask};

/// Journal format version, kept in SQLite's `user_version`.
const FORMAT: i64 = 1;

const ACCEPTED: i64 = 0;
const DISPATCHED: i64 = 1;

/// What one heartbeat found.
pub(super) struct Beat {
    pub claimed: Vec<Claimed>,
    pub rows: u64,
    pub peers: u64,
    pub file_bytes: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn open_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::Open(Detail::caused(path.display().to_string(), e))
}

/// A journal that opened but is not one we can use (names what is wrong).
fn not_usable(path: &Path, what: String) -> JournalError {
    JournalError::Open(Detail::new(format!("{}: {what}", path.display())))
}

/// Opens the journal, creating it if missing, and checks that it is one. Writes
/// beyond `max_bytes` fail as on a full disk.
pub(super) fn open(path: &Path, max_bytes: u64) -> Result<Connection, JournalError> {
    prepare_files(path)?;
    let conn = Connection::open(path).map_err(|e| open_err(path, e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| open_err(path, e))?;
    // WAL lets an upgrade's successor use the file while the old process drains;
    // synchronous=FULL fsyncs the WAL at every commit, so "accepted" means on disk.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| open_err(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(not_usable(
            path,
            format!("cannot use WAL mode (got {mode})"),
        ));
    }
    // secure_delete: a deleted row is overwritten with zeros (its pages too), so
    // finished tasks' bodies and Worker keys do not stay in the database's free
    // space. While the disk is full it is relaxed to FAST (see `Writer::thrifty`).
    // No automatic checkpoints: the writer checkpoints when idle, or when the WAL
    // is large, and only when the disk has room for what the database grows by
    // (a checkpoint that fails half-way leaves that space taken: see `upkeep`).
    // journal_size_limit: a WAL started over after a checkpoint keeps at most this
    // much of its file (room for marks and deletes on a full disk), the rest is freed.
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA wal_autocheckpoint=0;
         PRAGMA journal_size_limit={};",
        disk::SLACK_BYTES
    ))
    .map_err(|e| open_err(path, e))?;
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| open_err(path, e))?;
    let page = page.max(1) as u64;
    conn.query_row(
        &format!(
            "PRAGMA max_page_count = {}",
            (max_bytes / page).clamp(16, i64::MAX as u64)
        ),
        [],
        |_| Ok(()),
    )
    .map_err(|e| open_err(path, e))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| open_err(path, e))?;
    if check != "ok" {
        return Err(not_usable(path, format!("integrity check failed: {check}")));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| open_err(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| open_err(path, e))?;
    if version != FORMAT && !(version == 0 && tables == 0) {
        return Err(not_usable(
            path,
            format!("not an andera-lb task journal (format {version}, expected {FORMAT})"),
        ));
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS tasks (
             id TEXT PRIMARY KEY,
             state INTEGER NOT NULL,
             owner TEXT,
             priority INTEGER NOT NULL,
             accepted_ms INTEGER NOT NULL,
             deadline_ms INTEGER NOT NULL,
             headers BLOB NOT NULL,
             body BLOB NOT NULL
         );
         CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, state);
         CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, heartbeat_ms INTEGER NOT NULL);
         PRAGMA user_version = 1;",
    )
    .map_err(|e| open_err(path, e))?;
    super::keys::ensure_schema(&conn).map_err(|e| open_err(path, e))?;
    Ok(conn)
}

/// Creates the journal's directory (`0700`) and file (`0600`) when missing, and
/// checks that this process may write both: a permission problem is named as
/// such ([`JournalError::Denied`]), since `--recover` cannot help with it.
fn prepare_files(path: &Path) -> Result<(), JournalError> {
    let dir = disk::dir_of(path);
    let denied = |what: &str, e: std::io::Error| {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        JournalError::Denied(Detail::caused(
            format!(
                "{}: {what} is not writable by this process (uid {uid}); give it to the service's user or choose another tasks.journal (--recover cannot help)",
                path.display()
            ),
            e,
        ))
    };
    disk::create_dirs(&dir).map_err(|e| match disk::is_denied(&e) {
        true => denied(&format!("the directory {}", dir.display()), e),
        false => open_err(path, e),
    })?;
    if let Err(e) = disk::writable_dir(&dir) {
        return Err(denied(&format!("the directory {}", dir.display()), e));
    }
    disk::create_private(path).map_err(|e| match disk::is_denied(&e) {
        true => denied("the file", e),
        false => open_err(path, e),
    })?;
    for (file, mode) in disk::readable_by_others(path) {
        log::warn!(
            "task journal file {file} is readable by other users (mode {mode:o}) and holds Worker keys: chmod 600 it"
        );
    }
    Ok(())
}

/// The writer thread's connection and identity.
pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    me: String,
    redeliver_unconfirmed: bool,
}

fn write_err(e: rusqlite::Error) -> JournalError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => JournalError::Full(Detail::caused("", e)),
        _ => JournalError::Write(Detail::caused("", e)),
    }
}

/// How much of the database is in use, and how much it may take (pages).
pub(super) struct PageUse {
    /// Pages holding data (the file's pages less the free ones).
    pub used: u64,
    /// `max_page_count`, from `tasks.journal_max_size`.
    pub max: u64,
}

impl Writer {
    /// A writer for `conn`, owning rows as `me`.
    pub(super) fn new(conn: Connection, me: String, redeliver_unconfirmed: bool) -> Writer {
        let path = conn.path().map(PathBuf::from).unwrap_or_default();
        Writer {
            conn,
            path,
            me,
            redeliver_unconfirmed,
        }
    }

    /// The connection, e.g. to copy its rows into a re-created journal.
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Puts `conn` in place of the connection, which is returned.
    pub(super) fn swap_conn(&mut self, conn: Connection) -> Connection {
        std::mem::replace(&mut self.conn, conn)
    }

    /// Copies the WAL into the database. `truncate` also cuts the WAL to zero
    /// bytes, so that finished tasks (bodies, Worker keys) do not stay in it;
    /// otherwise the next write starts over at its beginning, reusing its space (on
    /// a full disk). False when another connection kept it from completing.
    pub(super) fn checkpoint(&self, truncate: bool) -> Result<bool, JournalError> {
        let mode = if truncate { "TRUNCATE" } else { "RESTART" };
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|busy| busy == 0)
            .map_err(write_err)
    }

    /// With `on`, deletes zero only what costs no extra page writes
    /// (`secure_delete=FAST`), to save the space left on a full disk; else they
    /// zero everything they free (`secure_delete=ON`, the default).
    pub(super) fn thrifty(&self, on: bool) {
        let mode = if on { "FAST" } else { "ON" };
        let _ = self
            .conn
            .query_row(&format!("PRAGMA secure_delete={mode}"), [], |_| Ok(()));
    }

    /// Bytes of free pages in the database (reused by new tasks before it grows).
    pub(super) fn free_page_bytes(&self) -> u64 {
        self.conn
            .query_row(
                "SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_or(0, |n| n.max(0) as u64)
    }

    /// Bytes the database file grows by when the WAL is checkpointed into it.
    pub(super) fn checkpoint_growth(&self) -> u64 {
        let size: rusqlite::Result<i64> = self.conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        );
        let file = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        size.map_or(u64::MAX, |s| (s.max(0) as u64).saturating_sub(file))
    }

    /// Pages in use and the most the database may take.
    pub(super) fn page_use(&self) -> Result<PageUse, JournalError> {
        let get = |sql: &str| {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(write_err)
        };
        let pages = get("PRAGMA page_count")?;
        let free = get("PRAGMA freelist_count")?;
        Ok(PageUse {
            used: pages.saturating_sub(free),
            max: get("PRAGMA max_page_count")?,
        })
    }

    /// Runs `f` in one immediate transaction and commits it (one fsync).
    pub(super) fn transaction(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &str) -> Result<(), JournalError>,
    ) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_err)?;
        f(&tx, &self.me)?;
        tx.commit().map_err(write_err)
    }

    /// Proves this instance alive, and (unless it is shutting down) claims free rows:
    /// released ones and those of instances that stopped heartbeating.
    pub(super) fn heartbeat_and_claim(
        &mut self,
        stale: Duration,
        shutting_down: bool,
    ) -> Result<Beat, JournalError> {
        let redeliver = self.redeliver_unconfirmed;
        let mut claimed = Vec::new();
        let mut counts = (0, 0);
        self.transaction(|tx, me| {
            let now = now_ms();
            let alive_after = now - stale.as_millis() as i64;
            tx.execute(
                "INSERT OR REPLACE INTO instances (id, heartbeat_ms) VALUES (?1, ?2)",
                params![me, now],
            )
            .map_err(write_err)?;
            tx.execute(
                "DELETE FROM instances WHERE heartbeat_ms < ?1",
                params![alive_after - 60_000],
            )
            .map_err(write_err)?;
            if !shutting_down {
                claimed = claim(tx, me, alive_after, redeliver).map_err(write_err)?;
            }
            super::keys::expire(tx, now).map_err(write_err)?;
            let rows: i64 = tx
                .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
                .map_err(write_err)?;
            let peers: i64 = tx
                .query_row(
                    "SELECT count(*) FROM instances WHERE id != ?1 AND heartbeat_ms >= ?2",
                    params![me, alive_after],
                    |r| r.get(0),
                )
                .map_err(write_err)?;
            counts = (rows as u64, peers as u64);
            Ok(())
        })?;
        let file_bytes = ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", self.path.display())).ok())
            .map(|m| m.len())
            .sum();
        Ok(Beat {
            claimed,
            rows: counts.0,
            peers: counts.1,
            file_bytes,
        })
    }

    /// Leaves the instance table on a clean stop, so nobody waits for this one to go stale.
    pub(super) fn close(&mut self) {
        let _ = self.conn.execute(
            "DELETE FROM instances WHERE id = ?1",
            params![self.me.as_str()],
        );
    }
}

const COLUMNS: &str = "id, priority, accepted_ms, deadline_ms, headers, body, client";

fn row_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTask> {
    Ok(StoredTask {
        id: r.get(0)?,
        priority: r.get(1)?,
        accepted_ms: r.get::<_, i64>(2)? as u64,
        deadline_ms: r.get::<_, i64>(3)? as u64,
        headers: r.get(4)?,
        body: r.get(5)?,
        client: r.get(6)?,
        idempotency: None,
    })
}

/// Where an owner counts as gone: none, or one without a recent heartbeat.
const ORPHANED: &str =
    "(owner IS NULL OR owner NOT IN (SELECT id FROM instances WHERE heartbeat_ms >= ?2))";

fn claim(
    tx: &Transaction<'_>,
    me: &str,
    alive_after: i64,
    redeliver: bool,
) -> rusqlite::Result<Vec<Claimed>> {
    let mut out = Vec::new();
    let mut take = |sql: &str, kind: ClaimKind| -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(sql)?;
        let rows = stmt.query_map(params![me, alive_after], row_task)?;
        for task in rows {
            out.push(Claimed { task: task?, kind });
        }
        Ok(())
    };
    take(
        &format!("UPDATE tasks SET owner = ?1 WHERE state = {ACCEPTED} AND {ORPHANED} RETURNING {COLUMNS}"),
        ClaimKind::Queued,
    )?;
    if redeliver {
        take(
            &format!("UPDATE tasks SET owner = ?1, state = {ACCEPTED} WHERE state = {DISPATCHED} AND {ORPHANED} RETURNING {COLUMNS}"),
            ClaimKind::Redeliver,
        )?;
    } else {
        // ?1 is unused here but keeps one parameter list for every claim.
        take(
            &format!("DELETE FROM tasks WHERE state = {DISPATCHED} AND ?1 IS NOT NULL AND {ORPHANED} RETURNING {COLUMNS}"),
            ClaimKind::Unknown,
        )?;
    }
    out.sort_by_key(|c| (c.task.priority, c.task.accepted_ms));
    Ok(out)
}

/// Inserts an accepted task owned by `me`.
pub(super) fn insert(tx: &Transaction<'_>, me: &str, t: &StoredTask) -> Result<(), JournalError> {
    tx.prepare_cached(
        "INSERT INTO tasks (id, state, owner, priority, accepted_ms, deadline_ms, headers, body, client)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.id,
            ACCEPTED,
            me,
            t.priority,
            t.accepted_ms as i64,
            t.deadline_ms as i64,
            t.headers,
            t.body,
            t.client
        ])
    })
    .and_then(|_| super::keys::insert(tx, t))
    .map_err(write_err)
}

/// Marks a task `dispatched` if this instance still owns it. A task this instance
/// already marked is `Go` again: a mark whose commit was reported failed may have
/// reached the disk, and only this instance's runner of the task marks it.
pub(super) fn mark_dispatched(
    tx: &Transaction<'_>,
    me: &str,
    id: &str,
) -> Result<DispatchMark, JournalError> {
    let changed = tx
        .prepare_cached(&format!(
            "UPDATE tasks SET state = {DISPATCHED} WHERE id = ?1 AND owner = ?2 AND state IN ({ACCEPTED}, {DISPATCHED})"
        ))
        .and_then(|mut s| s.execute(params![id, me]))
        .map_err(write_err)?;
    Ok(if changed == 1 {
        DispatchMark::Go
    } else {
        DispatchMark::HandedOver
    })
}

/// Forgets a task.
pub(super) fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), JournalError> {
    tx.prepare_cached("DELETE FROM tasks WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id]))
        .map(drop)
        .map_err(write_err)
}

/// Gives up this instance's undispatched tasks to whoever claims them next.
pub(super) fn release(tx: &Transaction<'_>, me: &str) -> Result<u64, JournalError> {
    tx.prepare_cached(&format!(
        "UPDATE tasks SET owner = NULL WHERE owner = ?1 AND state = {ACCEPTED}"
    ))
    .and_then(|mut s| s.execute(params![me]))
    .map(|n| n as u64)
    .map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, priority: u32) -> StoredTask {
        StoredTask {
            id: id.into(),
            priority,
            accepted_ms: 1,
            deadline_ms: u64::MAX >> 1,
            headers: b"x-wr-auth: k\r\n".to_vec(),
            body: b"{}".to_vec(),
            client: Some("billing".into()),
            idempotency: None,
        }
    }

    /// An instance that "crashed" with one task dispatched and two queued.
    fn crashed(path: &Path) {
        let mut dead = Writer::new(open(path, u64::MAX).unwrap(), "dead".into(), false);
        dead.heartbeat_and_claim(Duration::from_secs(3), true)
            .unwrap();
        dead.transaction(|tx, me| {
            insert(tx, me, &task("sent", 1))?;
            insert(tx, me, &task("late", 9))?;
            insert(tx, me, &task("urgent", 2))?;
            assert_eq!(mark_dispatched(tx, me, "sent")?, DispatchMark::Go);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_dead_instances_tasks_are_claimed_in_priority_order_and_sent_ones_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        crashed(&path);
        let mut next = Writer::new(open(&path, u64::MAX).unwrap(), "next".into(), false);
        // The dead instance's heartbeat is still fresh: nothing is taken yet.
        let beat = next
            .heartbeat_and_claim(Duration::from_secs(60), false)
            .unwrap();
        assert!(beat.claimed.is_empty());
        assert_eq!((beat.rows, beat.peers), (3, 1));
        let beat = next.heartbeat_and_claim(Duration::ZERO, false).unwrap();
        let got: Vec<_> = beat
            .claimed
            .iter()
            .map(|c| (c.task.id.as_str(), c.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("sent", ClaimKind::Unknown),
                ("urgent", ClaimKind::Queued),
                ("late", ClaimKind::Queued)
            ]
        );
        // Unknown ones leave the journal; claimed ones are now owned by `next`.
        assert_eq!(beat.rows, 2);
        assert!(next
            .heartbeat_and_claim(Duration::ZERO, false)
            .unwrap()
            .claimed
            .is_empty());
    }

    #[test]
    fn redeliver_unconfirmed_runs_sent_tasks_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        crashed(&path);
        let mut next = Writer::new(open(&path, u64::MAX).unwrap(), "next".into(), true);
        let beat = next.heartbeat_and_claim(Duration::ZERO, false).unwrap();
        let sent = beat.claimed.iter().find(|c| c.task.id == "sent").unwrap();
        assert_eq!(sent.kind, ClaimKind::Redeliver);
        assert_eq!(sent.task.headers, b"x-wr-auth: k\r\n");
    }

    #[test]
    fn a_released_task_cannot_be_dispatched_by_its_old_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut old = Writer::new(open(&path, u64::MAX).unwrap(), "old".into(), false);
        old.transaction(|tx, me| insert(tx, me, &task("a", 1)))
            .unwrap();
        old.transaction(|tx, me| release(tx, me).map(drop)).unwrap();
        let mut mark = None;
        old.transaction(|tx, me| {
            mark = Some(mark_dispatched(tx, me, "a")?);
            Ok(())
        })
        .unwrap();
        assert_eq!(mark, Some(DispatchMark::HandedOver));
    }

    #[test]
    fn a_mark_whose_commit_was_reported_failed_can_be_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut w = Writer::new(open(&path, u64::MAX).unwrap(), "me".into(), false);
        w.transaction(|tx, me| insert(tx, me, &task("a", 1)))
            .unwrap();
        for _ in 0..2 {
            let mut mark = None;
            w.transaction(|tx, me| {
                mark = Some(mark_dispatched(tx, me, "a")?);
                Ok(())
            })
            .unwrap();
            assert_eq!(mark, Some(DispatchMark::Go));
        }
    }

    #[test]
    fn a_foreign_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        std::fs::write(&path, b"not a database at all, just some words in a file").unwrap();
        let e = open(&path, u64::MAX).unwrap_err().to_string();
        assert!(e.contains(path.to_str().unwrap()), "{e}");
    }
}

//! Re-creating a journal whose file was deleted under the running process: the
//! connection still open on the deleted file sees every row, and they are copied
//! into a new file at the journal's path, so that nothing accepted is lost.

use std::path::Path;

use rusqlite::{params, Connection, TransactionBehavior};

use super::store;
use super::{Detail, JournalError};

fn copy_err(path: &Path, e: rusqlite::Error) -> JournalError {
    JournalError::Open(Detail::caused(
        format!("{}: re-creating the journal", path.display()),
        e,
    ))
}

/// Creates a fresh journal at `path` (removing the deleted file's `-wal` and
/// `-shm` if they are still at the path) holding every row `old` sees. Returns the
/// new connection and how many tasks were copied.
pub(super) fn recreate(
    old: &Connection,
    path: &Path,
    max_bytes: u64,
) -> Result<(Connection, u64), JournalError> {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut new = store::open(path, max_bytes)?;
    let tx = new
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| copy_err(path, e))?;
    let copied = copy_rows(old, &tx).map_err(|e| copy_err(path, e))?;
    tx.commit().map_err(|e| copy_err(path, e))?;
    Ok((new, copied))
}

fn copy_rows(old: &Connection, new: &Connection) -> rusqlite::Result<u64> {
    let mut read = old.prepare(
        "SELECT id, state, owner, priority, accepted_ms, deadline_ms, headers, body, client FROM tasks",
    )?;
    let mut insert = new.prepare(
        "INSERT OR IGNORE INTO tasks (id, state, owner, priority, accepted_ms, deadline_ms, headers, body, client)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut rows = read.query([])?;
    let mut copied = 0;
    while let Some(r) = rows.next()? {
        insert.execute(params![
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Vec<u8>>(6)?,
            r.get::<_, Vec<u8>>(7)?,
            r.get::<_, Option<String>>(8)?,
        ])?;
        copied += 1;
    }
    super::keys::copy(old, new)?;
    let mut read = old.prepare("SELECT id, heartbeat_ms FROM instances")?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        new.execute(
            "INSERT OR REPLACE INTO instances (id, heartbeat_ms) VALUES (?1, ?2)",
            params![r.get::<_, String>(0)?, r.get::<_, i64>(1)?],
        )?;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_journals_rows_are_copied_into_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let old = store::open(&path, u64::MAX).unwrap();
        old.execute(
            "INSERT INTO tasks VALUES ('a', 0, 'me', 1, 1, 2, x'00', x'7b7d', 'billing')",
            [],
        )
        .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            std::fs::remove_file(format!("{}{suffix}", path.display())).unwrap();
        }
        let (new, copied) = recreate(&old, &path, u64::MAX).unwrap();
        assert_eq!(copied, 1);
        let n: i64 = new
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        // The old connection is never closed: closing it would delete the new
        // file's WAL by name.
        std::mem::forget(old);
    }
}

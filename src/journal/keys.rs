//! What the SQLite journal keeps beside its tasks for task control (#23): the
//! client of each task (a column added to journals written before it), and the
//! `Idempotency-Key`s of accepted webhook tasks, which outlive their tasks until
//! they expire so that a repeat after a restart still starts nothing new.

use rusqlite::{params, Connection, Transaction};

use super::{RestoredKey, StoredKey, StoredTask};

/// Brings a journal's schema up to date: the `client` column (old rows read as
/// `NULL`) and the `idempotency` table. Older binaries still read the file: they
/// name their columns and never see the new ones.
pub(super) fn ensure_schema(conn: &Connection) -> rusqlite::Result<()> {
    let has_client = conn
        .prepare("SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'client'")?
        .exists([])?;
    if !has_client {
        conn.execute_batch("ALTER TABLE tasks ADD COLUMN client TEXT")?;
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS idempotency (
             key BLOB PRIMARY KEY,
             body BLOB NOT NULL,
             task_id TEXT NOT NULL,
             expires_ms INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires_ms);",
    )
}

/// Keeps task `t`'s key, if it has one, in the transaction that keeps the task.
pub(super) fn insert(tx: &Transaction<'_>, t: &StoredTask) -> rusqlite::Result<()> {
    let Some(k) = &t.idempotency else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, body, task_id, expires_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&k.key[..], &k.body[..], t.id, k.expires_ms as i64])
    .map(drop)
}

/// Forgets the keys expired at `now_ms`.
pub(super) fn expire(tx: &Transaction<'_>, now_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM idempotency WHERE expires_ms <= ?1")?
        .execute(params![now_ms])
        .map(drop)
}

/// The keys still valid at `now_ms`, newest last, at most `max`.
pub(super) fn load(
    conn: &Connection,
    now_ms: i64,
    max: usize,
) -> rusqlite::Result<Vec<RestoredKey>> {
    let mut stmt = conn.prepare(
        "SELECT key, body, task_id, expires_ms FROM (
             SELECT * FROM idempotency WHERE expires_ms > ?1 ORDER BY expires_ms DESC LIMIT ?2
         ) ORDER BY expires_ms",
    )?;
    let rows = stmt.query_map(params![now_ms, max as i64], |r| {
        let digest = |i| -> rusqlite::Result<[u8; 32]> {
            let v: Vec<u8> = r.get(i)?;
            v.try_into().map_err(|_| {
                rusqlite::Error::InvalidColumnType(i, "digest".into(), rusqlite::types::Type::Blob)
            })
        };
        Ok(RestoredKey {
            key: StoredKey {
                key: digest(0)?,
                body: digest(1)?,
                expires_ms: r.get::<_, i64>(3)?.max(0) as u64,
            },
            task_id: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// The keys still valid in the journal at `path`, read on a connection of their
/// own (beside the writer's) at start-up, at most `max`, newest last.
pub(super) fn read_file(path: &std::path::Path, max: usize) -> rusqlite::Result<Vec<RestoredKey>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    load(&conn, now, max)
}

/// Copies the keys into a re-created journal (its file was deleted).
pub(super) fn copy(old: &Connection, new: &Connection) -> rusqlite::Result<()> {
    let mut read = old.prepare("SELECT key, body, task_id, expires_ms FROM idempotency")?;
    let mut write = new.prepare(
        "INSERT OR IGNORE INTO idempotency (key, body, task_id, expires_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let (key, body): (Vec<u8>, Vec<u8>) = (r.get(0)?, r.get(1)?);
        let (id, expires): (String, i64) = (r.get(2)?, r.get(3)?);
        write.execute(params![key, body, id, expires])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_journal_gains_the_client_column_and_keeps_its_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, state INTEGER NOT NULL, owner TEXT,
                 priority INTEGER NOT NULL, accepted_ms INTEGER NOT NULL,
                 deadline_ms INTEGER NOT NULL, headers BLOB NOT NULL, body BLOB NOT NULL);
             INSERT INTO tasks VALUES ('old', 0, NULL, 1, 1, 2, x'00', x'7b7d');",
        )
        .unwrap();
        ensure_schema(&conn).unwrap();
        ensure_schema(&conn).unwrap();
        let client: Option<String> = conn
            .query_row("SELECT client FROM tasks WHERE id = 'old'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(client, None);
    }

    #[test]
    fn keys_are_kept_until_they_expire() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE tasks (id TEXT)").unwrap();
        ensure_schema(&conn).unwrap();
        let task = |id: &str, expires_ms| StoredTask {
            id: id.into(),
            priority: 1,
            accepted_ms: 0,
            deadline_ms: 0,
            headers: vec![],
            body: vec![],
            client: None,
            idempotency: Some(StoredKey {
                key: [id.as_bytes()[0]; 32],
                body: [7; 32],
                expires_ms,
            }),
        };
        let tx = conn.transaction().unwrap();
        insert(&tx, &task("a", 100)).unwrap();
        insert(&tx, &task("b", 300)).unwrap();
        insert(&tx, &task("c", 200)).unwrap();
        expire(&tx, 100).unwrap();
        tx.commit().unwrap();
        let kept = load(&conn, 150, 10).unwrap();
        let ids: Vec<_> = kept.iter().map(|k| k.task_id.as_str()).collect();
        assert_eq!(ids, ["c", "b"]);
        assert_eq!(kept[1].key.body, [7; 32]);
        assert_eq!(load(&conn, 150, 1).unwrap()[0].task_id, "b", "newest kept");
    }
}

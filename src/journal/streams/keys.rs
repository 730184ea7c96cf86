//! `Idempotency-Key`s of webhook tasks in Redis, shared by every instance: one
//! string per key, `andera-lb:idempotency:<hex of the key's digest>`, whose value
//! is `<phase>:<hex of the body's digest>:<task id>`. A new key is taken as
//! `pending` with `SET NX` for [`PENDING_MS`] while its task is being accepted; the
//! `XADD` that accepts the task rewrites it as `accepted` for the key's TTL in the
//! same transaction, so a task is never accepted without its key nor the reverse.

use redis::aio::ConnectionManager;

use super::{broken, write_err, RedisJournal};
use crate::journal::{JournalError, KeyHolder, StoredKey, StoredTask};

/// How long a key stays `pending` when its task is never accepted (refused, or its
/// instance died between the two writes): its repeats get `409` meanwhile.
pub const PENDING_MS: u64 = 30_000;

const PREFIX: &str = "andera-lb:idempotency:";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Redis key of `key`.
pub fn name(key: &StoredKey) -> String {
    format!("{PREFIX}{}", hex(&key.key))
}

/// The value kept for `key`'s task `id` in `phase` (`p` pending, `a` accepted).
pub fn value(phase: char, key: &StoredKey, id: &str) -> String {
    format!("{phase}:{}:{id}", hex(&key.body))
}

/// Who holds a key, from its value.
fn holder(found: &str, key: &StoredKey) -> KeyHolder {
    let mut parts = found.splitn(3, ':');
    let (phase, body, id) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let id = id.to_string();
    match (phase, body == Some(hex(&key.body).as_str())) {
        (_, false) => KeyHolder::OtherBody(id),
        (Some("a"), true) => KeyHolder::Accepted(id),
        _ => KeyHolder::Pending(id),
    }
}

/// The `SET` that accepts `t`'s key for its TTL, queued in the `XADD`'s transaction.
pub fn accept_in(pipe: &mut redis::Pipeline, t: &StoredTask, now_ms: u64) {
    if let Some(k) = &t.idempotency {
        let ttl = k.expires_ms.saturating_sub(now_ms).max(1);
        pipe.cmd("SET")
            .arg(name(k))
            .arg(value('a', k, &t.id))
            .arg("PX")
            .arg(ttl)
            .ignore();
    }
}

async fn take_once(
    conn: &mut ConnectionManager,
    key: &StoredKey,
    id: &str,
) -> redis::RedisResult<KeyHolder> {
    let (set, found): (Option<String>, Option<String>) = redis::pipe()
        .cmd("SET")
        .arg(name(key))
        .arg(value('p', key, id))
        .arg("NX")
        .arg("PX")
        .arg(PENDING_MS)
        .cmd("GET")
        .arg(name(key))
        .query_async(conn)
        .await?;
    Ok(match (set, found) {
        (Some(_), _) | (None, None) => KeyHolder::Mine,
        (None, Some(found)) => holder(&found, key),
    })
}

impl RedisJournal {
    /// Takes `key` for task `id`, or tells who holds it (on any instance).
    pub async fn take_key(&self, key: &StoredKey, id: &str) -> Result<KeyHolder, JournalError> {
        let mut conn = self.conn.clone();
        let mut result = take_once(&mut conn, key, id).await;
        if result.as_ref().is_err_and(broken) {
            result = take_once(&mut conn, key, id).await;
        }
        result.map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_names_its_phase_body_and_task() {
        let k = StoredKey {
            key: [1; 32],
            body: [2; 32],
            expires_ms: 0,
        };
        let other = StoredKey { body: [3; 32], ..k };
        assert_eq!(
            holder(&value('a', &k, "t1"), &k),
            KeyHolder::Accepted("t1".into())
        );
        assert_eq!(
            holder(&value('p', &k, "t1"), &k),
            KeyHolder::Pending("t1".into())
        );
        assert_eq!(
            holder(&value('a', &other, "t1"), &k),
            KeyHolder::OtherBody("t1".into())
        );
        assert!(name(&k).starts_with(PREFIX) && name(&k).len() == PREFIX.len() + 64);
    }
}

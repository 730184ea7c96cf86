//! The Redis side of the stream engine: key names, Lua scripts, and replies read
//! back into tasks.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use redis::Value;

use super::StoredTask;

/// The stream holding every accepted, unfinished webhook task.
pub(super) const STREAM: &str = "andera-lb:webhook-tasks";
/// Hash of entries sent to a Worker: entry id → consumer that sent it.
pub(super) const DISPATCHED: &str = "andera-lb:webhook-dispatched";
/// Hash of unfinished tasks: task id → stream entry id, so that any instance can
/// look a task up or cancel it (`GET`/`DELETE /task/{id}`).
pub(super) const INDEX: &str = "andera-lb:webhook-index";
/// Channel on which an instance asks the others to cancel a task they hold.
pub(super) const CANCELS: &str = "andera-lb:webhook-cancel";
/// Adds a task to the stream (`ARGV[2..]`: its fields) and indexes it under its
/// task id (`ARGV[1]`) at once. Returns the entry id.
pub(super) const ACCEPT: &str = r"
local e = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[2], ARGV[1], e)
return e";
/// The consumer group every instance reads through.
pub(super) const GROUP: &str = "andera-lb";
/// Pseudo-consumer that holds entries released by an instance shutting down,
/// marked long idle so that the next reader takes them at once.
pub(super) const RELEASED: &str = "andera-lb-released";
/// Marks an entry dispatched if `ARGV[3]` still owns it: 1, else 0.
pub(super) const MARK: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1";

/// Resets the idle time of the entries `ARGV[2]` still owns (ARGV[3..]), so nobody
/// takes over the tasks of a live instance. Returns how many it still owns.
pub(super) const REFRESH: &str = r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n";

/// Hands the undispatched entries `ARGV[2]` owns (ARGV[5..]) to the released
/// pseudo-consumer `ARGV[3]`, idle `ARGV[4]` ms. Returns how many.
pub(super) const RELEASE: &str = r"
local n = 0
for i = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] and redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i], 'IDLE', ARGV[4], 'JUSTID')
    n = n + 1
  end
end
return n";

/// Creates the stream and the group if missing. The group starts at the first
/// entry, so tasks added before it existed are read too.
pub(super) async fn create_group(conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
    let created = redis::cmd("XGROUP")
        .arg(&["CREATE", STREAM, GROUP, "0", "MKSTREAM"])
        .query_async::<()>(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Acknowledges and deletes entries, and forgets their dispatch marks and the index
/// entries of their task `ids` (those known), at once.
pub(super) async fn end_entries(
    conn: &mut ConnectionManager,
    entries: &[String],
    ids: &[String],
) -> Result<(), redis::RedisError> {
    let mut pipe = redis::pipe();
    if !ids.is_empty() {
        pipe.cmd("HDEL").arg(INDEX).arg(ids).ignore();
    }
    pipe.atomic()
        .cmd("XACK")
        .arg(STREAM)
        .arg(GROUP)
        .arg(entries)
        .ignore()
        .cmd("XDEL")
        .arg(STREAM)
        .arg(entries)
        .ignore()
        .cmd("HDEL")
        .arg(DISPATCHED)
        .arg(entries)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// `[[id, [field, value, …]], …]` → `(id, task)`; the task is `None` when the
/// entry was deleted or is not one of ours.
pub(super) fn entries(v: Value) -> Vec<(String, Option<StoredTask>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = text(&pair.pop()?)?;
            Some((id, task(fields)))
        })
        .collect()
}

/// A bulk or simple string reply as text.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An entry's fields as a task, `None` when one is missing.
pub(super) fn task(fields: Value) -> Option<StoredTask> {
    let Value::Array(kv) = fields else {
        return None;
    };
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    for pair in kv.chunks(2) {
        if let [Value::BulkString(k), Value::BulkString(v)] = pair {
            map.insert(String::from_utf8_lossy(k).into_owned(), v.clone());
        }
    }
    let num = |k: &str| -> Option<u64> { std::str::from_utf8(map.get(k)?).ok()?.parse().ok() };
    Some(StoredTask {
        id: String::from_utf8(map.get("id")?.clone()).ok()?,
        priority: num("priority")? as u32,
        accepted_ms: num("accepted_ms")?,
        deadline_ms: num("deadline_ms")?,
        headers: map.remove("headers")?,
        body: map.remove("body")?,
        // Entries written before clients were kept have none.
        client: map.remove("client").and_then(|c| String::from_utf8(c).ok()),
        idempotency: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn an_entry_reads_back_as_the_task_and_a_foreign_one_as_none() {
        let fields = Value::Array(vec![
            bulk(b"id"),
            bulk(b"t-1"),
            bulk(b"priority"),
            bulk(b"2"),
            bulk(b"accepted_ms"),
            bulk(b"10"),
            bulk(b"deadline_ms"),
            bulk(b"20"),
            bulk(b"headers"),
            bulk(b"x-wr-auth: k\r\n"),
            bulk(b"body"),
            bulk(b"{}"),
        ]);
        let reply = Value::Array(vec![
            Value::Array(vec![bulk(b"1-1"), fields]),
            Value::Array(vec![
                bulk(b"1-2"),
                Value::Array(vec![bulk(b"x"), bulk(b"y")]),
            ]),
            Value::Array(vec![bulk(b"1-3"), Value::Nil]),
        ]);
        let got = entries(reply);
        assert_eq!(got.len(), 3);
        let t = got[0].1.as_ref().unwrap();
        assert_eq!(
            (got[0].0.as_str(), t.id.as_str(), t.priority),
            ("1-1", "t-1", 2)
        );
        assert_eq!((t.accepted_ms, t.deadline_ms), (10, 20));
        assert_eq!(t.headers, b"x-wr-auth: k\r\n");
        assert!(got[1].1.is_none() && got[2].1.is_none());
    }
}

//! The Redis journal's upkeep: refreshing the entries this instance holds (so
//! that nobody takes over a live instance's tasks), retrying ends that failed,
//! counting peers, removing long-gone consumers, and the metrics.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use redis::Value;

use super::super::wire::{end_entries, text, GROUP, RELEASED, STREAM};
use super::super::{JournalState, JOURNAL_METRICS};
use super::{RedisJournal, CONSUMER_GONE, REFRESH_SCRIPT};

/// Keeps this instance's entries fresh, retries ends that failed, counts peers and
/// removes long-gone consumers, and updates the metrics.
pub(super) async fn upkeep_loop(journal: Weak<RedisJournal>) {
    loop {
        let Some(j) = journal.upgrade() else { return };
        let period = (j.claim_idle / 3).max(Duration::from_millis(50));
        if j.stopped.load(Ordering::Acquire) {
            return;
        }
        match upkeep(&j).await {
            Ok(()) => j.health.recovered_from(JournalState::Unavailable),
            Err(e) => {
                log::debug!("task journal upkeep: {e}");
                if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() {
                    let detail = format!("cannot reach Redis: {e}");
                    j.health.set(JournalState::Unavailable, detail);
                }
            }
        }
        drop(j);
        tokio::time::sleep(period).await;
    }
}

async fn upkeep(j: &RedisJournal) -> Result<(), redis::RedisError> {
    let mut conn = j.conn.clone();
    let entries: Vec<String> = j.held.lock().values().map(|h| h.entry.clone()).collect();
    if !entries.is_empty() && !j.is_released() {
        let mut call = REFRESH_SCRIPT.key(STREAM);
        call.arg(GROUP).arg(&j.me).arg(&entries);
        call.invoke_async::<i64>(&mut conn).await?;
    }
    let retry = std::mem::take(&mut *j.unfinished.lock());
    if !retry.is_empty() {
        if let Err(e) = end_entries(&mut conn, &retry.entries, &retry.ids).await {
            j.unfinished.lock().extend(retry);
            return Err(e);
        }
    }
    let len: i64 = redis::cmd("XLEN")
        .arg(STREAM)
        .query_async(&mut conn)
        .await?;
    JOURNAL_METRICS.tasks.set(len);
    let bytes: Option<i64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .unwrap_or(None);
    JOURNAL_METRICS.bytes.set(bytes.unwrap_or(0));
    let consumers: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(STREAM)
        .arg(GROUP)
        .query_async(&mut conn)
        .await?;
    let Value::Array(consumers) = consumers else {
        return Ok(());
    };
    let mut peers = 0;
    for c in consumers {
        let fields: HashMap<String, Value> = match c {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|p| Some((text(&p[0])?, p.get(1)?.clone())))
                .collect(),
            Value::Map(kv) => kv
                .into_iter()
                .filter_map(|(k, v)| Some((text(&k)?, v)))
                .collect(),
            _ => continue,
        };
        let int = |k: &str| match fields.get(k) {
            Some(Value::Int(n)) => *n as u64,
            _ => u64::MAX,
        };
        let Some(name) = fields.get("name").and_then(text) else {
            continue;
        };
        let idle = Duration::from_millis(int("idle"));
        if name != j.me && name != RELEASED && idle < j.claim_idle {
            peers += 1;
        }
        if name != j.me && int("pending") == 0 && idle > CONSUMER_GONE.max(j.claim_idle * 10) {
            redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(STREAM)
                .arg(GROUP)
                .arg(&name)
                .query_async::<()>(&mut conn)
                .await?;
        }
    }
    j.peers.store(peers, Ordering::Relaxed);
    Ok(())
}

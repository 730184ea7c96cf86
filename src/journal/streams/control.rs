//! Task control across instances with the Redis engine (`GET`/`DELETE /task/{id}`):
//! any instance looks up or cancels a webhook task that another accepted, through
//! the stream's index (task id → entry). A cancel also reaches the instance that
//! holds the task: the asking instance publishes the id on [`CANCELS`], and every
//! instance cancels it if it is live there (its own way: out of the queue, or its
//! Worker connection closed).

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::mpsc;

use super::super::wire::{task, CANCELS, DISPATCHED, GROUP, INDEX, STREAM};
use super::{broken, write_err, RedisJournal};
use crate::journal::{JournalError, StoredTask};

/// The task indexed under `ARGV[1]` and whether it was sent to a Worker:
/// `{fields, 0|1}`, or nil when it is not in the stream.
const FIND: &str = r"
local e = redis.call('HGET', KEYS[2], ARGV[1])
if not e then return false end
local r = redis.call('XRANGE', KEYS[1], e, e)
if #r == 0 then return false end
return {r[1][2], redis.call('HEXISTS', KEYS[3], e)}";

/// Removes task `ARGV[2]` unless it was sent to a Worker: 1 removed, 2 sent (it
/// runs somewhere), 0 not in the stream. An instance holding it finds it gone when
/// it marks it dispatched, and does not send it.
const CANCEL: &str = r"
local e = redis.call('HGET', KEYS[2], ARGV[2])
if not e then return 0 end
if redis.call('HEXISTS', KEYS[3], e) == 1 then return 2 end
redis.call('XACK', KEYS[1], ARGV[1], e)
redis.call('XDEL', KEYS[1], e)
redis.call('HDEL', KEYS[2], ARGV[2])
return 1";

static FIND_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(FIND));
static CANCEL_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CANCEL));

/// Wait before subscribing again after the cancel channel's connection failed.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// An unfinished task as the shared queue knows it.
#[derive(Debug)]
pub struct SharedTask {
    /// The task as it was accepted (its client, body and priority).
    pub task: StoredTask,
    /// True once an instance sent it to a Worker.
    pub sent: bool,
}

/// What [`RedisJournal::cancel_shared`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedCancel {
    /// Taken out of the shared queue before any Worker had it.
    Removed,
    /// Sent to a Worker by an instance; that instance was asked to stop it (`true`
    /// when at least one instance was listening).
    Running(bool),
    /// Not in the shared queue (finished, or never accepted).
    Gone,
}

impl RedisJournal {
    /// Task `id` as the shared queue has it, if it is there.
    pub async fn find(&self, id: &str) -> Result<Option<SharedTask>, JournalError> {
        let mut conn = self.conn.clone();
        let mut call = FIND_SCRIPT.key(STREAM);
        call.key(INDEX).key(DISPATCHED).arg(id);
        let mut reply = call.invoke_async::<Value>(&mut conn).await;
        if reply.as_ref().is_err_and(broken) {
            reply = call.invoke_async::<Value>(&mut conn).await;
        }
        let Value::Array(mut parts) = reply.map_err(write_err)? else {
            return Ok(None);
        };
        if parts.len() != 2 {
            return Ok(None);
        }
        let sent = matches!(parts.pop(), Some(Value::Int(1)));
        let found = parts.pop().and_then(task).filter(|t| t.id == id);
        Ok(found.map(|task| SharedTask { task, sent }))
    }

    /// Cancels task `id` wherever it is: out of the shared queue if no Worker has it
    /// yet, and on the instance holding it (told through `CANCELS`).
    pub async fn cancel_shared(&self, id: &str) -> Result<SharedCancel, JournalError> {
        let mut conn = self.conn.clone();
        let mut call = CANCEL_SCRIPT.key(STREAM);
        call.key(INDEX).key(DISPATCHED).arg(GROUP).arg(id);
        let mut done = call.invoke_async::<i64>(&mut conn).await;
        if done.as_ref().is_err_and(broken) {
            done = call.invoke_async::<i64>(&mut conn).await;
        }
        let outcome = match done.map_err(write_err)? {
            0 => return Ok(SharedCancel::Gone),
            1 => SharedCancel::Removed,
            _ => SharedCancel::Running(false),
        };
        let told: i64 = redis::cmd("PUBLISH")
            .arg(CANCELS)
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(write_err)?;
        Ok(match outcome {
            SharedCancel::Running(_) => SharedCancel::Running(told > 0),
            other => other,
        })
    }

    /// The ids other instances asked to cancel, as they arrive (given once: the
    /// caller cancels each one if it is live here).
    pub fn cancel_requests(&self) -> Option<mpsc::Receiver<String>> {
        self.cancel_requests.lock().take()
    }
}

/// Cancel requests kept for the taker at most (beyond, new ones are dropped: a
/// burst of cancels for tasks held elsewhere is not worth unbounded memory).
pub(super) const CANCEL_BACKLOG: usize = 1024;

/// Listens on [`CANCELS`] while someone takes the requests, subscribing again after
/// a lost connection, and hands each id to `tx`.
pub(super) async fn listen_for_cancels(client: redis::Client, tx: mpsc::Sender<String>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                match pubsub.subscribe(CANCELS).await {
                    Ok(()) => {
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let Ok(id) = msg.get_payload::<String>() else {
                                continue;
                            };
                            match tx.try_send(id) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(id)) => {
                                    log::warn!("task journal: cancel of task {id} dropped: too many at once");
                                }
                                // Nobody takes cancels any more.
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                    Err(e) => log::debug!("task journal: cannot subscribe to cancels: {e}"),
                }
            }
            Err(e) => log::debug!("task journal: no connection for cancels: {e}"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

//! Admission: a task id, a Worker pool that can take the task (or its place in
//! the queue), and the queued-bytes budget for a task that must wait.

use pingora::prelude::*;
use tokio::time::Instant;

use crate::app::App;
use crate::board::TaskHandle;
use crate::dispatch::TaskError;
use crate::task::TaskSpec;

/// A task id unique across instances and restarts: a UUIDv7 (time-ordered, so ids
/// sort by arrival on boards and in logs), e.g. `01938c7e-5b2a-7c3d-9e4f-1a2b3c4d5e6f`.
pub fn next_task_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Admits a task. Right after start-up (an upgrade hands the listeners over before
/// the first polls), "no Worker" waits for the first discovery round instead of
/// refusing a task that a Worker about to be discovered could run.
pub(crate) async fn admit(
    app: &App,
    spec: &TaskSpec,
    deadline: Instant,
) -> Result<crate::scheduler::Acquire, TaskError> {
    match app.dispatcher.admit(spec) {
        Err(TaskError::NoWorker(_)) if !app.registry.is_warm() => {
            app.registry.wait_warm(deadline).await;
            app.dispatcher.admit(spec)
        }
        other => other,
    }
}

/// A task that must wait for a slot reserves its body's bytes in the queued-bytes
/// budget until it leaves the queue; over budget it is refused like a full queue.
pub(super) fn hold_queued_bytes(
    app: &App,
    admission: &crate::scheduler::Acquire,
    record: &TaskHandle,
    bytes: usize,
) -> Result<(), TaskError> {
    if matches!(admission, crate::scheduler::Acquire::Ready(_)) {
        return Ok(());
    }
    let reserved = app
        .queued_bytes
        .try_reserve(bytes)
        .ok_or(TaskError::QueueFull)?;
    record.hold_while_queued(reserved);
    Ok(())
}

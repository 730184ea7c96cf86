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
pub(crate) fn next_task_id() -> String {
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
    match app.dispatcher().admit(spec) {
        Err(TaskError::NoWorker(_)) if !app.registry().is_warm() => {
            app.registry().wait_warm(deadline).await;
            app.dispatcher().admit(spec)
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
        .queued_bytes()
        .try_reserve(bytes)
        .ok_or(TaskError::QueueFull)?;
    record.hold_while_queued(reserved);
    Ok(())
}

/// The request header that shortens this task's limit (`x-andera-timeout-ms`).
pub(super) const TIMEOUT_HEADER: &str = "x-andera-timeout-ms";

/// The task's limit for queueing plus the Worker's response head: `task_timeout`,
/// or less when the client sent `x-andera-timeout-ms` (it never lengthens it).
/// `Err` for a value that is not a whole number of milliseconds from 1.
pub(super) fn task_limit(
    header: Option<&http::HeaderValue>,
    task_timeout: std::time::Duration,
) -> Result<std::time::Duration, &'static str> {
    let Some(value) = header else {
        return Ok(task_timeout);
    };
    let digits = value.as_bytes().trim_ascii();
    let ms = std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .map(|d| d.parse::<u64>().unwrap_or(u64::MAX))
        .filter(|ms| *ms > 0)
        .ok_or(
            "Invalid x-andera-timeout-ms header: must be a whole number of milliseconds, 1 or more",
        )?;
    Ok(task_timeout.min(std::time::Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_timeout_header_only_shortens_the_task_timeout() {
        let limit = Duration::from_secs(300);
        let of = |v: &str| task_limit(Some(&http::HeaderValue::from_str(v).unwrap()), limit);
        assert_eq!(task_limit(None, limit), Ok(limit));
        assert_eq!(of("500"), Ok(Duration::from_millis(500)));
        assert_eq!(of(" 2000 "), Ok(Duration::from_secs(2)));
        assert_eq!(of("600000"), Ok(limit), "never lengthened");
        assert_eq!(of("99999999999999999999999"), Ok(limit));
        for bad in ["0", "", "-5", "1.5", "2s", "+3", "abc"] {
            assert!(of(bad).is_err(), "{bad:?}");
        }
    }
}

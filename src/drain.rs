//! Counting tasks in progress for the graceful drain, and telling them when the
//! grace period is over. The drain itself runs in [`crate::shutdown`].

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

/// Counts tasks in progress and open client connections, and tells tasks when to
/// give up.
pub(crate) struct Drain {
    tasks: TaskTracker,
    connections: TaskTracker,
    abort: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tasks: TaskTracker::new(),
            connections: TaskTracker::new(),
            abort: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Marks a task as in progress until the guard is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> ActiveTask {
        ActiveTask {
            _token: self.tasks.token(),
        }
    }

    /// Counts a client connection as open until the guard is dropped.
    pub(crate) fn track_connection(self: &Arc<Self>) -> OpenConnection {
        OpenConnection {
            _token: self.connections.token(),
        }
    }

    /// Tasks in progress.
    pub(crate) fn active(&self) -> usize {
        self.tasks.len()
    }

    /// Client connections open (idle ones included).
    pub(crate) fn connections(&self) -> usize {
        self.connections.len()
    }

    /// True once every client connection is closed, false if `until` comes first.
    pub(crate) async fn connections_closed_by(&self, until: tokio::time::Instant) -> bool {
        self.connections.close();
        tokio::time::timeout_at(until, self.connections.wait())
            .await
            .is_ok()
    }

    /// Resolves when the grace period is over and remaining tasks must end.
    pub(crate) async fn aborted(&self) {
        let mut rx = self.abort.subscribe();
        let _ = rx.wait_for(|cut| *cut).await;
    }

    /// True once no task is in progress, false if `until` comes first.
    pub(crate) async fn idle_by(&self, until: tokio::time::Instant) -> bool {
        // Closing only lets `wait` resolve at zero: tasks may still be added (a
        // webhook task's runner) and are waited for too.
        self.tasks.close();
        tokio::time::timeout_at(until, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Tells every task in progress that the grace period is over.
    pub(crate) fn abort_all(&self) {
        self.abort.send_replace(true);
    }
}

/// An open client connection (see [`Drain::track_connection`]).
pub(crate) struct OpenConnection {
    _token: TaskTrackerToken,
}

/// A task in progress (see [`Drain::track`]); it stops counting when dropped.
pub(crate) struct ActiveTask {
    _token: TaskTrackerToken,
}

//! Cancellation of live tasks (`DELETE /task/{id}`): each task that waits for a
//! slot or runs on a Worker here registers a signal under its id while it lives;
//! a cancel fires it, and the task's own future (the client's request, or the
//! webhook runner) stops at once, leaving the queue or closing the Worker's
//! connection.
//!
//! Memory: one entry per live task of this instance (bounded by the queue,
//! `tasks.max_queued`, plus the Worker slots), about 300 bytes each; an entry is
//! removed when its task ends.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// One live task's cancel signal and the client it belongs to.
#[derive(Clone)]
struct Entry {
    token: CancellationToken,
    client: Option<Arc<str>>,
    serial: u64,
    /// Where it waits for a slot, while it does.
    place: Option<crate::scheduler::QueuePlace>,
}

/// The cancel signals of this instance's live tasks, by task id.
#[derive(Default)]
pub(crate) struct Cancels {
    live: Mutex<foldhash::HashMap<Box<str>, Entry>>,
    serial: std::sync::atomic::AtomicU64,
}

/// What [`Cancels::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    /// The task was live here and is told to stop.
    Cancelled,
    /// No live task of this id here (never was, or it has ended).
    NotLive,
    /// The task is live but belongs to another client: treat as unknown.
    OtherClient,
}

impl Cancels {
    /// Registers task `id` of `client` (`None`: an operator's or a journal's task
    /// without one); the entry lives as long as the returned guard.
    pub(crate) fn register(self: &Arc<Self>, id: &str, client: Option<Arc<str>>) -> CancelGuard {
        let token = CancellationToken::new();
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = Entry {
            token: token.clone(),
            client,
            serial,
            place: None,
        };
        self.live.lock().insert(id.into(), entry);
        CancelGuard {
            cancels: self.clone(),
            id: id.into(),
            token,
            serial,
        }
    }

    /// Fires task `id`'s signal if it is live here and `client` may cancel it
    /// (`None`: any task, the admin key).
    pub(crate) fn cancel(&self, id: &str, client: Option<&str>) -> CancelOutcome {
        let Some(entry) = self.live.lock().get(id).cloned() else {
            return CancelOutcome::NotLive;
        };
        if client.is_some_and(|c| entry.client.as_deref() != Some(c)) {
            return CancelOutcome::OtherClient;
        }
        entry.token.cancel();
        CancelOutcome::Cancelled
    }

    /// The client of live task `id`, if it is live here (`Some(None)`: no client).
    pub(crate) fn client_of(&self, id: &str) -> Option<Option<Arc<str>>> {
        self.live.lock().get(id).map(|e| e.client.clone())
    }

    /// Task `id`'s position in its queue (1: next), if it is live here and waiting.
    pub(crate) fn queue_position(&self, id: &str) -> Option<usize> {
        let place = self.live.lock().get(id)?.place.clone()?;
        place.position()
    }

    /// Live tasks registered right now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// True when no task is registered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A live task's registration: its signal, removed from [`Cancels`] when dropped.
pub(crate) struct CancelGuard {
    cancels: Arc<Cancels>,
    id: Box<str>,
    token: CancellationToken,
    serial: u64,
}

impl CancelGuard {
    /// Resolves once the task is cancelled (never, if it is not).
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// True once the task was cancelled.
    #[cfg(test)]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Notes where the task waits for a slot, for `queuePosition`.
    pub(crate) fn waits_at(&self, admission: &crate::scheduler::Acquire) {
        let crate::scheduler::Acquire::Queued(waiting) = admission else {
            return;
        };
        if let Some(e) = self.cancels.live.lock().get_mut(&*self.id) {
            if e.serial == self.serial {
                e.place = Some(waiting.place());
            }
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let mut live = self.cancels.live.lock();
        // A later task registered under the same id (a journal's resume) keeps its entry.
        if live.get(&*self.id).is_some_and(|e| e.serial == self.serial) {
            live.remove(&*self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_fires_only_the_clients_own_live_task() {
        let cancels = Arc::new(Cancels::default());
        let guard = cancels.register("t1", Some("billing".into()));
        assert_eq!(
            cancels.cancel("t1", Some("other")),
            CancelOutcome::OtherClient
        );
        assert!(!guard.is_cancelled());
        assert_eq!(
            cancels.cancel("t1", Some("billing")),
            CancelOutcome::Cancelled
        );
        guard.cancelled().await;
        drop(guard);
        assert_eq!(cancels.cancel("t1", None), CancelOutcome::NotLive);
        assert!(cancels.is_empty());
    }
}

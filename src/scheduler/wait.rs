//! Leases (a slot held by a task) and waits (a task queued for a slot).

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{AcquireError, Grant, Scheduler, WorkerId};
use crate::worker_url::WorkerUrl;

/// A slot on a Worker, held by one task. Dropping it gives the slot back exactly once.
pub struct Lease {
    scheduler: Arc<Scheduler>,
    grant: Grant,
}

impl Lease {
    pub(crate) fn new(scheduler: Arc<Scheduler>, grant: Grant) -> Lease {
        Lease { scheduler, grant }
    }

    /// The Worker holding the slot.
    pub fn worker(&self) -> WorkerId {
        self.grant.worker
    }

    /// Its base URL.
    pub fn url(&self) -> &Arc<WorkerUrl> {
        &self.grant.url
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The client's running count goes down first, so that the hand-off below
        // may pass the slot to a waiter of the same client held at `max_running`.
        drop(self.grant.client.take());
        self.scheduler.release(self.grant.worker, self.grant.tag);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({} on {})", self.grant.worker, self.grant.url)
    }
}

/// A task's place in the queue. Dropping it (timeout, client gone) leaves the queue
/// at once, and gives back a slot that was granted but never collected.
pub struct Waiting {
    scheduler: Arc<Scheduler>,
    pool: (Arc<str>, u64),
    key: super::WaitKey,
    rx: Option<oneshot::Receiver<Result<Grant, AcquireError>>>,
}

impl Waiting {
    pub(crate) fn new(
        scheduler: Arc<Scheduler>,
        pool: (Arc<str>, u64),
        key: super::WaitKey,
        rx: oneshot::Receiver<Result<Grant, AcquireError>>,
    ) -> Waiting {
        Waiting {
            scheduler,
            pool,
            key,
            rx: Some(rx),
        }
    }

    /// Where the task waits, to ask its position later (`GET /task/{id}`).
    pub fn place(&self) -> super::QueuePlace {
        super::QueuePlace {
            scheduler: Arc::downgrade(&self.scheduler),
            pool: self.pool.clone(),
            key: self.key,
        }
    }

    /// Waits for a slot until `deadline`.
    ///
    /// Not an `async fn`: one would keep `self` twice (its argument and its local)
    /// in the future of every task waiting for a slot.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores a by-value argument twice (rust-lang/rust#62958)"
    )]
    pub fn until(
        mut self,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Lease, AcquireError>> + Send {
        async move {
            let Some(rx) = self.rx.as_mut() else {
                return Err(AcquireError::TimedOut);
            };
            let outcome = tokio::time::timeout_at(deadline, rx).await;
            match outcome {
                Ok(Ok(result)) => {
                    // Answered: nothing for `drop` to cancel.
                    drop(self.rx.take());
                    result.map(|grant| Lease::new(self.scheduler.clone(), grant))
                }
                // The sender is only dropped with its pool, which fails waiters first.
                Ok(Err(_)) => {
                    drop(self.rx.take());
                    Err(AcquireError::UnknownPool)
                }
                // A task still in the waiting room of a group no Worker joined never
                // had a Worker to time out on: it gets the `503` it waited to avoid.
                Err(_) if !self.scheduler.has_members(&self.pool) => Err(AcquireError::UnknownPool),
                Err(_) => Err(AcquireError::TimedOut),
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            self.scheduler.cancel_wait(&self.pool, self.key);
            rx.close();
            if let Ok(Ok(mut grant)) = rx.try_recv() {
                // As for a lease: the client's count first, then the hand-off.
                drop(grant.client.take());
                self.scheduler.release(grant.worker, grant.tag);
            }
        }
    }
}

//! The one dispatch path shared by sync, stream and webhook tasks: take a slot
//! (queueing if needed), send the task to the Worker, and retry on another Worker
//! only when the first one provably never started it.
//!
//! - [`error`]: why a task ended without a Worker's answer ([`TaskError`]);
//! - [`headers`]: what the Worker is sent and what of its answer the client gets;
//! - [`retry`]: the delivery loop ([`Dispatcher::deliver`]);
//! - [`delivery`]: the answered exchange ([`Delivery`]), which counts its own failures;
//! - [`outliers`]: a Worker's answers and failures, towards its ejection.

use std::sync::Arc;

use tokio::time::Instant;

use crate::board::TaskHandle;
use crate::config::Settings;
use crate::metrics::{priority_class, METRICS};
use crate::scheduler::{Acquire, AcquireError, Lease, Scheduler, SlotRequest, Waiting};
use crate::task::TaskSpec;
use crate::upstream::Upstream;

mod delivery;
mod error;
mod headers;
mod outliers;
mod retry;

pub(crate) use delivery::Delivery;
pub(crate) use error::{describe, TaskError};
pub(crate) use headers::ForwardHeaders;
pub(crate) use retry::{DispatchGate, Outbound};

/// Sends tasks to Workers.
pub(crate) struct Dispatcher {
    /// Slots and queue.
    scheduler: Arc<Scheduler>,
    /// Connections to Workers, for tasks only (webhook failure notices have their
    /// own, `App::notices`).
    upstream: Upstream,
    /// Settings (attempts, timeouts).
    settings: Arc<Settings>,
}

impl Dispatcher {
    /// A dispatcher over `scheduler`, with its own connection pool.
    pub(crate) fn new(settings: Arc<Settings>, scheduler: Arc<Scheduler>) -> Self {
        let upstream = Upstream::new(
            settings.upstream.connect_timeout,
            settings.upstream.pool_idle_timeout,
            settings.upstream.ca_file.as_ref().and_then(|p| p.to_str()),
        );
        Dispatcher {
            scheduler,
            upstream,
            settings,
        }
    }

    /// Takes a slot or a place in the queue; fails at once when the task cannot run.
    pub(crate) fn admit(&self, spec: &TaskSpec) -> Result<Acquire, TaskError> {
        let req = SlotRequest {
            group: &spec.group,
            contract: spec.contract,
            function: &spec.function,
            priority: spec.priority,
            client: spec.client.as_ref().map(|c| crate::scheduler::ClientShare {
                name: &c.name,
                weight: c.weight,
                max_running: c.max_running,
                max_queued: c.max_queued,
            }),
        };
        self.scheduler
            .acquire(&req)
            .map_err(|e| TaskError::from_acquire(e, spec))
    }

    /// Waits for the slot `waiting` asks for, until `deadline`, measuring the wait.
    /// Not an `async fn`: one would keep `waiting` twice (argument and local) in
    /// the future of every task that waits.
    fn wait_for_slot<'a>(
        &'a self,
        waiting: Waiting,
        spec: &'a TaskSpec,
        deadline: Instant,
        task: &'a TaskHandle,
    ) -> impl std::future::Future<Output = Result<Lease, TaskError>> + Send + 'a {
        task.queued(self.scheduler.queued());
        let started = Instant::now();
        async move {
            let outcome = waiting.until(deadline).await;
            self.observe_wait(spec, started.elapsed().as_secs_f64());
            if matches!(outcome, Err(AcquireError::TimedOut)) {
                METRICS.queue_timeouts.inc();
            }
            outcome.map_err(|e| TaskError::from_acquire(e, spec))
        }
    }

    /// Counts a wait for a slot of `seconds` (0: one was free).
    fn observe_wait(&self, spec: &TaskSpec, seconds: f64) {
        // Admitted: a pool of this group exists, but in the waiting room
        // (`tasks.no_worker_wait_ms`) perhaps only for this task: a group no valid
        // Worker has had stays `other`, so that the label stays bounded.
        let known = self.scheduler.knows_group(&spec.group);
        let group = crate::metrics::bounded_label(&spec.group, known);
        METRICS
            .queue_wait
            .with_label_values(&[group, priority_class(spec.priority)])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests;

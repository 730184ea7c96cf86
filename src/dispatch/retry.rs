//! The delivery loop: take a slot, send, and try another Worker only while the
//! failure proves the first never started the task (unreachable, `503` maintenance).

use bytes::Bytes;
use tokio::time::Instant;

use super::{describe, Delivery, Dispatcher, ForwardHeaders, TaskError};
use crate::board::TaskHandle;
use crate::metrics::METRICS;
use crate::scheduler::{Acquire, Lease};
use crate::task::TaskSpec;
use crate::upstream::{Exchange, ExchangeError, Limits};

/// A task on its way to a Worker: what is sent, by when, and the record that
/// follows it.
pub(crate) struct Outbound<'a> {
    /// The task.
    pub spec: &'a TaskSpec,
    /// The client's headers, as the Worker gets them.
    pub headers: &'a ForwardHeaders,
    /// The task's body.
    pub body: &'a Bytes,
    /// When the task times out (`tasks.timeout_ms` from its arrival).
    pub deadline: Instant,
    /// Its record on the task board.
    pub task: &'a TaskHandle,
}

/// Awaited before a task is first sent; an error stops the delivery.
pub(crate) type DispatchGate<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TaskError>> + Send + 'a>>;

/// What one attempt's result means for the delivery.
enum Verdict<'a> {
    /// The Worker answered: relay it.
    Answered(Delivery<'a>),
    /// The Worker provably never started the task: another may take it.
    TryAnother(TaskError),
    /// The Worker may have started it: it is never sent elsewhere.
    Failed(TaskError),
}

impl Dispatcher {
    /// Delivers the task: waits for a slot, sends, and retries on another Worker while
    /// the failure proves the Worker never started it (connect/write failure, `503`),
    /// up to `tasks.attempts`. `gate`, when given, is awaited once, holding the slot,
    /// right before the task is first sent (the webhook journal marks it dispatched).
    ///
    /// Not an `async fn`: one would keep `task` and `first` twice (arguments and
    /// locals) in the future of every task waiting for a slot.
    pub(crate) fn deliver<'a>(
        &'a self,
        task: Outbound<'a>,
        first: Acquire,
        gate: Option<DispatchGate<'a>>,
    ) -> impl std::future::Future<Output = Result<Delivery<'a>, TaskError>> + Send + 'a {
        self.attempts(task, Some(first), gate)
    }

    fn attempts<'a>(
        &'a self,
        task: Outbound<'a>,
        mut admission: Option<Acquire>,
        mut gate: Option<DispatchGate<'a>>,
    ) -> impl std::future::Future<Output = Result<Delivery<'a>, TaskError>> + Send + 'a {
        let max = self.settings.tasks.attempts;
        async move {
            let mut last_failure: Option<TaskError> = None;
            for attempt in 1..=max {
                let acquired = match admission.take() {
                    Some(a) => Ok(a),
                    None => self.admit(task.spec),
                };
                let lease = match acquired {
                    Ok(Acquire::Ready(lease)) => {
                        self.observe_wait(task.spec, 0.0);
                        Ok(lease)
                    }
                    Ok(Acquire::Queued(waiting)) => {
                        let spec = task.spec;
                        self.wait_for_slot(waiting, spec, task.deadline, task.task)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let lease = match (lease, last_failure) {
                    (Ok(l), _) => l,
                    // No other Worker to try: report the failure that sent us looking.
                    (Err(TaskError::NoWorker(_)), Some(failure)) => return Err(failure),
                    (Err(e), _) => return Err(e),
                };
                if let Some(gate) = gate.take() {
                    gate.await?;
                }
                let sent_at = Instant::now();
                // Boxed: the exchange's state would otherwise size the whole delivery,
                // which mostly waits for a slot (`slot` above) before it is sent.
                let sent = Box::pin(self.send(&task, &lease, attempt)).await;
                match sent {
                    // The task's own deadline: the Worker is to blame only if it had the
                    // task for a good part of it, not if queueing used the time up.
                    Err(ExchangeError::TimedOut)
                        if sent_at.elapsed() < self.settings.tasks.timeout / 2 => {}
                    Err(ref e) => self.attempt_failed(&lease, e),
                    Ok(_) => {}
                }
                match self.judge(sent, lease, attempt, max, task.task) {
                    Verdict::Answered(delivery) => return Ok(delivery),
                    Verdict::TryAnother(failure) => last_failure = Some(failure),
                    Verdict::Failed(failure) => return Err(failure),
                }
            }
            Err(last_failure.unwrap_or_else(|| TaskError::WorkerFailed {
                worker: String::new(),
                error: pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "no attempt succeeded",
                ),
                delivered: false,
            }))
        }
    }

    /// Sends the task to the Worker holding `lease`, as attempt `attempt`.
    async fn send(
        &self,
        task: &Outbound<'_>,
        lease: &Lease,
        attempt: u32,
    ) -> Result<Exchange<'_>, ExchangeError> {
        let traceparent = task.task.dispatched(&lease.url().raw, attempt);
        let request = task
            .headers
            .request_head(lease.url(), task.body.len(), traceparent.as_ref());
        let limits = Limits {
            deadline: task.deadline,
            response_header: self.settings.upstream.response_header_timeout,
            body_idle: Some(self.settings.upstream.body_idle_timeout),
        };
        self.upstream
            .send(lease.url(), request, task.body, limits)
            .await
    }

    /// What attempt `attempt` of `max` came to, and what it does to the Worker.
    fn judge<'a>(
        &'a self,
        sent: Result<Exchange<'a>, ExchangeError>,
        lease: Lease,
        attempt: u32,
        max: u32,
        task: &TaskHandle,
    ) -> Verdict<'a> {
        let url = lease.url();
        match sent {
            Ok(exchange) => {
                let status = exchange.header().status.as_u16();
                self.answered(&lease, status);
                task.answered(status);
                if status == 503 && attempt < max {
                    // Maintenance: the Worker refused the task without starting it.
                    log::warn!("worker {url} answered 503, trying another");
                    self.scheduler.suspend_worker(lease.worker());
                    METRICS.retries.with_label_values(&["maintenance"]).inc();
                    task.retried(&format!("{url} is in maintenance"));
                    return Verdict::TryAnother(TaskError::WorkerFailed {
                        worker: url.raw.clone(),
                        error: pingora::Error::explain(
                            pingora::ErrorType::HTTPStatus(503),
                            "in maintenance",
                        ),
                        delivered: true,
                    });
                }
                Verdict::Answered(Delivery::new(self, lease, exchange, attempt))
            }
            Err(ExchangeError::NotDelivered(e)) => {
                log::warn!("task not delivered to {url} (attempt {attempt}/{max}): {e}");
                self.scheduler.suspend_worker(lease.worker());
                if attempt < max {
                    METRICS.retries.with_label_values(&["not_delivered"]).inc();
                    task.retried(&format!("{url} unreachable: {}", describe(&e)));
                }
                Verdict::TryAnother(TaskError::WorkerFailed {
                    worker: url.raw.clone(),
                    error: e,
                    delivered: false,
                })
            }
            Err(ExchangeError::AfterDelivery(e)) => {
                log::warn!("worker {url} failed mid-task: {e}");
                Verdict::Failed(TaskError::WorkerFailed {
                    worker: url.raw.clone(),
                    error: e,
                    delivered: true,
                })
            }
            // The Worker has the task and may be running it: never sent elsewhere.
            Err(e) => {
                log::warn!("worker {url} did not answer: {e}");
                Verdict::Failed(TaskError::Timeout)
            }
        }
    }
}

//! The one dispatch path shared by sync, stream and webhook tasks: take a slot
//! (queueing if needed), send the task to the Worker, and retry on another Worker
//! only when the first one provably never started it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::board::TaskHandle;
use crate::config::Settings;
use crate::metrics::{priority_class, METRICS};
use crate::scheduler::{Acquire, AcquireError, Lease, Scheduler, SlotRequest};
use crate::task::TaskSpec;
use crate::upstream::{Exchange, ExchangeError, Limits, Upstream};

mod headers;
pub use headers::{strip_response_hop_headers, ForwardHeaders};

/// Why a task ended without a Worker's answer, mapped to the client's status.
#[derive(Debug)]
pub enum TaskError {
    /// No Worker can ever take it (unknown group/contract/function) or none is up: 503.
    NoWorker(String),
    /// The wait queue is full: 503 with `Retry-After`.
    QueueFull,
    /// Waited for a slot past the task timeout: 504.
    QueueTimeout,
    /// The Worker did not answer within the task timeout: 504.
    Timeout,
    /// The Worker failed or vanished: 502. `error` is Pingora's, with its type
    /// (e.g. `ConnectRefused`, `ConnectionClosed`) and context.
    WorkerFailed {
        /// The Worker's URL.
        worker: String,
        /// What went wrong.
        error: Box<pingora::Error>,
        /// False when the Worker never got the task (it was unreachable).
        delivered: bool,
    },
    /// The load balancer is shutting down: 503.
    ShuttingDown,
    /// A journaled webhook task now belongs to another instance: not sent here.
    HandedOver,
    /// The webhook task could not be written to the journal: 503.
    NotKept(String),
    /// The task's client is at its `max_running` (`true`) or `max_queued` (`false`):
    /// 429 with `Retry-After`.
    ClientLimit {
        /// The client's name.
        client: Arc<str>,
        /// Over `max_running` rather than `max_queued`.
        running: bool,
    },
}

/// A Pingora error for a client or a log line: type, context and causes, e.g.
/// `ConnectRefused: Fail to connect to 10.0.0.5:3000 (Connection refused)`, without
/// the source markers and repeated types of Pingora's own `Display`.
pub fn describe(e: &pingora::Error) -> String {
    let mut out = e.etype().as_str().to_string();
    let mut error = e;
    loop {
        if let Some(context) = &error.context {
            out.push_str(": ");
            out.push_str(context.as_str());
        }
        match &error.cause {
            Some(cause) => match cause.downcast_ref::<pingora::Error>() {
                Some(inner) => error = inner,
                None => {
                    out.push_str(&format!(" ({cause})"));
                    return out;
                }
            },
            None => return out,
        }
    }
}

impl TaskError {
    /// HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            TaskError::NoWorker(_)
            | TaskError::QueueFull
            | TaskError::ShuttingDown
            | TaskError::HandedOver
            | TaskError::NotKept(_) => 503,
            TaskError::QueueTimeout | TaskError::Timeout => 504,
            TaskError::WorkerFailed { .. } => 502,
            TaskError::ClientLimit { .. } => 429,
        }
    }

    /// Message for the client's JSON `error`.
    pub fn message(&self) -> String {
        match self {
            TaskError::NoWorker(m) => m.clone(),
            TaskError::QueueFull => "Task queue is full, retry later".into(),
            TaskError::QueueTimeout => "Task timed out waiting for a free Worker slot".into(),
            TaskError::Timeout => "Task timed out waiting for the Worker".into(),
            TaskError::WorkerFailed {
                worker,
                error,
                delivered,
            } => {
                let unreachable = if *delivered { "" } else { " unreachable" };
                format!("Worker failed: {worker}{unreachable}: {}", describe(error))
            }
            TaskError::ShuttingDown => "Load balancer is shutting down".into(),
            TaskError::HandedOver => "Task handed over to another instance".into(),
            TaskError::NotKept(m) => format!("Task cannot be kept for later delivery: {m}"),
            TaskError::ClientLimit {
                client,
                running: true,
            } => format!("Client {client:?} already has its max_running tasks running"),
            TaskError::ClientLimit { client, .. } => {
                format!("Client {client:?} already has its max_queued tasks waiting")
            }
        }
    }

    /// Short label for metrics and the task board.
    pub fn outcome(&self) -> &'static str {
        match self {
            TaskError::NoWorker(_) => "no_worker",
            TaskError::QueueFull => "queue_full",
            TaskError::QueueTimeout => "queue_timeout",
            TaskError::Timeout => "timeout",
            TaskError::WorkerFailed { .. } => "worker_failed",
            TaskError::ShuttingDown => "shutting_down",
            TaskError::HandedOver => "handed_over",
            TaskError::NotKept(_) => "not_kept",
            TaskError::ClientLimit { .. } => "client_limit",
        }
    }

    fn from_acquire(e: AcquireError, spec: &TaskSpec) -> TaskError {
        match e {
            AcquireError::UnknownPool => TaskError::NoWorker(format!(
                "No Worker for group {:?} with contract {}",
                spec.group, spec.contract
            )),
            AcquireError::UnknownFunction => TaskError::NoWorker(format!(
                "No Worker of group {:?} contract {} exposes function {:?}",
                spec.group, spec.contract, spec.function
            )),
            AcquireError::NoWorkerUp => TaskError::NoWorker(format!(
                "No Worker of group {:?} contract {} is available",
                spec.group, spec.contract
            )),
            AcquireError::QueueFull => TaskError::QueueFull,
            AcquireError::ClientRunning | AcquireError::ClientQueued => TaskError::ClientLimit {
                client: spec
                    .client
                    .as_ref()
                    .map_or_else(|| "".into(), |c| c.name.clone()),
                running: e == AcquireError::ClientRunning,
            },
            AcquireError::TimedOut => TaskError::QueueTimeout,
            AcquireError::ShuttingDown => TaskError::ShuttingDown,
        }
    }
}

/// A task delivered to a Worker whose response header has arrived.
pub struct Delivered<'a> {
    /// The slot, given back when this is dropped.
    pub lease: Lease,
    /// The Worker's response, body still to read.
    pub exchange: Exchange<'a>,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// Awaited before a task is first sent; an error stops the delivery.
pub type DispatchGate<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TaskError>> + Send + 'a>>;

/// Sends tasks to Workers.
pub struct Dispatcher {
    /// Slots and queue.
    pub scheduler: Arc<Scheduler>,
    /// Connections to Workers, for tasks only (webhook failure notices have their
    /// own, `App::notices`).
    pub upstream: Upstream,
    /// Settings (attempts, timeouts).
    pub settings: Arc<Settings>,
}

impl Dispatcher {
    /// A dispatcher over `scheduler`, with its own connection pool.
    pub fn new(settings: Arc<Settings>, scheduler: Arc<Scheduler>) -> Self {
        let upstream = Upstream::new(
            settings.connect_timeout,
            settings.pool_idle_timeout,
            settings.ca_file.as_ref().and_then(|p| p.to_str()),
        );
        Dispatcher {
            scheduler,
            upstream,
            settings,
        }
    }

    /// Takes a slot or a place in the queue; fails at once when the task cannot run.
    pub fn admit(&self, spec: &TaskSpec) -> Result<Acquire, TaskError> {
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

    async fn slot(
        &self,
        admission: Acquire,
        spec: &TaskSpec,
        deadline: Instant,
        task: &TaskHandle,
    ) -> Result<Lease, TaskError> {
        // Admitted: a pool of this group exists, but in the waiting room
        // (`tasks.no_worker_wait_ms`) perhaps only for this task: a group no valid
        // Worker has had stays `other`, so that the label stays bounded.
        let known = self.scheduler.knows_group(&spec.group);
        let group = crate::metrics::bounded_label(&spec.group, known);
        let wait = METRICS
            .queue_wait
            .with_label_values(&[group, priority_class(spec.priority)]);
        match admission {
            Acquire::Ready(lease) => {
                wait.observe(0.0);
                Ok(lease)
            }
            Acquire::Queued(waiting) => {
                task.queued(self.scheduler.queued());
                let started = Instant::now();
                let outcome = waiting.until(deadline).await;
                wait.observe(started.elapsed().as_secs_f64());
                if matches!(outcome, Err(AcquireError::TimedOut)) {
                    METRICS.queue_timeouts.inc();
                }
                outcome.map_err(|e| TaskError::from_acquire(e, spec))
            }
        }
    }

    /// Delivers the task: waits for a slot, sends, and retries on another Worker while
    /// the failure proves the Worker never started it (connect/write failure, `503`).
    pub async fn deliver(
        &self,
        spec: &TaskSpec,
        first: Acquire,
        headers: &ForwardHeaders,
        body: &Bytes,
        deadline: Instant,
        task: &TaskHandle,
    ) -> Result<Delivered<'_>, TaskError> {
        self.deliver_gated(spec, first, headers, body, deadline, task, None)
            .await
    }

    /// [`Dispatcher::deliver`], with `gate` awaited once, holding the slot, right
    /// before the task is first sent (the webhook journal marks it dispatched there).
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver_gated(
        &self,
        spec: &TaskSpec,
        first: Acquire,
        headers: &ForwardHeaders,
        body: &Bytes,
        deadline: Instant,
        task: &TaskHandle,
        mut gate: Option<DispatchGate<'_>>,
    ) -> Result<Delivered<'_>, TaskError> {
        let max = self.settings.task_attempts;
        let mut admission = Some(first);
        let mut last_failure: Option<TaskError> = None;
        for attempt in 1..=max {
            let next = match admission.take() {
                Some(a) => Ok(a),
                None => self.admit(spec),
            };
            let lease = match next {
                Ok(a) => self.slot(a, spec, deadline, task).await,
                Err(e) => Err(e),
            };
            let lease = match (lease, &last_failure) {
                (Ok(l), _) => l,
                // No other Worker to try: report the failure that sent us looking.
                (Err(TaskError::NoWorker(_)), Some(_)) => {
                    return Err(last_failure.take().expect("matched Some"))
                }
                (Err(e), _) => return Err(e),
            };
            if let Some(gate) = gate.take() {
                gate.await?;
            }
            let traceparent = task.dispatched(&lease.url().raw, attempt);
            let request = headers.request_head(lease.url(), body.len(), traceparent.as_ref());
            let limits = Limits {
                deadline,
                response_header: self.settings.response_header_timeout,
                body_idle: Some(self.settings.body_idle_timeout),
            };
            let sent_at = Instant::now();
            // Boxed: the exchange's state would otherwise size the whole delivery,
            // which mostly waits for a slot (`slot` above) before it is sent.
            let sent = Box::pin(self.upstream.send(lease.url(), request, body, limits)).await;
            match &sent {
                // The task's own deadline: the Worker is to blame only if it had the
                // task for a good part of it, not if queueing used the time up.
                Err(ExchangeError::TimedOut)
                    if sent_at.elapsed() < self.settings.task_timeout / 2 => {}
                Err(e) => self.attempt_failed(&lease, e),
                Ok(_) => {}
            }
            match sent {
                Ok(exchange) => {
                    let status = exchange.header().status.as_u16();
                    self.answered(&lease, status);
                    task.answered(status);
                    if status == 503 && attempt < max {
                        // Maintenance: the Worker refused the task without starting it.
                        log::warn!("worker {} answered 503, trying another", lease.url());
                        self.scheduler.suspend_worker(lease.worker());
                        let why = format!("{} is in maintenance", lease.url());
                        METRICS.retries.with_label_values(&["maintenance"]).inc();
                        task.retried(&why);
                        last_failure = Some(TaskError::WorkerFailed {
                            worker: lease.url().raw.clone(),
                            error: pingora::Error::explain(
                                pingora::ErrorType::HTTPStatus(503),
                                "in maintenance",
                            ),
                            delivered: true,
                        });
                        continue;
                    }
                    return Ok(Delivered {
                        lease,
                        exchange,
                        attempts: attempt,
                    });
                }
                Err(ExchangeError::NotDelivered(e)) => {
                    log::warn!(
                        "task not delivered to {} (attempt {attempt}/{max}): {e}",
                        lease.url()
                    );
                    self.scheduler.suspend_worker(lease.worker());
                    if attempt < max {
                        METRICS.retries.with_label_values(&["not_delivered"]).inc();
                        task.retried(&format!("{} unreachable: {}", lease.url(), describe(&e)));
                    }
                    last_failure = Some(TaskError::WorkerFailed {
                        worker: lease.url().raw.clone(),
                        error: e,
                        delivered: false,
                    });
                }
                Err(ExchangeError::AfterDelivery(e)) => {
                    log::warn!("worker {} failed mid-task: {e}", lease.url());
                    return Err(TaskError::WorkerFailed {
                        worker: lease.url().raw.clone(),
                        error: e,
                        delivered: true,
                    });
                }
                // The Worker has the task and may be running it: never sent elsewhere.
                Err(e) => {
                    log::warn!("worker {} did not answer: {e}", lease.url());
                    return Err(TaskError::Timeout);
                }
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

    /// Counts a failed exchange (before or after the response header) against the
    /// Worker holding `lease`; enough of them in a row eject it from the rotation.
    /// A time limit that passes while the Worker is alive and busy (it answers its
    /// poll or slot feed and reports the task's slot used) is not counted: the task
    /// ran long, and a client must not be able to eject a healthy Worker with slow
    /// tasks. Silence on every channel, resets and connect failures are counted.
    pub fn attempt_failed(&self, lease: &Lease, e: &ExchangeError) {
        if e.is_timeout()
            && self
                .scheduler
                .alive_and_busy(lease.worker(), self.liveness_window())
        {
            log::info!(
                "worker {} is alive and busy: a task that {e} there is not counted as its failure",
                lease.url()
            );
            return;
        }
        self.worker_failed(lease, &e.to_string());
    }

    /// How recently a Worker must have answered to count as alive: one slot feed
    /// heartbeat (interval and timeout) or one poll (interval and timeout),
    /// whichever is longer; the feed itself declares a Worker offline after the first.
    fn liveness_window(&self) -> std::time::Duration {
        let s = &self.settings;
        (s.ws_heartbeat_interval + s.ws_heartbeat_timeout)
            .max(s.discovery_interval + s.discovery_timeout)
    }

    /// Counts an answer: any status is the Worker speaking for itself, except
    /// `502`/`504`, which Andera Workers never send: a proxy in front of the Worker
    /// saying it is gone or stuck.
    fn answered(&self, lease: &Lease, status: u16) {
        if matches!(status, 502 | 504) {
            self.worker_failed(lease, &format!("answered {status}"));
        } else {
            self.scheduler.worker_succeeded(lease.worker());
        }
    }

    fn worker_failed(&self, lease: &Lease, why: &str) {
        let policy = &self.settings.outlier;
        if let Some(e) = self.scheduler.worker_failed(lease.worker(), why, policy) {
            let url = &lease.url().raw;
            log::warn!(
                "worker {url} ejected for {} ms after {} failures in a row (last: {why})",
                e.backoff.as_millis(),
                e.consecutive_failures
            );
            METRICS.worker_ejections.with_label_values(&[url]).inc();
        }
    }
}

#[cfg(test)]
mod tests;

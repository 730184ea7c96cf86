//! The label values the load balancer knows in advance: task outcomes, retry
//! reasons and the responses it counts from the start. Their series exist at 0 from
//! the first scrape, so that alert rules need no `or vector(0)` and the first event
//! shows in `rate()` and `increase()`.

/// The `outcome` of a task (`andera_lb_tasks_total`, `andera_lb_task_duration_seconds`).
pub(crate) mod outcome {
    /// The Worker answered below `400`.
    pub(crate) const OK: &str = "ok";
    /// The Worker answered `401`: it refused the `x-wr-auth` key (its `AUTH_KEY`).
    pub(crate) const WORKER_KEY_REJECTED: &str = "worker_key_rejected";
    /// The Worker answered `500`: the function failed.
    pub(crate) const FUNCTION_ERROR: &str = "function_error";
    /// The Worker answered another status of `400` or more.
    pub(crate) const WORKER_ERROR: &str = "worker_error";
}

/// Every outcome a task of a known group and function can end with: `no_worker` is
/// left out, since such a task is counted under `group="other",function="other"`,
/// and so is a hand-over, counted where the task ends (`TaskHandle::set_aside`).
pub(crate) const TASK_OUTCOMES: &[&str] = &[
    outcome::OK,
    outcome::WORKER_KEY_REJECTED,
    outcome::FUNCTION_ERROR,
    outcome::WORKER_ERROR,
    "worker_failed",
    "client_gone",
    "queue_full",
    "queue_timeout",
    "timeout",
    "shutting_down",
    "cancelled",
    "not_kept",
    "client_limit",
    "input_refused",
];

/// The outcome of a task no valid Worker can take (counted as `other`/`other`).
pub(crate) const NO_WORKER: &str = "no_worker";

/// Every `reason` of `andera_lb_task_retries_total`.
pub(crate) const RETRY_REASONS: &[&str] = &["maintenance", "not_delivered"];

/// `(service, route, statuses)` of `andera_lb_http_responses_total` counted from 0:
/// what the load balancer itself answers on its routes, and the Worker statuses an
/// error-ratio rule looks at. Other statuses appear when they first happen.
pub(crate) const KNOWN_RESPONSES: &[(&str, &str, &[u16])] = &[
    (
        "client",
        "task",
        &[200, 400, 401, 408, 413, 499, 500, 502, 503, 504],
    ),
    ("client", "health", &[200]),
    ("admin", "metrics", &[200]),
    ("admin", "ready", &[200, 503]),
];

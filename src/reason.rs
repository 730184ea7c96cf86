//! Why the load balancer answered a request itself: the fixed vocabulary of the
//! `"reason"` field and the `x-andera-reason` header (README "Reasons").
//!
//! A reason is a machine-readable word beside the human `error`. The list is
//! closed: a client may branch on it, so a value is never renamed or reused.

/// The response header that carries a [`Reason`] on every answer the load balancer
/// makes itself.
pub(crate) const HEADER: &str = "x-andera-reason";

/// Why the load balancer answered a request itself (not relaying a Worker's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// No LB key, or a wrong one (`401`); or the Worker refused `x-wr-auth` (`401`).
    Unauthorized,
    /// A valid key, not allowed on this route (`403`).
    Forbidden,
    /// The body or a header is not what `POST /task` takes (`400`), or the input
    /// does not match the function's published schema (the Worker's `500`).
    BadRequest,
    /// The body is over `REQUEST_BODY_LIMIT` (`413`).
    BodyTooLarge,
    /// No valid Worker of the group, contract or function, or none is up (`503`).
    NoWorker,
    /// The wait queue (or its bytes) is full (`503` with `Retry-After`).
    QueueFull,
    /// The task waited for a slot past its timeout (`504`).
    QueueTimeout,
    /// The client is over its rate (`429` with `Retry-After`).
    ClientRate,
    /// The client has its `max_running` tasks running (`429`).
    ClientRunning,
    /// The client has its `max_queued` tasks waiting (`429`).
    ClientQueued,
    /// No Worker could be reached on any attempt: it never got the task (`502`).
    NotDelivered,
    /// The Worker took the task, then failed or vanished (`502`).
    WorkerFailed,
    /// The Worker sent no answer within the task's timeout (`504`).
    WorkerTimeout,
    /// The task was cancelled (`DELETE /task/{id}`).
    Cancelled,
    /// The load balancer is shutting down (`503`).
    ShuttingDown,
    /// A repeat of an `Idempotency-Key` whose first task is still running (`409`).
    DuplicateInProgress,
    /// A webhook task the journal has no room for (`503`).
    JournalFull,
    /// A webhook task the journal cannot keep right now (`503`).
    JournalUnavailable,
    /// The admin port was asked with a Host that does not name it (`421`).
    HostNotAllowed,
}

impl Reason {
    /// Every reason, in the README's order.
    #[cfg(test)]
    pub(crate) const ALL: &'static [Reason] = &[
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::BadRequest,
        Reason::BodyTooLarge,
        Reason::NoWorker,
        Reason::QueueFull,
        Reason::QueueTimeout,
        Reason::ClientRate,
        Reason::ClientRunning,
        Reason::ClientQueued,
        Reason::NotDelivered,
        Reason::WorkerFailed,
        Reason::WorkerTimeout,
        Reason::Cancelled,
        Reason::ShuttingDown,
        Reason::DuplicateInProgress,
        Reason::JournalFull,
        Reason::JournalUnavailable,
        Reason::HostNotAllowed,
    ];

    /// The wire value, e.g. `"queue_full"`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::BadRequest => "bad_request",
            Reason::BodyTooLarge => "body_too_large",
            Reason::NoWorker => "no_worker",
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::ClientRate => "client_rate",
            Reason::ClientRunning => "client_running",
            Reason::ClientQueued => "client_queued",
            Reason::NotDelivered => "not_delivered",
            Reason::WorkerFailed => "worker_failed",
            Reason::WorkerTimeout => "worker_timeout",
            Reason::Cancelled => "cancelled",
            Reason::ShuttingDown => "shutting_down",
            Reason::DuplicateInProgress => "duplicate_in_progress",
            Reason::JournalFull => "journal_full",
            Reason::JournalUnavailable => "journal_unavailable",
            Reason::HostNotAllowed => "host_not_allowed",
        }
    }

    /// The `x-andera-reason` header for this reason, ready for `respond::json`'s extras.
    pub(crate) fn header(self) -> (&'static str, String) {
        (HEADER, self.as_str().to_string())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_and_spelled_as_a_label() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
        }
        assert_eq!(seen.len(), 19);
    }
}

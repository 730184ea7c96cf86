//! Counting a Worker's answers and failures, so that one failing in a row
//! (`upstream.outlier`) leaves the rotation for a while.

use crate::metrics::METRICS;
use crate::scheduler::Lease;
use crate::upstream::ExchangeError;

use super::Dispatcher;

impl Dispatcher {
    /// Counts a failed exchange (before or after the response header) against the
    /// Worker holding `lease`; enough of them in a row eject it from the rotation.
    /// A time limit that passes while the Worker is alive and busy (it answers its
    /// poll or slot feed and reports the task's slot used) is not counted: the task
    /// ran long, and a client must not be able to eject a healthy Worker with slow
    /// tasks. Silence on every channel, resets and connect failures are counted.
    pub(super) fn attempt_failed(&self, lease: &Lease, e: &ExchangeError) {
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
        (s.websocket.heartbeat_interval + s.websocket.heartbeat_timeout)
            .max(s.discovery.interval + s.discovery.timeout)
    }

    /// Counts an answer: any status is the Worker speaking for itself, except
    /// `502`/`504`, which Andera Workers never send: a proxy in front of the Worker
    /// saying it is gone or stuck.
    pub(super) fn answered(&self, lease: &Lease, status: u16) {
        if matches!(status, 502 | 504) {
            self.worker_failed(lease, &format!("answered {status}"));
        } else {
            self.scheduler.worker_succeeded(lease.worker());
        }
    }

    fn worker_failed(&self, lease: &Lease, why: &str) {
        let policy = &self.settings.upstream.outlier;
        if let Some(e) = self.scheduler.worker_failed(lease.worker(), why, policy) {
            let url = &lease.url().raw;
            log::warn!(
                "worker {url} ejected for {} ms after {} failures in a row (last: {why})",
                e.backoff.as_millis(),
                e.consecutive_failures
            );
            METRICS.workers.ejections.with_label_values(&[url]).inc();
        }
    }
}

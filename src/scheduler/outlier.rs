//! Outlier ejection: a Worker that fails several tasks in a row leaves the rotation
//! for a back-off that doubles while it keeps failing, like nginx's
//! `max_fails`/`fail_timeout` and Envoy's consecutive-failure outlier detection.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

pub use crate::config::outlier::OutlierPolicy;

/// The longest ejection, as a multiple of [`OutlierPolicy::fail_timeout`].
const MAX_BACKOFF_FACTOR: u32 = 32;

/// A Worker out of rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    /// When it returns.
    pub until: Instant,
    /// The same moment on the wall clock, for `/health`.
    pub until_wall: SystemTime,
    /// This ejection's length.
    pub backoff: Duration,
    /// The failure that ejected it.
    pub reason: String,
    /// Failures in a row when it was ejected.
    pub consecutive_failures: u32,
    /// Distinguishes this ejection from later ones (for the timer that ends it).
    pub(super) epoch: u64,
}

/// Failure bookkeeping of one Worker.
#[derive(Debug, Default)]
pub(super) struct Outlier {
    /// Failures since the last success.
    consecutive: u32,
    /// Ejections since the last success (sets the back-off).
    ejections: u32,
    /// Back from an ejection without a success since: one failure ejects again.
    probation: bool,
    /// Set while out of rotation.
    pub ejected: Option<Ejection>,
    epoch: u64,
}

impl Outlier {
    /// An answer arrived: the Worker is healthy again.
    pub(super) fn succeeded(&mut self) {
        self.consecutive = 0;
        self.ejections = 0;
        self.probation = false;
    }

    /// Counts a failure; returns the new ejection if this one ejects the Worker.
    pub(super) fn failed(&mut self, reason: &str, policy: &OutlierPolicy) -> Option<Ejection> {
        self.consecutive = self.consecutive.saturating_add(1);
        if policy.max_fails == 0 || self.ejected.is_some() {
            return None;
        }
        if self.consecutive < policy.max_fails && !self.probation {
            return None;
        }
        let factor = 1u32 << self.ejections.min(MAX_BACKOFF_FACTOR.trailing_zeros());
        let backoff = policy.fail_timeout.saturating_mul(factor);
        self.ejections = self.ejections.saturating_add(1);
        self.probation = false;
        self.epoch += 1;
        let ejection = Ejection {
            until: Instant::now() + backoff,
            until_wall: SystemTime::now() + backoff,
            backoff,
            reason: reason.to_string(),
            consecutive_failures: self.consecutive,
            epoch: self.epoch,
        };
        self.ejected = Some(ejection.clone());
        Some(ejection)
    }

    /// Ends ejection `epoch` (a stale timer changes nothing). True if it ended.
    pub(super) fn readmit(&mut self, epoch: u64) -> bool {
        if self.ejected.as_ref().is_some_and(|e| e.epoch == epoch) {
            self.ejected = None;
            // Like nginx after fail_timeout: one more failure sends it straight back.
            self.probation = true;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: OutlierPolicy = OutlierPolicy {
        max_fails: 3,
        fail_timeout: Duration::from_secs(10),
    };

    #[test]
    fn ejects_after_max_fails_in_a_row_only() {
        let mut o = Outlier::default();
        assert!(o.failed("a", &POLICY).is_none());
        assert!(o.failed("b", &POLICY).is_none());
        o.succeeded();
        assert!(o.failed("c", &POLICY).is_none());
        assert!(o.failed("d", &POLICY).is_none());
        let e = o.failed("e", &POLICY).expect("third failure in a row");
        assert_eq!((e.reason.as_str(), e.consecutive_failures), ("e", 3));
        assert_eq!(e.backoff, Duration::from_secs(10));
        // While out, more failures (tasks already in flight) change nothing.
        assert!(o.failed("f", &POLICY).is_none());
    }

    #[test]
    fn back_off_doubles_on_probation_up_to_a_cap_and_resets_on_success() {
        let mut o = Outlier::default();
        let mut backoffs = Vec::new();
        let mut e = (0..3).find_map(|_| o.failed("x", &POLICY)).unwrap();
        backoffs.push(e.backoff.as_secs());
        for _ in 0..7 {
            assert!(o.readmit(e.epoch));
            // One failure on probation ejects again, for twice as long.
            e = o.failed("x", &POLICY).expect("probation");
            backoffs.push(e.backoff.as_secs());
        }
        assert_eq!(backoffs, [10, 20, 40, 80, 160, 320, 320, 320]);
        assert!(!o.readmit(e.epoch - 1), "a stale timer is ignored");
        assert!(o.readmit(e.epoch));
        o.succeeded();
        assert!(o.failed("x", &POLICY).is_none(), "probation ended");
        let e = (0..2).find_map(|_| o.failed("x", &POLICY)).unwrap();
        assert_eq!(e.backoff, Duration::from_secs(10));
    }

    #[test]
    fn max_fails_zero_never_ejects() {
        let mut o = Outlier::default();
        let never = OutlierPolicy {
            max_fails: 0,
            ..POLICY
        };
        assert!((0..100).all(|_| o.failed("x", &never).is_none()));
    }
}

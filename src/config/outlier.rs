//! When Workers leave the rotation and for how long (`upstream.max_fails`,
//! `upstream.fail_timeout_ms`): a setting read with the rest of the configuration;
//! the scheduler applies it (`crate::scheduler::outlier`).

use std::time::Duration;

/// When Workers leave the rotation and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Failures in a row that eject a Worker; 0 never ejects. Default 3.
    pub max_fails: u32,
    /// First ejection time; doubles per ejection without a success in between,
    /// up to 32 times. Default 10 s.
    pub fail_timeout: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

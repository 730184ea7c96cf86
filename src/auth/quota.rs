//! Per-client rate limits (`rate`, `burst` of a named client): a token bucket per
//! client, refilled at `rate` tokens a second up to `burst` (or `rate` when 0).
//! Limits are per instance: N instances let a client through at up to N × `rate`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::clients::ClientSpec;

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every rate-limited client, by name (a reloaded client keeps its
/// bucket).
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl RateLimits {
    /// Takes a token for one task of `client` at `now`; `Err(wait)` says when the
    /// next token comes. Clients without a rate always pass, without a lock.
    pub(crate) fn take(&self, client: &ClientSpec, now: Instant) -> Result<(), Duration> {
        if client.rate <= 0.0 {
            return Ok(());
        }
        let depth = if client.burst == 0 {
            client.rate.max(1.0)
        } else {
            f64::from(client.burst)
        };
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(client.name.clone()).or_insert(Bucket {
            tokens: depth,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * client.rate;
        bucket.tokens = (bucket.tokens + refill).min(depth);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / client.rate))
        }
    }
}

/// The priority a task of `client` is queued at: a more urgent one (a smaller
/// number) than its `max_priority` is served as `max_priority`, not refused.
pub(crate) fn clamp_priority(client: &ClientSpec, asked: u32) -> u32 {
    asked.max(client.max_priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(rate: f64, burst: u32) -> ClientSpec {
        let mut c = ClientSpec::unlimited("c");
        c.rate = rate;
        c.burst = burst;
        c
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_the_rate() {
        let limits = RateLimits::default();
        let c = limited(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.take(&c, t0).is_ok());
        }
        let wait = limits.take(&c, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(limits.take(&c, t0 + Duration::from_millis(500)).is_ok());
        assert!(limits.take(&c, t0 + Duration::from_millis(500)).is_err());
        assert!(limits.take(&ClientSpec::unlimited("u"), t0).is_ok());
    }

    #[test]
    fn a_more_urgent_priority_than_allowed_is_served_as_the_limit() {
        let mut c = ClientSpec::unlimited("c");
        c.max_priority = 5;
        assert_eq!(clamp_priority(&c, 1), 5);
        assert_eq!(clamp_priority(&c, 7), 7);
    }
}

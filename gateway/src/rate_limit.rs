//! Per-caller rate limits (governor). Over the limit: 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keyed limiters. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    /// Per API key (the principal id).
    per_key: Arc<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimits {
            per_key: Arc::new(RateLimiter::keyed(
                Quota::per_second(per_sec).allow_burst(burst),
            )),
        }
    }

    /// `Err(seconds to wait)` if `key` is over its limit.
    pub fn check_key(&self, key: &str) -> Result<(), u64> {
        self.per_key
            .check_key(&key.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }

    /// Forgets callers that have been quiet, so the maps do not grow without bound.
    pub fn retain_recent(&self) {
        self.per_key.retain_recent();
        self.per_key.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_burst_is_refused_with_a_wait() {
        let limits = RateLimits::new(1, 2);
        assert!(limits.check_key("a").is_ok());
        assert!(limits.check_key("a").is_ok());
        let wait = limits.check_key("a").unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        // Other callers are not affected.
        assert!(limits.check_key("b").is_ok());
    }
}

//! Per-caller rate limits (governor). Over the limit: 429 with `Retry-After`.
//!
//! Two keyed limiters: per API key on `/v1/*`, and per client address on the GitHub webhook
//! (which has no key). The address is the TCP peer's, never a header a client could forge
//! (`X-Forwarded-For`): behind a reverse proxy every delivery shares the proxy's budget, so size
//! the webhook limit for that. IPv6 clients are grouped by /64, the block one host usually gets.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keyed limiters. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    /// Per API key (the principal id).
    per_key: Arc<DefaultKeyedRateLimiter<String>>,
    /// Per client address (IPv4, or IPv6 /64), for the webhook.
    per_addr: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_sec).allow_burst(burst)
}

/// Whole seconds until `not_until` (at least 1).
fn wait_secs(not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl RateLimits {
    /// `per_sec`/`burst` per API key; the webhook gets the same until
    /// [`RateLimits::with_webhook`] says otherwise.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimits {
            per_key: Arc::new(RateLimiter::keyed(quota(per_sec, burst))),
            per_addr: Arc::new(RateLimiter::keyed(quota(per_sec, burst))),
        }
    }

    /// Sets the per-address limit of the webhook.
    pub fn with_webhook(mut self, per_sec: u32, burst: u32) -> Self {
        self.per_addr = Arc::new(RateLimiter::keyed(quota(per_sec, burst)));
        self
    }

    /// `Err(seconds to wait)` if `key` is over its limit.
    pub fn check_key(&self, key: &str) -> Result<(), u64> {
        self.per_key.check_key(&key.to_string()).map_err(wait_secs)
    }

    /// `Err(seconds to wait)` if the client at `addr` is over the webhook's limit. `None` (no
    /// peer address known, as when the app is called without a socket) is one shared client.
    pub fn check_addr(&self, addr: Option<IpAddr>) -> Result<(), u64> {
        let key = addr.map_or(IpAddr::from([0, 0, 0, 0]), client_key);
        self.per_addr.check_key(&key).map_err(wait_secs)
    }

    /// Forgets callers that have been quiet, so the maps do not grow without bound.
    pub fn retain_recent(&self) {
        self.per_key.retain_recent();
        self.per_key.shrink_to_fit();
        self.per_addr.retain_recent();
        self.per_addr.shrink_to_fit();
    }
}

/// The limiter key of an address: IPv4 as is (also when mapped into IPv6), IPv6 by /64.
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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

    #[test]
    fn webhook_limits_are_per_address() {
        let limits = RateLimits::new(100, 100).with_webhook(1, 1);
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let b: IpAddr = "203.0.113.6".parse().unwrap();
        assert!(limits.check_addr(Some(a)).is_ok());
        assert!(limits.check_addr(Some(a)).is_err());
        assert!(limits.check_addr(Some(b)).is_ok());
        // The same IPv4 client written as IPv4-mapped IPv6.
        let mapped: IpAddr = "::ffff:203.0.113.5".parse().unwrap();
        assert!(limits.check_addr(Some(mapped)).is_err());
        // One IPv6 /64 is one client; another /64 is another.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.check_addr(Some(v6a)).is_ok());
        assert!(limits.check_addr(Some(v6b)).is_err());
        assert!(limits.check_addr(Some(v6c)).is_ok());
        // API keys have their own budget.
        assert!(limits.check_key("k").is_ok());
    }
}

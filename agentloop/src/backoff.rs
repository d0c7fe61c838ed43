//! Exponential backoff with jitter: a pure function, so it is table-tested.

use std::time::Duration;

/// How retries are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub base: Duration,
    /// No delay exceeds this.
    pub max: Duration,
    /// Fraction (0..=1) of the delay that is randomised away: with 0.2, a delay `d` becomes a
    /// value in `[0.8·d, d]`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based), given a random `r` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, r: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let raw = self.base.as_millis().saturating_mul(1u128 << exp);
        let capped = raw.min(self.max.as_millis()) as f64;
        let jitter = self.jitter.clamp(0.0, 1.0) * r.clamp(0.0, 1.0);
        Duration::from_millis((capped * (1.0 - jitter)).round() as u64)
    }

    /// [`Backoff::delay`] with a random `r`.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_table() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            jitter: 0.5,
        };
        let table: &[(u32, f64, u64)] = &[
            // attempt, r, expected ms
            (0, 0.0, 100),
            (1, 0.0, 100),
            (2, 0.0, 200),
            (3, 0.0, 400),
            (5, 0.0, 1600),
            (6, 0.0, 2000), // capped
            (60, 0.0, 2000),
            (1, 1.0, 50), // full jitter of 0.5 halves it
            (3, 0.5, 300),
            (6, 1.0, 1000),
            (4, 7.0, 400), // r is clamped
        ];
        for &(attempt, r, want) in table {
            assert_eq!(
                b.delay(attempt, r),
                Duration::from_millis(want),
                "attempt {attempt}, r {r}"
            );
        }
    }

    #[test]
    fn random_delays_stay_in_range() {
        let b = Backoff::default();
        for attempt in 1..10 {
            let d = b.next_delay(attempt);
            let hi = b.delay(attempt, 0.0);
            let lo = b.delay(attempt, 1.0);
            assert!(d >= lo && d <= hi, "{d:?} not in [{lo:?}, {hi:?}]");
        }
    }
}

//! Percentiles of latency samples, and the formatting of figures in the result table.

use std::time::Duration;

/// A summary of latency samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Empty input gives zeros.
    pub fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        Summary {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// The nearest-rank percentile `p` (0–100] of sorted `samples`; zero if there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Per second, from a count and the time it took.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// `12,345/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    format!("{}/s", thousands(per_sec.round() as u64))
}

/// `1.23 ms` (or `850 µs` below a millisecond).
pub fn fmt_ms(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 100_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.0} ms", us / 1000.0)
    }
}

/// `31 ms`: for figures that only have millisecond resolution.
pub fn fmt_whole_ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `0.73×`.
pub fn fmt_ratio(ours: f64, baseline: f64) -> String {
    if baseline <= 0.0 {
        return "–".to_string();
    }
    format!("{:.2}×", ours / baseline)
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = ms(&[5, 1, 4, 2, 3, 6, 7, 8, 9, 10]);
        let sum = Summary::of(&mut s);
        assert_eq!(sum.count, 10);
        assert_eq!(sum.p50, Duration::from_millis(5));
        assert_eq!(sum.p99, Duration::from_millis(10));
        assert_eq!(sum.max, Duration::from_millis(10));
        let hundred: Vec<u64> = (1..=100).collect();
        let s = ms(&hundred);
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(12_345.4), "12,345/s");
        assert_eq!(fmt_ms(Duration::from_micros(850)), "850 µs");
        assert_eq!(fmt_ms(Duration::from_micros(1234)), "1.23 ms");
        assert_eq!(fmt_whole_ms(Duration::from_millis(31)), "31 ms");
        assert_eq!(fmt_ratio(1.0, 2.0), "0.50×");
        assert_eq!(fmt_ratio(1.0, 0.0), "–");
    }
}

//! Latency summaries. Samples are microseconds in `u32` (71 minutes at most), sorted once
//! at the end: a million samples is 4 MB and a few milliseconds to sort, which is simpler
//! and exact compared with a histogram.

use serde::Serialize;

/// Nearest-rank percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises `samples` (microseconds); sorts them in place.
    pub fn of(samples: &mut [u32]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            f64::from(samples[rank - 1]) / 1000.0
        };
        Latency {
            samples: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Microseconds as a `u32` sample, saturating.
pub fn sample(micros: u64) -> u32 {
    u32::try_from(micros).unwrap_or(u32::MAX)
}

/// `count / seconds`, or 0 when no time passed.
pub fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        v.reverse();
        let l = Latency::of(&mut v);
        assert_eq!(l.samples, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(&mut []).samples, 0);
        assert_eq!(Latency::of(&mut [7000]).p50_ms, 7.0);
    }
}

//! A mergeable duration histogram with log-scale buckets (four per power of
//! two, so a percentile read from it is within ±10 % of the true value), and
//! the summary (count, mean, p50/p95/p99, min, max) reported from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Buckets per doubling.
const STEPS: f64 = 4.0;

/// Counts of values (milliseconds) by log-scale bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    /// Bucket index → count. Bucket 0 holds 0; bucket `i > 0` holds
    /// `[2^((i-1)/4), 2^(i/4))`.
    pub buckets: BTreeMap<u16, u64>,
}

/// What a report says about a histogram.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub avg_ms: f64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub p99_ms: u64,
    pub min_ms: u64,
    pub max_ms: u64,
}

fn index(v: u64) -> u16 {
    if v == 0 {
        0
    } else {
        ((v as f64).log2() * STEPS).floor() as u16 + 1
    }
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.min = if self.count == 0 { v } else { self.min.min(v) };
        self.max = self.max.max(v);
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        *self.buckets.entry(index(v)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        self.min = if self.count == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        for (i, n) in &other.buckets {
            *self.buckets.entry(*i).or_default() += n;
        }
    }

    /// The value at quantile `q` (0..=1): the geometric middle of the bucket
    /// holding it, kept within the observed min and max. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in &self.buckets {
            seen += n;
            if seen >= target {
                let mid = if *i == 0 {
                    0.0
                } else {
                    2f64.powf((f64::from(*i) - 0.5) / STEPS)
                };
                return (mid.round() as u64).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            avg_ms: (self.avg() * 10.0).round() / 10.0,
            p50_ms: self.quantile(0.5),
            p95_ms: self.quantile(0.95),
            p99_ms: self.quantile(0.99),
            min_ms: self.min,
            max_ms: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_ten_percent() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5_000f64), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.1, "q{q}: {got} vs {exact}");
        }
        assert_eq!((h.min, h.max, h.count), (1, 10_000, 10_000));
        assert_eq!(h.avg(), 5_000.5);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in [0u64, 3, 70, 900, 12_000] {
            a.record(v);
            all.record(v);
        }
        for v in [5u64, 5, 64_000] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        let mut empty = Histogram::default();
        empty.merge(&b);
        assert_eq!(empty, b);
    }

    #[test]
    fn a_single_value_is_reported_exactly() {
        let mut h = Histogram::default();
        h.record(1234);
        let s = h.summary();
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.min_ms, s.max_ms),
            (1234, 1234, 1234, 1234)
        );
        assert_eq!(Histogram::default().summary(), Summary::default());
    }
}

//! Small statistics for `weft-bench`: nearest-rank percentiles of millisecond
//! samples, throughput over a window of completions, in-flight counts, and
//! rounding for the JSON report.

use serde_json::{json, Value};

/// Nearest-rank percentiles of a sample of milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `values` (all zero for an empty sample).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Self::default();
        }
        let at = |q: f64| {
            let rank = (q * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Self {
            count: v.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }

    /// [`of`](Self::of) for integer milliseconds.
    pub fn of_ms(values: impl IntoIterator<Item = i64>) -> Self {
        Self::of(values.into_iter().map(|v| v as f64))
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50": round(self.p50, 2),
            "p90": round(self.p90, 2),
            "p99": round(self.p99, 2),
            "max": round(self.max, 2),
            "mean": round(self.mean, 2),
        })
    }
}

/// Throughput over the completions ranked `from + 1 ..= to` (1-based, in
/// completion order): `(to − from)` completions over the time from completion
/// number `from` to completion number `to`. `done_ms` must be sorted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Completions before the window (the window starts at the `from`-th completion's time).
    pub from: usize,
    /// The last completion of the window (1-based).
    pub to: usize,
    pub seconds: f64,
    pub per_s: f64,
}

impl Window {
    /// `None` if the window is empty or outside `done_ms`.
    pub fn of(done_ms: &[i64], from: usize, to: usize) -> Option<Self> {
        if from == 0 || to <= from || to > done_ms.len() {
            return None;
        }
        let ms = (done_ms[to - 1] - done_ms[from - 1]).max(1);
        let seconds = ms as f64 / 1000.0;
        Some(Self {
            from,
            to,
            seconds,
            per_s: (to - from) as f64 / seconds,
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "from": self.from,
            "to": self.to,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.per_s, 2),
        })
    }
}

/// The early and late windows of a closed-loop run of `n` workflows with
/// `in_flight` at a time, `n/10` completions each (in completion order):
/// - early: from completion `max(n/20, in_flight)` on (the first `in_flight`
///   start together and finish as a wave, the ramp-up);
/// - late: the last `n/10` before the drain (the last `in_flight` completions,
///   when no new workflow starts and the pipeline empties).
///
/// For 20,000 workflows and 500 in flight: 1,000–3,000 and 17,500–19,500. When
/// ramp-up and drain leave no room for both, the windows are `n/20 .. 3n/20`
/// and the last `n/10`.
pub fn flatness_windows(n: usize, in_flight: usize) -> ((usize, usize), (usize, usize)) {
    let tenth = n / 10;
    let start = (n / 20).max(1).max(in_flight);
    let end = n.saturating_sub(in_flight);
    if tenth > 0 && start + tenth <= end.saturating_sub(tenth) {
        ((start, start + tenth), (end - tenth, end))
    } else {
        (((n / 20).max(1), 3 * n / 20), (n - tenth, n))
    }
}

/// The mean and the peak number of intervals `[start, end)` open at once.
pub fn in_flight(intervals: &[(i64, i64)]) -> (f64, usize) {
    if intervals.is_empty() {
        return (0.0, 0);
    }
    let mut edges: Vec<(i64, i32)> = Vec::with_capacity(intervals.len() * 2);
    for &(s, e) in intervals {
        edges.push((s, 1));
        edges.push((e.max(s), -1));
    }
    // Ends before starts at the same instant.
    edges.sort_unstable();
    let (mut open, mut peak) = (0i64, 0i64);
    for (_, d) in &edges {
        open += i64::from(*d);
        peak = peak.max(open);
    }
    let first = intervals.iter().map(|i| i.0).min().unwrap_or(0);
    let last = intervals.iter().map(|i| i.1).max().unwrap_or(0);
    let busy: i64 = intervals.iter().map(|(s, e)| (e - s).max(0)).sum();
    let span = (last - first).max(1);
    (busy as f64 / span as f64, peak.max(0) as usize)
}

/// `x` rounded to `decimals` places.
pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of_ms(1..=100);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(p.count, 100);
        assert!((p.mean - 50.5).abs() < 1e-9);
        assert_eq!(Percentiles::of_ms([]).count, 0);
    }

    #[test]
    fn windows_of_twenty_thousand_are_the_issue_s() {
        assert_eq!(
            flatness_windows(20_000, 0),
            ((1_000, 3_000), (18_000, 20_000))
        );
        assert_eq!(
            flatness_windows(20_000, 500),
            ((1_000, 3_000), (17_500, 19_500))
        );
        assert_eq!(flatness_windows(3_000, 500), ((500, 800), (2_200, 2_500)));
        // No room for ramp-up and drain: the plain windows.
        assert_eq!(flatness_windows(400, 350), ((20, 60), (360, 400)));
    }

    #[test]
    fn window_rate_counts_completions_over_their_time() {
        // One completion every 10 ms.
        let done: Vec<i64> = (0..1000).map(|i| i * 10).collect();
        let w = Window::of(&done, 100, 300).unwrap();
        assert!((w.per_s - 100.0).abs() < 1e-6, "{w:?}");
        assert!(Window::of(&done, 0, 10).is_none());
        assert!(Window::of(&done, 10, 1001).is_none());
    }

    #[test]
    fn in_flight_mean_and_peak() {
        let (mean, peak) = in_flight(&[(0, 10), (0, 10), (5, 10)]);
        assert_eq!(peak, 3);
        assert!((mean - 2.5).abs() < 1e-9);
        // Back to back: never two at once.
        assert_eq!(in_flight(&[(0, 5), (5, 10)]).1, 1);
    }
}

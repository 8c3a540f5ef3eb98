//! Figures read from the orchestrators' `/metrics` before and after a run:
//! every histogram whose name mentions `batch` (its mean over the run: the
//! mean batch duration, and the mean batch size once the orchestrator exports
//! one), and the records the partition processors consumed per batch.

use serde_json::{json, Value};

use super::stats::round;
use crate::rebuild::{counter, PROCESSED_COUNTERS};

/// What the batches of a run looked like, from counter and histogram deltas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchFigures {
    /// `(histogram name, batches observed, mean value per batch)`.
    pub histograms: Vec<(String, f64, f64)>,
    /// Records the processors consumed (applied, stale, rejected, duplicate,
    /// orphan, dead-lettered) per batch of `weft_orchestrator_batch_duration_seconds`.
    pub records_per_batch: Option<f64>,
}

impl BatchFigures {
    pub fn to_json(&self) -> Value {
        json!({
            "histograms": self.histograms.iter().map(|(name, count, mean)| json!({
                "name": name, "batches": round(*count, 0), "mean": round(*mean, 6),
            })).collect::<Vec<_>>(),
            "records_per_batch": self.records_per_batch.map(|v| round(v, 2)),
        })
    }
}

/// Names of histogram families (`<name>_count` samples) whose name contains `batch`.
fn batch_families(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let name = l.split(['{', ' ']).next()?;
            let family = name.strip_suffix("_count")?;
            family.contains("batch").then(|| family.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The sum of the samples of `name` (any labels) in `text`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The batch figures between two readings of each orchestrator's `/metrics`
/// (`before[i]` and `after[i]` of the same orchestrator).
pub fn batch_figures(before: &[String], after: &[String]) -> BatchFigures {
    let mut families: Vec<String> = after.iter().flat_map(|t| batch_families(t)).collect();
    families.sort();
    families.dedup();
    let delta = |name: &str| -> f64 {
        after.iter().map(|t| sum(t, name)).sum::<f64>()
            - before.iter().map(|t| sum(t, name)).sum::<f64>()
    };
    let histograms: Vec<(String, f64, f64)> = families
        .iter()
        .filter_map(|f| {
            let count = delta(&format!("{f}_count"));
            (count > 0.0).then(|| (f.clone(), count, delta(&format!("{f}_sum")) / count))
        })
        .collect();
    let batches = delta("weft_orchestrator_batch_duration_seconds_count");
    let records: f64 = PROCESSED_COUNTERS
        .iter()
        .map(|c| {
            after.iter().map(|t| counter(t, c) as f64).sum::<f64>()
                - before.iter().map(|t| counter(t, c) as f64).sum::<f64>()
        })
        .sum();
    BatchFigures {
        histograms,
        records_per_batch: (batches > 0.0).then(|| records / batches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_over_the_run() {
        let before = "weft_orchestrator_batch_duration_seconds_sum 1\n\
            weft_orchestrator_batch_duration_seconds_count 10\n\
            weft_orchestrator_events_applied_total 30\n"
            .to_owned();
        let after = "# HELP x\n\
            weft_orchestrator_batch_duration_seconds_bucket{le=\"0.1\"} 5\n\
            weft_orchestrator_batch_duration_seconds_sum 3\n\
            weft_orchestrator_batch_duration_seconds_count 20\n\
            weft_orchestrator_batch_records_sum{partition=\"0\"} 40\n\
            weft_orchestrator_batch_records_count{partition=\"0\"} 10\n\
            weft_orchestrator_events_applied_total 60\n\
            weft_orchestrator_events_duplicate_total 10\n"
            .to_owned();
        let f = batch_figures(&[before], &[after]);
        assert_eq!(
            f.histograms,
            vec![
                ("weft_orchestrator_batch_duration_seconds".into(), 10.0, 0.2),
                ("weft_orchestrator_batch_records".into(), 10.0, 4.0),
            ]
        );
        assert_eq!(f.records_per_batch, Some(4.0));
    }
}

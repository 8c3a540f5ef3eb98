//! Resource usage of a task attempt as the worker measured it, carried in the
//! metadata of the attempt's result event (`task.completed` / `task.failed`):
//! `weft.usage.<name>` = a whole number (`cpu_ms`, `wall_ms`, `peak_rss_kb`),
//! `weft.usage.scope` = what the CPU and memory figures cover (`child`: the
//! handler's own child process; `process`: the whole worker process while the
//! attempt ran), and `weft.metric.<name>` = a number the handler reported.
//! Metadata rather than new schema fields, so older orchestrators and workers
//! read these records unchanged (ADR 0023).

use std::collections::BTreeMap;

/// Metadata prefix of a resource figure (a whole number).
pub const USAGE_PREFIX: &str = "weft.usage.";
/// Metadata key of what the CPU and memory figures cover.
pub const USAGE_SCOPE: &str = "weft.usage.scope";
/// Metadata prefix of a handler metric (a number).
pub const METRIC_PREFIX: &str = "weft.metric.";

/// CPU time (user + system) in ms.
pub const CPU_MS: &str = "cpu_ms";
/// Wall-clock time of the handler in ms.
pub const WALL_MS: &str = "wall_ms";
/// Peak resident memory in KiB.
pub const PEAK_RSS_KB: &str = "peak_rss_kb";

/// `weft.usage.scope`: the figures are the handler's child process's (rusage of the child).
pub const SCOPE_CHILD: &str = "child";
/// `weft.usage.scope`: the figures are the worker process's (CPU used by the
/// whole process while the attempt ran; its peak memory so far).
pub const SCOPE_PROCESS: &str = "process";

/// The most metrics one result may carry; the rest are dropped.
pub const MAX_METRICS: usize = 32;

/// What one attempt used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// `cpu_ms`, `wall_ms`, `peak_rss_kb`, …
    pub resources: BTreeMap<String, i64>,
    /// Handler metrics.
    pub metrics: BTreeMap<String, f64>,
    /// [`SCOPE_CHILD`] or [`SCOPE_PROCESS`]; empty when unknown.
    pub scope: String,
}

impl Usage {
    /// Writes the usage into an event's metadata.
    pub fn write(&self, metadata: &mut BTreeMap<String, String>) {
        for (k, v) in &self.resources {
            metadata.insert(format!("{USAGE_PREFIX}{k}"), v.to_string());
        }
        if !self.scope.is_empty() {
            metadata.insert(USAGE_SCOPE.to_owned(), self.scope.clone());
        }
        for (k, v) in self.metrics.iter().take(MAX_METRICS) {
            if v.is_finite() {
                metadata.insert(format!("{METRIC_PREFIX}{k}"), v.to_string());
            }
        }
    }

    /// The usage an event's metadata carries (figures that do not parse are left out).
    pub fn read(metadata: &BTreeMap<String, String>) -> Self {
        let mut u = Usage::default();
        for (k, v) in metadata {
            if k == USAGE_SCOPE {
                u.scope.clone_from(v);
            } else if let Some(name) = k.strip_prefix(USAGE_PREFIX) {
                if let Ok(n) = v.parse::<i64>() {
                    u.resources.insert(name.to_owned(), n);
                }
            } else if let Some(name) = k.strip_prefix(METRIC_PREFIX) {
                if let Ok(x) = v.parse::<f64>() {
                    if x.is_finite() {
                        u.metrics.insert(name.to_owned(), x);
                    }
                }
            }
        }
        u
    }

    /// Whether nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.metrics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips_through_metadata_and_skips_junk() {
        let u = Usage {
            resources: BTreeMap::from([(CPU_MS.into(), 12), (PEAK_RSS_KB.into(), 2048)]),
            metrics: BTreeMap::from([("rows".into(), 3.5), ("nan".into(), f64::NAN)]),
            scope: SCOPE_CHILD.into(),
        };
        let mut meta = BTreeMap::from([("weft.task".to_owned(), "t".to_owned())]);
        u.write(&mut meta);
        assert_eq!(meta["weft.usage.cpu_ms"], "12");
        assert!(!meta.contains_key("weft.metric.nan"));
        meta.insert("weft.usage.bogus".into(), "x".into());
        let back = Usage::read(&meta);
        assert_eq!(back.resources, u.resources);
        assert_eq!(back.metrics, BTreeMap::from([("rows".into(), 3.5)]));
        assert_eq!(back.scope, "child");
        assert!(Usage::read(&BTreeMap::new()).is_empty());
    }
}

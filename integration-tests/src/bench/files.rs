//! `weft-bench`'s report files: the JSON written to
//! `<out>/weft-bench-<UTC time>.json` and `<out>/latest.json`, and the
//! comparison of a report with an earlier one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::report::{fmt, num};

/// Writes `report` to `<dir>/weft-bench-<stamp>.json` and `<dir>/latest.json`.
pub fn write(report: &Value, dir: &Path, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(report)?;
    let path = dir.join(format!("weft-bench-{stamp}.json"));
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(dir.join("latest.json"), &text)?;
    Ok(path)
}

/// The figures compared between two reports.
const COMPARED: &[&str] = &[
    "/sqlite/throughput/workflows_per_s",
    "/sqlite/throughput/early/per_s",
    "/sqlite/throughput/late/per_s",
    "/sqlite/throughput/late_to_early",
    "/sqlite/throughput/messages_per_s",
    "/sqlite/throughput/records_per_workflow",
    "/sqlite/throughput/messages_vs_raw_bulk",
    "/sqlite/throughput/latency_ms/p50",
    "/sqlite/raw_bulk/messages_per_s",
    "/sqlite/latency/client_ms/p50",
    "/sqlite/latency/client_ms/p99",
    "/sqlite/latency/server_ms/p50",
    "/sqlite/latency/hops",
    "/sqlite/broker_rtt_ms/p50",
    "/sqlite/chain/latency_ms/p50",
    "/sqlite/chain/throughput/per_s",
    "/sqlite/cost/orchestrator-0/cpu_s_per_1000_workflows",
    "/sqlite/cost/worker-0/cpu_s_per_1000_workflows",
    "/sqlite/cost/broker/cpu_s_per_1000_workflows",
    "/sqlite/cost/orchestrator-0/rss_mib",
    "/sqlite/cost/worker-0/rss_mib",
    "/sqlite/cost/broker/rss_mib",
    "/sqlite/batch/records_per_batch",
    "/memory/throughput/workflows_per_s",
    "/memory/throughput/late_to_early",
    "/memory/raw_bulk/messages_per_s",
    "/memory/cost/orchestrator-0/cpu_s_per_1000_workflows",
    "/memory/cost/worker-0/cpu_s_per_1000_workflows",
    "/memory/cost/broker/cpu_s_per_1000_workflows",
];

/// A table of the figures of `old` and `new` side by side, with the change.
pub fn compare(old: &Value, new: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n-- compared with {} ({}) --",
        old["timestamp"].as_str().unwrap_or("?"),
        old["settings"]["workflows"]
    );
    let _ = writeln!(
        s,
        "{:<56} {:>12} {:>12} {:>9}",
        "figure", "old", "new", "change"
    );
    for path in COMPARED {
        let (o, n) = (num(old, path), num(new, path));
        if o.is_none() && n.is_none() {
            continue;
        }
        let change = match (o, n) {
            (Some(o), Some(n)) if o != 0.0 => format!("{:+.1} %", (n / o - 1.0) * 100.0),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            s,
            "{:<56} {:>12} {:>12} {:>9}",
            path.trim_start_matches('/'),
            fmt(o, 2),
            fmt(n, 2),
            change
        );
    }
    s
}

/// `YYYYMMDDTHHMMSSZ` of a UNIX time (UTC).
pub fn utc_stamp(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_are_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_709_210_096), "20240229T123456Z");
    }

    #[test]
    fn compare_shows_the_change() {
        let old = json!({ "sqlite": { "throughput": { "workflows_per_s": 100.0 } } });
        let new = json!({ "sqlite": { "throughput": { "workflows_per_s": 150.0 } } });
        let text = compare(&old, &new);
        assert!(text.contains("+50.0 %"), "{text}");
        assert!(!text.contains("late_to_early"), "{text}");
    }
}

//! All text the CLI prints: progress lines while waiting, the final verdict
//! and history lines; [`instance`] has the instance summary (`weft get`),
//! [`list`] the `weft list` table and the `weft watch` lines, [`nodes`] the
//! `weft nodes` table. Pure functions of their inputs, so they are unit-tested
//! without a server.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::model::{InstanceView, TaskView};

pub mod insight;
mod instance;
mod list;
mod nodes;
pub use instance::instance_summary;
pub use list::{instance_table, watch_line};
pub use nodes::node_table;

/// Metadata key naming the task an event concerns.
pub const META_TASK: &str = "weft.task";
/// Metadata key carrying the task attempt an event concerns.
pub const META_ATTEMPT: &str = "weft.attempt";

/// `1.2s`, `2m05.3s`, `1h02m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let m = (secs / 60.0).floor();
        format!("{}m{:04.1}s", m as u64, secs - m * 60.0)
    } else {
        let s = d.as_secs();
        format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
    }
}

/// Epoch milliseconds as RFC 3339 UTC (`2024-05-01T12:00:00.123Z`).
pub fn fmt_timestamp(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => "-".into(),
    }
}

/// What changed between two polls of an instance, one line per change, each
/// prefixed with the time since waiting began: `[  1.2s] task reserve: running`.
/// `prev` is `None` for the first sighting, which reports the workflow state
/// and every task already past `pending`. A terminal workflow state is left to
/// [`final_line`].
pub fn progress_lines(
    prev: Option<&InstanceView>,
    cur: &InstanceView,
    elapsed: Duration,
) -> Vec<String> {
    let stamp = format!("[{:>5.1}s]", elapsed.as_secs_f64());
    let mut lines = Vec::new();
    for task in &cur.tasks {
        let changed = match prev.and_then(|p| p.task(&task.name)) {
            Some(old) => old.state != task.state || old.attempt != task.attempt,
            None => !task.state.is_empty() && task.state != "pending",
        };
        if changed {
            lines.push(format!("{stamp} {}", task_change(task)));
        }
    }
    let workflow_changed = prev.is_none_or(|p| p.state != cur.state);
    if workflow_changed && !cur.is_terminal() && !cur.state.is_empty() {
        lines.push(format!("{stamp} workflow: {}", cur.state));
    }
    lines
}

fn task_change(task: &TaskView) -> String {
    let mut line = format!("task {}: {}", task.name, task.state);
    if task.attempt > 1 {
        line.push_str(&format!(" (attempt {})", task.attempt));
    }
    if let Some(err) = &task.error {
        if matches!(task.state.as_str(), "failed" | "retrying" | "timeout") {
            line.push_str(&format!(": {err}"));
        }
    }
    line
}

/// The verdict once an instance is terminal: `workflow <id> completed in 2.4s`,
/// `workflow <id> failed after 2.4s: PaymentDeclined: card declined`.
pub fn final_line(instance_id: &str, cur: &InstanceView, took: Duration) -> String {
    let took = fmt_duration(took);
    if cur.state == "completed" {
        return format!("workflow {instance_id} completed in {took}");
    }
    let mut line = format!("workflow {instance_id} {} after {took}", cur.state);
    if let Some(err) = cur.effective_error() {
        line.push_str(&format!(": {err}"));
    }
    line
}

/// One line per event: sequence, time since the first listed event, type,
/// task (metadata `weft.task`) and attempt (`weft.attempt`), aligned:
/// `  7  +0.152s  task.completed  b  attempt=1`.
pub fn history_lines(events: &[Value]) -> Vec<String> {
    let base = events
        .iter()
        .find_map(|e| e.get("timestamp_ms").and_then(Value::as_i64));
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let seq = e
                .get("sequence_number")
                .and_then(Value::as_u64)
                .map(|s| s.to_string());
            let offset = match (base, e.get("timestamp_ms").and_then(Value::as_i64)) {
                (Some(b), Some(t)) => fmt_offset(t - b),
                _ => "?".into(),
            };
            let meta = e.get("metadata");
            let task = meta
                .and_then(|m| m.get(META_TASK))
                .map(scalar)
                .unwrap_or_default();
            let attempt = meta
                .and_then(|m| m.get(META_ATTEMPT))
                .map(|a| format!("attempt={}", scalar(a)))
                .unwrap_or_default();
            vec![
                seq.unwrap_or_else(|| "?".into()),
                offset,
                e.get("event_type")
                    .map(scalar)
                    .unwrap_or_else(|| "?".into()),
                task,
                attempt,
            ]
        })
        .collect();
    // Sequence numbers and offsets right-aligned, the rest left-aligned.
    columns(&rows, &[(0, 3), (1, 0)])
}

/// `+0.152s` / `-0.004s` (producers' clocks may disagree slightly).
pub(crate) fn fmt_offset(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}s", ms / 1000, ms % 1000)
}

/// A JSON scalar as plain text (strings without quotes).
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Lay out rows as columns separated by two spaces; `right` lists the
/// right-aligned columns with a minimum width. Empty trailing cells vanish.
pub(crate) fn columns(rows: &[Vec<String>], right: &[(usize, usize)]) -> Vec<String> {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            let min = right.iter().find(|(i, _)| *i == c).map_or(0, |(_, w)| *w);
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(min)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if right.iter().any(|(i, _)| *i == c) {
                        format!("{cell:>w$}", w = widths[c])
                    } else {
                        format!("{cell:<w$}", w = widths[c])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ErrorView;
    use serde_json::json;

    /// A task view for the render tests (also `instance.rs`'s).
    pub(crate) fn task(name: &str, state: &str, attempt: u32) -> TaskView {
        TaskView {
            name: name.into(),
            state: state.into(),
            attempt,
            ..TaskView::default()
        }
    }

    /// An instance view for the render tests (also `instance.rs`'s).
    pub(crate) fn instance(state: &str, tasks: Vec<TaskView>) -> InstanceView {
        InstanceView {
            instance_id: "i1".into(),
            workflow_type: "demo".into(),
            definition_version: Some(2),
            state: state.into(),
            tasks,
            ..InstanceView::default()
        }
    }

    #[test]
    fn first_sighting_reports_workflow_and_started_tasks() {
        let cur = instance(
            "running",
            vec![task("reserve", "running", 1), task("charge", "pending", 0)],
        );
        assert_eq!(
            progress_lines(None, &cur, Duration::from_millis(1210)),
            vec![
                "[  1.2s] task reserve: running",
                "[  1.2s] workflow: running"
            ]
        );
    }

    #[test]
    fn later_polls_report_only_changes() {
        let prev = instance(
            "running",
            vec![task("reserve", "running", 1), task("charge", "pending", 0)],
        );
        let same = prev.clone();
        assert!(progress_lines(Some(&prev), &same, Duration::from_secs(1)).is_empty());

        let cur = instance(
            "running",
            vec![
                task("reserve", "completed", 1),
                task("charge", "scheduled", 1),
            ],
        );
        assert_eq!(
            progress_lines(Some(&prev), &cur, Duration::from_millis(2000)),
            vec![
                "[  2.0s] task reserve: completed",
                "[  2.0s] task charge: scheduled"
            ]
        );
    }

    #[test]
    fn retries_show_attempt_and_error() {
        let prev = instance("running", vec![task("charge", "running", 1)]);
        let mut failed = task("charge", "retrying", 1);
        failed.error = Some(ErrorView {
            error_type: Some("Timeout".into()),
            message: Some("gateway slow".into()),
        });
        let cur = instance("retrying", vec![failed]);
        assert_eq!(
            progress_lines(Some(&prev), &cur, Duration::from_millis(3050)),
            vec![
                "[  3.0s] task charge: retrying: Timeout: gateway slow",
                "[  3.0s] workflow: retrying"
            ]
        );
        let next = instance("running", vec![task("charge", "running", 2)]);
        assert_eq!(
            progress_lines(Some(&cur), &next, Duration::from_millis(12_340)),
            vec![
                "[ 12.3s] task charge: running (attempt 2)",
                "[ 12.3s] workflow: running"
            ]
        );
    }

    #[test]
    fn terminal_workflow_state_is_left_to_the_final_line() {
        let prev = instance("running", vec![task("charge", "running", 1)]);
        let cur = instance("completed", vec![task("charge", "completed", 1)]);
        assert_eq!(
            progress_lines(Some(&prev), &cur, Duration::from_millis(2400)),
            vec!["[  2.4s] task charge: completed"]
        );
        assert_eq!(
            final_line("i1", &cur, Duration::from_millis(2400)),
            "workflow i1 completed in 2.4s"
        );
    }

    #[test]
    fn final_line_for_failures_carries_the_error() {
        let mut t = task("charge", "failed", 3);
        t.error = Some(ErrorView {
            error_type: Some("PaymentDeclined".into()),
            message: Some("card declined".into()),
        });
        let cur = instance("failed", vec![t]);
        assert_eq!(
            final_line("i1", &cur, Duration::from_millis(65_270)),
            "workflow i1 failed after 1m05.3s: PaymentDeclined: card declined"
        );
        let mut cur = instance("cancelled", vec![]);
        assert_eq!(
            final_line("i1", &cur, Duration::from_millis(500)),
            "workflow i1 cancelled after 0.5s"
        );
        cur.error = Some(ErrorView {
            error_type: None,
            message: Some("by operator".into()),
        });
        assert_eq!(
            final_line("i1", &cur, Duration::from_millis(500)),
            "workflow i1 cancelled after 0.5s: by operator"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(0)), "0.0s");
        assert_eq!(fmt_duration(Duration::from_millis(59_940)), "59.9s");
        assert_eq!(fmt_duration(Duration::from_millis(125_300)), "2m05.3s");
        assert_eq!(fmt_duration(Duration::from_secs(3725)), "1h02m05s");
        assert_eq!(fmt_timestamp(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(fmt_timestamp(0), "-");
    }

    #[test]
    fn history_lines_are_aligned() {
        let events = vec![
            json!({"sequence_number": 1, "event_type": "workflow.created", "timestamp_ms": 1000,
                   "data": {}, "metadata": {}}),
            json!({"sequence_number": 6, "event_type": "task.started", "timestamp_ms": 1100,
                   "metadata": {"weft.task": "b", "weft.attempt": "1"}}),
            json!({"sequence_number": 7, "event_type": "task.completed", "timestamp_ms": 1152,
                   "metadata": {"weft.task": "b", "weft.attempt": "1", "weft.source_kind": "input"}}),
            json!({"sequence_number": 12, "event_type": "workflow.completed", "timestamp_ms": 13_200,
                   "metadata": {}}),
        ];
        assert_eq!(
            history_lines(&events),
            vec![
                "  1   +0.000s  workflow.created",
                "  6   +0.100s  task.started        b  attempt=1",
                "  7   +0.152s  task.completed      b  attempt=1",
                " 12  +12.200s  workflow.completed",
            ]
        );
    }

    #[test]
    fn history_line_matches_the_documented_example() {
        let events = vec![
            json!({"sequence_number": 6, "event_type": "task.completed", "timestamp_ms": 5000,
                   "metadata": {"weft.task": "a", "weft.attempt": 2}}),
            json!({"sequence_number": 7, "event_type": "task.completed", "timestamp_ms": 5152,
                   "metadata": {"weft.task": "b", "weft.attempt": "1"}}),
        ];
        let lines = history_lines(&events);
        assert_eq!(lines[0], "  6  +0.000s  task.completed  a  attempt=2");
        assert_eq!(lines[1], "  7  +0.152s  task.completed  b  attempt=1");
    }

    #[test]
    fn history_tolerates_missing_fields_and_clock_skew() {
        let events = vec![
            json!({"sequence_number": 3, "event_type": "task.failed", "timestamp_ms": 2000}),
            json!({"event_type": "task.started", "timestamp_ms": 1996, "metadata": {"weft.task": "c"}}),
        ];
        assert_eq!(
            history_lines(&events),
            vec!["  3  +0.000s  task.failed", "  ?  -0.004s  task.started  c"]
        );
        assert!(history_lines(&[]).is_empty());
    }
}

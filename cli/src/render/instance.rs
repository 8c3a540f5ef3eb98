//! The readable form of one instance (`weft get`, `weft state`): its identity,
//! state and times, then a task table. When a worker reported what a task's
//! last ended attempt used, the table shows its CPU time, wall time, peak
//! memory and where they were measured (`child`: the task's own process;
//! `process`: the worker process, see ADR 0023); tasks that saved checkpoints
//! get a line with the count and the last one, tasks that reported metrics a
//! line with them.

use std::time::Duration;

use serde_json::Value;

use super::insight::fmt_ms;
use super::{columns, fmt_duration, fmt_timestamp, scalar};
use crate::model::{InstanceView, TaskView};

/// A checkpoint longer than this (as compact JSON) is cut, ending in `...`.
const CHECKPOINT_CHARS: usize = 100;

/// `812 KiB`, `3.1 MiB`, `1.2 GiB`.
pub fn fmt_kb(kb: u64) -> String {
    const MIB: f64 = 1024.0;
    if kb < 1024 {
        format!("{kb} KiB")
    } else if (kb as f64) < MIB * 1024.0 {
        format!("{:.1} MiB", kb as f64 / MIB)
    } else {
        format!("{:.1} GiB", kb as f64 / (MIB * 1024.0))
    }
}

/// The readable form of `weft get`.
pub fn instance_summary(i: &InstanceView) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("instance", i.instance_id.clone()),
        (
            "workflow",
            match i.definition_version {
                Some(v) => format!("{} version {v}", i.workflow_type),
                None => i.workflow_type.clone(),
            },
        ),
        ("state", i.state.clone()),
        ("sequence", i.sequence_number.to_string()),
    ];
    if let Some(c) = i.created_at_ms {
        rows.push(("created", fmt_timestamp(c)));
    }
    if let Some(u) = i.updated_at_ms {
        let mut s = fmt_timestamp(u);
        if let Some(d) = i.server_duration_ms() {
            s.push_str(&format!(" (+{})", fmt_duration(Duration::from_millis(d))));
        }
        rows.push(("updated", s));
    }
    if let Some(e) = &i.error {
        rows.push(("error", e.to_string()));
    }
    let mut out: String = rows.iter().map(|(k, v)| format!("{k:<9} {v}\n")).collect();
    if i.tasks.is_empty() {
        out.push_str("tasks     none\n");
        return out;
    }
    out.push_str("tasks:\n");
    for line in task_table(&i.tasks) {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    section(&mut out, "checkpoints:", &i.tasks, checkpoint_cell);
    section(&mut out, "metrics:", &i.tasks, metrics_cell);
    out
}

/// NAME, STATE, ATTEMPT, then (if any task has them) CPU, WALL, PEAK MEM and
/// MEASURED, then ERROR.
fn task_table(tasks: &[TaskView]) -> Vec<String> {
    let usage = tasks
        .iter()
        .any(|t| t.resource_usage.as_object().is_some_and(|m| !m.is_empty()));
    let mut header = vec!["NAME", "STATE", "ATTEMPT"];
    if usage {
        header.extend(["CPU", "WALL", "PEAK MEM", "MEASURED"]);
    }
    header.push("ERROR");
    let table: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(tasks.iter().map(|t| {
            let mut row = vec![t.name.clone(), t.state.clone(), t.attempt.to_string()];
            if usage {
                let ms = |k: &str| {
                    t.usage(k)
                        .map_or("-".into(), |v| fmt_ms(v.max(0).unsigned_abs()))
                };
                row.extend([
                    ms("cpu_ms"),
                    ms("wall_ms"),
                    t.usage("peak_rss_kb")
                        .map_or("-".into(), |v| fmt_kb(v.max(0).unsigned_abs())),
                    t.usage_scope
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            row.push(
                t.error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
            row
        }))
        .collect();
    columns(&table, &[])
}

/// Appends `title` and one aligned `  task  text` line per task `cell` has
/// text for; nothing when it has none.
fn section(
    out: &mut String,
    title: &str,
    tasks: &[TaskView],
    cell: fn(&TaskView) -> Option<String>,
) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .filter_map(|t| Some(vec![t.name.clone(), cell(t)?]))
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str(title);
    out.push('\n');
    for line in columns(&rows, &[]) {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
}

/// `5 saved, last {"next_step":5}`.
fn checkpoint_cell(t: &TaskView) -> Option<String> {
    if t.checkpoints == 0 && t.checkpoint.as_ref().is_none_or(Value::is_null) {
        return None;
    }
    let last = match &t.checkpoint {
        Some(v) if !v.is_null() => {
            let text = v.to_string();
            if text.chars().count() > CHECKPOINT_CHARS {
                let cut: String = text.chars().take(CHECKPOINT_CHARS - 3).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
        _ => "-".into(),
    };
    Some(format!("{} saved, last {last}", t.checkpoints))
}

/// `rows=12, ratio=0.5`.
fn metrics_cell(t: &TaskView) -> Option<String> {
    let m = t.metrics.as_object().filter(|m| !m.is_empty())?;
    Some(
        m.iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ErrorView;
    use crate::render::tests::{instance, task};

    #[test]
    fn summary_lists_tasks() {
        let mut i = instance(
            "failed",
            vec![task("reserve", "completed", 1), task("charge", "failed", 3)],
        );
        i.sequence_number = 7;
        i.created_at_ms = Some(1_714_564_800_000);
        i.updated_at_ms = Some(1_714_564_802_400);
        i.tasks[1].error = Some(ErrorView {
            error_type: Some("PaymentDeclined".into()),
            message: Some("card declined".into()),
        });
        i.error = i.tasks[1].error.clone();
        assert_eq!(
            instance_summary(&i),
            "instance  i1\n\
             workflow  demo version 2\n\
             state     failed\n\
             sequence  7\n\
             created   2024-05-01T12:00:00.000Z\n\
             updated   2024-05-01T12:00:02.400Z (+2.4s)\n\
             error     PaymentDeclined: card declined\n\
             tasks:\n\
             \x20 NAME     STATE      ATTEMPT  ERROR\n\
             \x20 reserve  completed  1\n\
             \x20 charge   failed     3        PaymentDeclined: card declined\n"
        );
        assert!(instance_summary(&instance("running", vec![])).ends_with("tasks     none\n"));
    }

    #[test]
    fn summary_shows_usage_checkpoints_and_metrics() {
        let mut work = task("work", "completed", 2);
        work.resource_usage = json!({"cpu_ms": 3, "wall_ms": 1240, "peak_rss_kb": 9420});
        work.usage_scope = Some("process".into());
        work.checkpoint = Some(json!({"next_step": 5}));
        work.checkpoints = 5;
        work.metrics = json!({"rows": 12.0});
        let mut burn = task("burn", "completed", 1);
        burn.resource_usage = json!({"cpu_ms": 412, "wall_ms": 430, "peak_rss_kb": 812});
        burn.usage_scope = Some("child".into());
        let mut big = task("big", "running", 1);
        big.checkpoint = Some(json!({"blob": "x".repeat(200)}));
        big.checkpoints = 1;
        let text = instance_summary(&instance("running", vec![work, burn, big]));
        let tail: Vec<&str> = text.lines().skip_while(|l| *l != "tasks:").collect();
        assert_eq!(
            tail[..8],
            [
                "tasks:",
                "  NAME  STATE      ATTEMPT  CPU    WALL   PEAK MEM  MEASURED  ERROR",
                "  work  completed  2        3ms    1.2s   9.2 MiB   process",
                "  burn  completed  1        412ms  430ms  812 KiB   child",
                "  big   running    1        -      -      -         -",
                "checkpoints:",
                "  work  5 saved, last {\"next_step\":5}",
                "  big   1 saved, last {\"blob\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...",
            ]
        );
        assert_eq!(tail[8..], ["metrics:", "  work  rows=12.0"]);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(fmt_kb(812), "812 KiB");
        assert_eq!(fmt_kb(3172), "3.1 MiB");
        assert_eq!(fmt_kb(2 * 1024 * 1024 + 300 * 1024), "2.3 GiB");
    }
}

//! Text for `weft trace` (a waterfall of spans: offset from the workflow's
//! start, duration, the span indented under its parent, its status) and
//! `weft analytics` (counts and rates, duration percentiles, a task table,
//! the tasks' measured CPU, wall time and peak memory, the bottleneck and
//! insights). Both read the API's JSON leniently.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::instance::fmt_kb;
use super::{columns, fmt_duration};

/// `850ms`, `1.2s`, `2m05.3s`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        fmt_duration(Duration::from_millis(ms))
    }
}

/// One line per span of a `format=spans` trace, children under parents in
/// start order.
pub fn waterfall(trace: &Value) -> Vec<String> {
    let spans: Vec<&Value> = trace["spans"].as_array().into_iter().flatten().collect();
    let Some(root) = spans.first() else {
        return vec!["(no spans)".into()];
    };
    let t0 = root["start_ms"].as_i64().unwrap_or_default();
    let mut children: HashMap<&str, Vec<&Value>> = HashMap::new();
    for s in &spans[1..] {
        let parent = s["parent_span_id"].as_str().unwrap_or_default();
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s["start_ms"].as_i64().unwrap_or_default());
    }
    let mut lines = vec![format!(
        "trace {}  ({} spans)",
        trace["trace_id"].as_str().unwrap_or("?"),
        spans.len()
    )];
    let parent = &trace["parent"];
    if let Some(span) = parent["span_id"].as_str() {
        let text = |k: &str| parent[k].as_str().unwrap_or("?");
        lines.push(format!(
            "child of {} {}, task {} (span {span})",
            text("workflow_type"),
            text("instance_id"),
            text("task")
        ));
    }
    let mut stack = vec![(*root, 0usize)];
    while let Some((span, depth)) = stack.pop() {
        lines.push(span_line(span, t0, depth));
        let id = span["span_id"].as_str().unwrap_or_default();
        if let Some(kids) = children.get(id) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    lines
}

fn span_line(s: &Value, t0: i64, depth: usize) -> String {
    let start = s["start_ms"].as_i64().unwrap_or_default();
    let offset = fmt_ms((start - t0).max(0) as u64);
    let took = match s["end_ms"].as_i64() {
        Some(end) => fmt_ms((end - start).max(0) as u64),
        None => "open".into(),
    };
    let attrs = &s["attributes"];
    let mut name = s["name"].as_str().unwrap_or("?").to_owned();
    if let Some(a) = attrs["task.attempt"].as_str() {
        name.push_str(&format!(" #{a}"));
    }
    let status = match s["status"]["code"].as_str() {
        Some("ok") => "ok".to_owned(),
        Some("error") => format!("error: {}", s["status"]["message"].as_str().unwrap_or("")),
        _ => attrs["task.outcome"].as_str().unwrap_or("").to_owned(),
    };
    let mut extra = String::new();
    if let Some(q) = attrs["task.queue_ms"].as_str().and_then(|q| q.parse().ok()) {
        extra.push_str(&format!("  queued {}", fmt_ms(q)));
    }
    if let Some(n) = attrs["task.node_id"].as_str() {
        extra.push_str(&format!("  on {n}"));
    }
    let status = if status.is_empty() {
        String::new()
    } else {
        format!("  {status}")
    };
    format!(
        "+{offset:>9} {took:>9}  {}{name}{status}{extra}",
        "  ".repeat(depth)
    )
}

fn summary(v: &Value) -> String {
    let ms = |k: &str| fmt_ms(v[k].as_u64().unwrap_or_default());
    format!(
        "n={} avg {} p50 {} p95 {} p99 {} max {}",
        v["count"].as_u64().unwrap_or_default(),
        fmt_ms(v["avg_ms"].as_f64().unwrap_or_default().round() as u64),
        ms("p50_ms"),
        ms("p95_ms"),
        ms("p99_ms"),
        ms("max_ms")
    )
}

fn counts(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k} {}", n.as_u64().unwrap_or_default()))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn pct(v: &Value) -> String {
    match v.as_f64() {
        Some(r) => format!("{:.1} %", r * 100.0),
        None => "-".into(),
    }
}

/// The lines of `weft analytics`.
pub fn report(r: &Value) -> Vec<String> {
    let mut lines = vec![
        format!(
            "{}: {} started, {} in flight, success rate {} (ended: {})",
            r["workflow_type"].as_str().unwrap_or("?"),
            r["started"].as_u64().unwrap_or_default(),
            r["in_flight"].as_u64().unwrap_or_default(),
            pct(&r["success_rate"]),
            counts(&r["finished"])
        ),
        format!("duration, completed: {}", summary(&r["completed_duration"])),
        format!("duration, all ended: {}", summary(&r["duration"])),
        format!("transitions: {}", counts(&r["transitions"])),
        format!(
            "{:<20} {:<10} {:>8} {:>8} {:>17} {:>17} {:>7}",
            "TASK", "TYPE", "ATTEMPTS", "FAILED", "QUEUE p50/p95", "RUN p50/p95", "SHARE"
        ),
    ];
    for t in r["tasks"].as_array().into_iter().flatten() {
        let pair = |v: &Value| {
            format!(
                "{}/{}",
                fmt_ms(v["p50_ms"].as_u64().unwrap_or_default()),
                fmt_ms(v["p95_ms"].as_u64().unwrap_or_default())
            )
        };
        lines.push(format!(
            "{:<20} {:<10} {:>8} {:>8} {:>17} {:>17} {:>7}",
            t["name"].as_str().unwrap_or("?"),
            t["task_type"].as_str().unwrap_or("-"),
            t["attempts"].as_u64().unwrap_or_default(),
            pct(&t["failure_rate"]),
            pair(&t["queue"]),
            pair(&t["run"]),
            pct(&t["time_share"])
        ));
    }
    lines.extend(usage_table(r));
    lines.push(format!(
        "bottleneck: {}",
        r["bottleneck"].as_str().unwrap_or("none")
    ));
    let insights: Vec<&Value> = r["insights"].as_array().into_iter().flatten().collect();
    if insights.is_empty() {
        lines.push("insights: none".into());
    } else {
        lines.push("insights:".into());
        for i in insights {
            lines.push(format!(
                "  - [{}] {}: {}",
                i["kind"].as_str().unwrap_or("?"),
                i["subject"].as_str().unwrap_or("?"),
                i["recommendation"].as_str().unwrap_or("")
            ));
        }
    }
    lines
}

/// What the workers measured, per task that reported any: attempts
/// measured, CPU time (mean, p50/p95), wall time (p50/p95) and the largest
/// peak memory; `usage: none reported` when no task did.
fn usage_table(r: &Value) -> Vec<String> {
    let pair = |v: &Value| {
        if v["count"].as_u64().unwrap_or_default() == 0 {
            return "-".to_owned();
        }
        format!(
            "{}/{}",
            fmt_ms(v["p50_ms"].as_u64().unwrap_or_default()),
            fmt_ms(v["p95_ms"].as_u64().unwrap_or_default())
        )
    };
    let mut rows = vec![[
        "TASK",
        "MEASURED",
        "CPU avg",
        "CPU p50/p95",
        "WALL p50/p95",
        "PEAK MEM",
    ]
    .map(String::from)
    .to_vec()];
    for t in r["tasks"].as_array().into_iter().flatten() {
        let (cpu, wall) = (&t["cpu"], &t["wall"]);
        let count = |v: &Value| v["count"].as_u64().unwrap_or_default();
        let peak = t["peak_rss_kb"].as_u64().unwrap_or_default();
        let measured = count(cpu).max(count(wall));
        if measured == 0 && peak == 0 {
            continue;
        }
        rows.push(vec![
            t["name"].as_str().unwrap_or("?").to_owned(),
            measured.to_string(),
            if count(cpu) == 0 {
                "-".to_owned()
            } else {
                fmt_ms(cpu["avg_ms"].as_f64().unwrap_or_default().round() as u64)
            },
            pair(cpu),
            pair(wall),
            if peak == 0 {
                "-".to_owned()
            } else {
                fmt_kb(peak)
            },
        ]);
    }
    if rows.len() == 1 {
        return vec!["usage: none reported".into()];
    }
    std::iter::once("usage, as the workers measured it:".to_owned())
        .chain(
            columns(&rows, &[(1, 0)])
                .into_iter()
                .map(|l| format!("  {l}")),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn waterfall_indents_children_under_parents_in_start_order() {
        let t = json!({"trace_id": "ab", "spans": [
            {"span_id": "r", "name": "workflow shop", "start_ms": 1000, "end_ms": 4000, "status": {"code": "ok"}, "attributes": {}},
            {"span_id": "g", "parent_span_id": "r", "name": "task g", "start_ms": 1500, "end_ms": 3000, "status": {"code": "ok"}, "attributes": {"task.attempt": "1"}},
            {"span_id": "m", "parent_span_id": "g", "name": "task m", "start_ms": 1600, "end_ms": null, "status": {"code": "unset"}, "attributes": {"task.attempt": "2", "task.queue_ms": "1200", "task.node_id": "w-1"}},
            {"span_id": "a", "parent_span_id": "r", "name": "task a", "start_ms": 1100, "end_ms": 1400, "status": {"code": "error", "message": "boom: it broke"}, "attributes": {"task.attempt": "1"}}
        ]});
        let lines = waterfall(&t);
        assert_eq!(lines[0], "trace ab  (4 spans)");
        assert_eq!(lines[1], "+      0ms      3.0s  workflow shop  ok");
        assert_eq!(
            lines[2],
            "+    100ms     300ms    task a #1  error: boom: it broke"
        );
        assert_eq!(lines[3], "+    500ms      1.5s    task g #1  ok");
        assert_eq!(
            lines[4],
            "+    600ms      open      task m #2  queued 1.2s  on w-1"
        );
        assert_eq!(waterfall(&json!({"spans": []})), vec!["(no spans)"]);
    }

    #[test]
    fn a_child_workflows_waterfall_names_its_parent() {
        let t = json!({"trace_id": "ab", "parent": {"trace_id": "ab", "span_id": "s1",
                "workflow_type": "mom", "instance_id": "m-1", "task": "spawn"},
            "spans": [{"span_id": "r", "parent_span_id": "s1", "name": "workflow kid",
                "start_ms": 0, "end_ms": 5, "status": {"code": "ok"}, "attributes": {}}]});
        let lines = waterfall(&t);
        assert_eq!(lines[1], "child of mom m-1, task spawn (span s1)");
        assert_eq!(lines[2], "+      0ms       5ms  workflow kid  ok");
    }

    #[test]
    fn report_shows_rates_tasks_bottleneck_and_insights() {
        let s = json!({"count": 2, "avg_ms": 1500.0, "p50_ms": 1400, "p95_ms": 1600, "p99_ms": 1600, "max_ms": 1600});
        let r = json!({
            "workflow_type": "shop", "started": 3, "in_flight": 1, "success_rate": 0.5,
            "finished": {"completed": 1, "failed": 1}, "duration": s, "completed_duration": s,
            "transitions": {}, "bottleneck": "charge",
            "tasks": [{"name": "charge", "task_type": "effect", "attempts": 4, "failure_rate": 0.25, "queue": s, "run": s, "time_share": 0.8}],
            "insights": [{"kind": "bottleneck", "subject": "shop/charge", "recommendation": "look here"}]
        });
        let lines = report(&r);
        assert_eq!(
            lines[0],
            "shop: 3 started, 1 in flight, success rate 50.0 % (ended: completed 1, failed 1)"
        );
        assert_eq!(
            lines[1],
            "duration, completed: n=2 avg 1.5s p50 1.4s p95 1.6s p99 1.6s max 1.6s"
        );
        assert_eq!(lines[3], "transitions: none");
        assert!(
            lines[5].starts_with("charge               effect            4   25.0 %"),
            "{}",
            lines[5]
        );
        assert!(lines[5].ends_with("80.0 %"), "{}", lines[5]);
        assert_eq!(lines[6], "usage: none reported");
        assert_eq!(lines[7], "bottleneck: charge");
        assert_eq!(lines[9], "  - [bottleneck] shop/charge: look here");
    }

    #[test]
    fn report_shows_measured_usage_per_task() {
        let none =
            json!({"count": 0, "avg_ms": 0.0, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0, "max_ms": 0});
        let cpu = json!({"count": 1, "avg_ms": 411.6, "p50_ms": 405, "p95_ms": 405, "p99_ms": 405, "max_ms": 405});
        let wall = json!({"count": 2, "avg_ms": 700.0, "p50_ms": 430, "p95_ms": 1240, "p99_ms": 1240, "max_ms": 1240});
        let once = json!({"count": 1, "avg_ms": 430.0, "p50_ms": 430, "p95_ms": 430, "p99_ms": 430, "max_ms": 430});
        let r = json!({"workflow_type": "ckpt", "tasks": [
            {"name": "work", "cpu": none, "wall": wall, "peak_rss_kb": 9420},
            {"name": "burn", "cpu": cpu, "wall": once, "peak_rss_kb": 812},
            {"name": "wait", "cpu": none, "wall": none, "peak_rss_kb": 0}
        ]});
        let lines = report(&r);
        let at = lines
            .iter()
            .position(|l| l == "usage, as the workers measured it:")
            .expect("a usage table");
        assert_eq!(
            lines[at + 1..at + 4],
            [
                "  TASK  MEASURED  CPU avg  CPU p50/p95  WALL p50/p95  PEAK MEM",
                "  work         2  -        -            430ms/1.2s    9.2 MiB",
                "  burn         1  412ms    405ms/405ms  430ms/430ms   812 KiB",
            ]
        );
        assert!(lines[at + 4].starts_with("bottleneck:"), "{lines:?}");
    }
}

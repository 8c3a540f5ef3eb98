//! Text for `weft list` (a table of instances) and `weft watch` (one line per
//! event as it arrives, so with fixed column widths instead of aligning a
//! whole table).

use serde_json::Value;

use super::{columns, fmt_offset, fmt_timestamp, scalar, META_ATTEMPT, META_TASK};

/// The `weft list` table: a header and one row per instance summary.
pub fn instance_table(items: &[Value]) -> Vec<String> {
    let text = |v: &Value, k: &str| v.get(k).map(scalar).unwrap_or_default();
    let time = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_i64)
            .map(fmt_timestamp)
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = std::iter::once(
        [
            "INSTANCE", "STATE", "VERSION", "EVENTS", "CREATED", "UPDATED",
        ]
        .map(String::from)
        .to_vec(),
    )
    .chain(items.iter().map(|i| {
        vec![
            text(i, "instance_id"),
            text(i, "state"),
            text(i, "definition_version"),
            text(i, "sequence_number"),
            time(i, "created_at_ms"),
            time(i, "updated_at_ms"),
        ]
    }))
    .collect();
    columns(&rows, &[])
}

/// One streamed event: `   7   +0.152s  task.completed        b  attempt=1`,
/// the offset counted from `base_ms` (the first event's time).
pub fn watch_line(event: &Value, base_ms: Option<i64>) -> String {
    let seq = event
        .get("sequence_number")
        .and_then(Value::as_u64)
        .map_or_else(|| "?".into(), |s| s.to_string());
    let offset = match (base_ms, event.get("timestamp_ms").and_then(Value::as_i64)) {
        (Some(b), Some(t)) => fmt_offset(t - b),
        _ => "?".into(),
    };
    let ty = event
        .get("event_type")
        .map(scalar)
        .unwrap_or_else(|| "?".into());
    let meta = event.get("metadata");
    let mut line = format!("{seq:>4}  {offset:>9}  {ty:<22}");
    if let Some(task) = meta.and_then(|m| m.get(META_TASK)) {
        line.push_str(&format!("  {}", scalar(task)));
    }
    if let Some(attempt) = meta.and_then(|m| m.get(META_ATTEMPT)) {
        line.push_str(&format!("  attempt={}", scalar(attempt)));
    }
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_of_instances() {
        let items = vec![
            json!({"instance_id": "a1", "state": "completed", "definition_version": 2, "sequence_number": 12,
                   "created_at_ms": 1_714_564_800_000i64, "updated_at_ms": 1_714_564_802_400i64}),
            json!({"instance_id": "b22", "state": "running", "definition_version": 2, "sequence_number": 3,
                   "created_at_ms": 1_714_564_801_000i64}),
        ];
        assert_eq!(
            instance_table(&items),
            vec![
                "INSTANCE  STATE      VERSION  EVENTS  CREATED                   UPDATED",
                "a1        completed  2        12      2024-05-01T12:00:00.000Z  2024-05-01T12:00:02.400Z",
                "b22       running    2        3       2024-05-01T12:00:01.000Z  -",
            ]
        );
    }

    #[test]
    fn watch_lines() {
        let e = json!({"sequence_number": 7, "event_type": "task.completed", "timestamp_ms": 1152,
                       "metadata": {"weft.task": "b", "weft.attempt": "1"}});
        assert_eq!(
            watch_line(&e, Some(1000)),
            "   7    +0.152s  task.completed          b  attempt=1"
        );
        let e = json!({"sequence_number": 12, "event_type": "workflow.completed", "timestamp_ms": 13_200});
        assert_eq!(
            watch_line(&e, Some(1000)),
            "  12   +12.200s  workflow.completed"
        );
        assert_eq!(watch_line(&json!({}), None), "   ?          ?  ?");
    }
}

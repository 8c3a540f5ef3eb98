//! Text for `weft nodes`: one row per node of the registry (`GET /v1/nodes`)
//! with its role, liveness, capabilities and labels, capacity, load and the
//! age of its last heartbeat. Labels Weft keeps for itself (`weft.*`, such as
//! the partitions a node holds) and `version` are left to `--output json`.

use serde_json::Value;

use super::{columns, scalar};

/// `k=v,k=v` of a JSON object's entries (`-` when empty).
fn pairs(v: &Value, keep: impl Fn(&str) -> bool) -> String {
    let items: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| format!("{k}={}", scalar(v)))
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// `0.4s ago`, `12s ago`, `3m ago`.
fn age(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s ago", ms.max(0) as f64 / 1000.0),
        Some(ms) if ms < 120_000 => format!("{}s ago", ms / 1000),
        Some(ms) => format!("{}m ago", ms / 60_000),
    }
}

/// The liveness: the status (`unhealthy` once silent), marked when silent.
fn health(n: &Value) -> String {
    let status = n.get("status").or_else(|| n.get("health"));
    let status = status.map(scalar).unwrap_or_else(|| "?".into());
    if n["silent"] == true || n["stale"] == true {
        format!("{status} (silent)")
    } else {
        status
    }
}

/// Capabilities, then the labels a task can select (`key=value`).
fn capabilities(n: &Value) -> String {
    let caps: Vec<String> = n["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(scalar)
        .collect();
    let labels = pairs(&n["labels"], |k| !k.starts_with("weft.") && k != "version");
    let mut all = caps.join(",");
    if labels != "-" {
        if !all.is_empty() {
            all.push(' ');
        }
        all.push_str(&format!("[{labels}]"));
    }
    if all.is_empty() {
        "-".into()
    } else {
        all
    }
}

/// The current load, with the share of its slots for a worker.
fn load(n: &Value) -> String {
    let entries = pairs(&n["current_load"], |_| true);
    match (n["role"].as_str(), n["load"].as_f64()) {
        (Some("worker"), Some(share)) if entries == "-" => format!("{:.0}%", share * 100.0),
        (Some("worker"), Some(share)) => format!("{entries} ({:.0}%)", share * 100.0),
        _ => entries,
    }
}

/// The `weft nodes` table: a header and one row per node.
pub fn node_table(nodes: &[Value]) -> Vec<String> {
    let header = [
        "NODE",
        "ROLE",
        "HEALTH",
        "CAPABILITIES",
        "CAPACITY",
        "LOAD",
        "HEARTBEAT",
    ];
    let rows: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
        .chain(nodes.iter().map(|n| {
            vec![
                n.get("node_id").map(scalar).unwrap_or_else(|| "?".into()),
                n.get("role").map(scalar).unwrap_or_else(|| "?".into()),
                health(n),
                capabilities(n),
                pairs(&n["capacity_limits"], |_| true),
                load(n),
                age(n["heartbeat_age_ms"].as_i64()),
            ]
        }))
        .collect();
    columns(&rows, &[])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn table_of_nodes() {
        let nodes = vec![
            json!({"node_id": "orch-1", "role": "orchestrator", "health": "healthy", "status": "healthy",
                   "silent": false, "capabilities": [], "capacity_limits": {},
                   "current_load": {"partitions": 4, "partitions_replaying": 0},
                   "labels": {"weft.api_url": "http://a", "version": "0.1.0"}, "heartbeat_age_ms": 1_234, "load": 0.0}),
            json!({"node_id": "w-gpu", "role": "worker", "health": "healthy", "status": "healthy",
                   "silent": false, "capabilities": ["render", "gpu"], "capacity_limits": {"cpu": 8, "slots": 4},
                   "current_load": {"in_flight": 1}, "labels": {"region": "eu", "weft.partition.x": "1"},
                   "heartbeat_age_ms": 45_000, "load": 0.25}),
            json!({"node_id": "w-old", "role": "worker", "health": "draining", "status": "unhealthy",
                   "silent": true, "capabilities": [], "capacity_limits": {"concurrency": 2},
                   "current_load": {}, "labels": {}, "heartbeat_age_ms": 300_000, "load": 0.0}),
        ];
        assert_eq!(
            node_table(&nodes),
            vec![
                "NODE    ROLE          HEALTH              CAPABILITIES            CAPACITY       LOAD                                 HEARTBEAT",
                "orch-1  orchestrator  healthy             -                       -              partitions=4,partitions_replaying=0  1.2s ago",
                "w-gpu   worker        healthy             render,gpu [region=eu]  cpu=8,slots=4  in_flight=1 (25%)                    45s ago",
                "w-old   worker        unhealthy (silent)  -                       concurrency=2  0%                                   5m ago",
            ]
        );
    }
}

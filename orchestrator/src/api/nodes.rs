//! `GET /v1/nodes`: the nodes of the cluster as the node registry
//! ([`WorkflowNodeRegistry`], the compacted `weft.nodes` topic read by this
//! replica's one follower) sees them — orchestrator replicas and workers, each
//! with its latest record (role, capabilities, labels such as the partitions
//! it holds, capacity, load, active tasks, reported health, start and
//! heartbeat times) and its liveness: `status` is the reported health while
//! the node is heard from, `unhealthy` once it is `silent` (`stale`, kept for
//! older clients); nodes silent for `gone_after_ms` are not listed. Without a
//! registry (the orchestrator adds it around the router) the list is empty.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::params::Params;
use super::{ApiError, AppState};
use crate::protocol::{Liveness, NodeView, WorkflowNodeRegistry};

pub async fn list(
    State(s): State<AppState>,
    registry: Option<Extension<Arc<dyn WorkflowNodeRegistry>>>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let (views, liveness) = match registry {
        Some(Extension(r)) => (r.nodes().await.map_err(ApiError::internal)?, r.liveness()),
        None => (Vec::new(), Liveness::default()),
    };
    let nodes = views.iter().map(node_json).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({
        "topic": s.topics.nodes(),
        "unhealthy_after_ms": liveness.unhealthy_after.as_millis() as u64,
        "gone_after_ms": liveness.gone_after.as_millis() as u64,
        "stale_after_ms": liveness.unhealthy_after.as_millis() as u64,
        "nodes": nodes,
    })))
}

/// The record's fields and the liveness of one node.
fn node_json(v: &NodeView) -> Result<Value, ApiError> {
    let mut n = serde_json::to_value(&v.record).map_err(ApiError::internal)?;
    n["status"] = json!(v.health);
    n["silent"] = json!(v.silent);
    n["stale"] = json!(v.silent);
    n["heartbeat_age_ms"] = json!(v.heartbeat_age_ms);
    n["load"] = json!(v.load());
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_shared::node::{HealthStatus, NodeRecord};

    use super::*;

    #[test]
    fn a_node_lists_its_record_and_liveness() {
        let record = NodeRecord {
            node_id: "w-1".into(),
            role: "worker".into(),
            capabilities: vec!["gpu".into()],
            capacity_limits: BTreeMap::from([("slots".into(), 4)]),
            current_load: BTreeMap::from([("in_flight".into(), 1)]),
            active_tasks: vec!["t".into()],
            health: HealthStatus::Healthy,
            labels: BTreeMap::from([("region".into(), "eu".into())]),
            started_at_ms: 1_000,
            heartbeat_at_ms: 2_000,
        };
        let l = Liveness::default();
        let v = NodeView::of(record, &l, 20_000).expect("not gone");
        let n = node_json(&v).unwrap();
        assert_eq!(n["node_id"], "w-1");
        assert_eq!(n["capabilities"], json!(["gpu"]));
        assert_eq!(n["capacity_limits"], json!({"slots": 4}));
        assert_eq!(n["labels"], json!({"region": "eu"}));
        assert_eq!(n["health"], "healthy", "as reported");
        assert_eq!(
            (&n["status"], &n["silent"], &n["stale"]),
            (&json!("unhealthy"), &json!(true), &json!(true))
        );
        assert_eq!(
            (&n["heartbeat_age_ms"], &n["load"]),
            (&json!(18_000), &json!(0.25))
        );
    }
}

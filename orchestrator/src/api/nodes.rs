//! `GET /v1/nodes`: the nodes of the cluster as the node registry (the
//! compacted `weft.nodes` topic) tells them — orchestrator replicas and
//! workers, each with its latest record (role, health, labels such as the
//! partitions it holds, load, capabilities, start and heartbeat times) and
//! whether it has gone silent. Read from the registry this replica follows
//! for forwarding (see [`crate::replicas`]); without it the list is empty.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};
use weft_shared::event::now_ms;

use super::forward::Forwarder;
use super::params::Params;
use super::{ApiError, AppState};

/// A node not heard from for this long is listed as silent: three announcement
/// periods of a worker (every 5 s) and more than enough for a replica (every 2 s).
pub const SILENT_AFTER: Duration = Duration::from_secs(15);

pub async fn list(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let records = fw
        .map(|Extension(fw)| fw.replicas.records())
        .unwrap_or_default();
    let silent_before = now_ms() - SILENT_AFTER.as_millis() as i64;
    let nodes: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).map_err(ApiError::internal)?;
            v["stale"] = json!(r.heartbeat_at_ms < silent_before);
            Ok(v)
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(json!({
        "topic": s.topics.nodes(),
        "stale_after_ms": SILENT_AFTER.as_millis() as u64,
        "nodes": nodes,
    })))
}

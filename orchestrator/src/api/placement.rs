//! `GET /v1/definitions/{ty}/tasks/{task}/placement?preferred=<node>`: where
//! a task of the latest version of a type would run, as the node registry's
//! `assign_task_to_node` decides (ADR 0021): its lane topic, the live capable
//! workers (least loaded first), and the node assigned — the preferred one
//! when it is capable and healthy, else the least loaded capable one, or
//! `null` when none is (the task would wait and be reported unschedulable).
//! Dispatch itself goes to the lane, whose consumer group picks the worker
//! (ADR 0022): the answer is what an operator or a tool plans with.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use weft_shared::lanes::Requirements;

use super::params::Params;
use super::{catalog_with, ApiError, AppState};
use crate::protocol::WorkflowNodeRegistry;

pub async fn placement(
    State(s): State<AppState>,
    registry: Option<Extension<Arc<dyn WorkflowNodeRegistry>>>,
    Path((ty, task)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["preferred"])?;
    let catalog = catalog_with(&s, &ty)?;
    let def = catalog
        .latest(&ty)
        .ok_or_else(|| super::unknown_type(&ty))?;
    let config = def
        .task(&task)
        .ok_or_else(|| ApiError::not_found(format!("{ty}@{} has no task '{task}'", def.version)))?;
    let req = Requirements::of_task(config).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(Extension(registry)) = registry else {
        return Err(ApiError::unavailable(
            "this orchestrator has no node registry",
        ));
    };
    let preferred = params.one("preferred")?.filter(|p| !p.is_empty());
    let caps: Vec<String> = req.capabilities.iter().cloned().collect();
    let capable = registry
        .find_capable_nodes(&caps, &req.resources, &[])
        .await
        .map_err(ApiError::internal)?;
    let assigned = registry
        .assign_task_to_node(config, preferred)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "workflow_type": ty,
        "definition_version": def.version,
        "task": task,
        "lane": s.topics.lane(&ty, &req),
        "requirements": {
            "capabilities": req.capabilities,
            "resources": req.resources,
            "urgent": req.urgent,
        },
        "preferred": preferred,
        "capable": capable.iter().map(|n| n.record.node_id.clone()).collect::<Vec<_>>(),
        "assigned": assigned,
    })))
}

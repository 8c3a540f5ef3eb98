//! `GET /v1/workflows/{ty}/{id}/children`: the child workflows an instance
//! started (ADR 0019), of any type, on any partition or replica. The request
//! is served by the parent's owner (like any request under the instance, see
//! [`super::forward`]); the children are derived from the parent's state and
//! definition ([`children_of`]: one per dispatched attempt of a `workflow`
//! task, its id derived from the attempt), so no index is needed and a
//! rebuilt projection answers the same. Each child is read where it lives:
//! this replica's store when it owns the child's partition, else its owner
//! (a sub-request, see [`scatter::instance_at`]). An attempt whose worker
//! never sent the start has no child and is left out.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::{json, Value};
use weft_shared::event::now_ms;
use weft_shared::fsm::DefinitionLookup;
use weft_shared::observe::children::{children_of, ChildRef};

use super::applied::instance_or_wait;
use super::forward::Forwarder;
use super::params::{self, Params};
use super::{catalog_with, scatter, unknown_instance, views, ApiError, AppState};
use crate::status::scope;

/// `GET /v1/workflows/{ty}/{id}/children`.
pub async fn list(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    headers: HeaderMap,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let id = params::instance_id(&id)?;
    let catalog = catalog_with(&s, &ty)?;
    let parent = instance_or_wait(&s, fw.as_ref(), &ty, id)
        .await?
        .ok_or_else(|| unknown_instance(&ty, id))?;
    let refs = catalog
        .get(&ty, parent.definition_version)
        .map(|def| children_of(&parent, def))
        .unwrap_or_default();
    let mut children = Vec::new();
    for c in refs {
        let found = match child(&s, fw.as_ref().map(|e| e.0.as_ref()), &c, &headers).await? {
            Some(v) => v,
            None => continue,
        };
        children.push(json!({
            "workflow_type": c.workflow_type,
            "instance_id": c.instance_id,
            "state": found["state"],
            "definition_version": found["definition_version"],
            "created_at_ms": found["created_at_ms"],
            "parent_task": c.task,
            "parent_attempt": c.attempt,
        }));
    }
    Ok(Json(json!({
        "workflow_type": ty,
        "instance_id": id,
        "children": children,
    })))
}

/// The child's view, read from this replica's store when it owns the child's
/// partition (or keys do not decide partitions), else from its owner.
async fn child(
    s: &AppState,
    fw: Option<&Forwarder>,
    c: &ChildRef,
    headers: &HeaderMap,
) -> Result<Option<Value>, ApiError> {
    let local = |s: &AppState| -> Result<Option<Value>, ApiError> {
        let catalog = s.registry.catalog();
        Ok(s.store
            .instance(&c.workflow_type, c.instance_id)?
            .map(|st| views::instance(&st, catalog.get(&c.workflow_type, st.definition_version))))
    };
    let topic = s.topics.events(&c.workflow_type);
    let Some(fw) = fw else {
        return local(s);
    };
    let (Some(partitioner), Some(count)) = (fw.partitioner, fw.counts.get(&topic).await) else {
        return local(s);
    };
    let key = c.instance_id.to_string();
    let sc = scope(&topic, partitioner.partition(key.as_bytes(), count));
    if fw.status.owns(&sc).is_some() {
        return local(s);
    }
    let Some(owner) = fw.replicas.owner(&sc, now_ms(), &fw.node_id) else {
        return Err(ApiError::unavailable(format!(
            "no replica owns {sc} (the child {key}) right now; try again shortly"
        )));
    };
    scatter::instance_at(
        fw,
        (&owner.node_id, &owner.api_url),
        &c.workflow_type,
        &key,
        headers,
    )
    .await
}

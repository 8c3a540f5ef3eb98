//! Archival (ADR 0018): `POST /v1/admin/archive` asks every replica to remove
//! the ended instances of a type older than a date from its projection;
//! `GET /v1/archive/{ty}/{id}` reads an instance's history back from its
//! events topic (archived or not) and folds it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use weft_shared::avro::AvroRecord;
use weft_shared::fsm::{decide, DefinitionLookup};
use weft_shared::WorkflowEvent;

use super::forward::Forwarder;
use super::params::{self, Params};
use super::{catalog_with, views, ApiError, AppState};
use crate::archive::Archiver;

fn archiver(a: Option<Extension<Arc<Archiver>>>) -> Result<Arc<Archiver>, ApiError> {
    a.map(|Extension(a)| a)
        .ok_or_else(|| ApiError::unavailable("archiving is not running on this replica"))
}

/// `POST /v1/admin/archive` with `{"workflow_type", "ended_before", "dry_run"}`.
pub async fn archive(
    State(s): State<AppState>,
    a: Option<Extension<Arc<Archiver>>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let fields = params::json_object(&body, Some(&["workflow_type", "ended_before", "dry_run"]))?;
    let ty = params::string_field(&fields, "workflow_type", 100)?
        .ok_or_else(|| ApiError::bad_request("body field 'workflow_type' is required"))?;
    catalog_with(&s, &ty)?;
    let before = match fields.get("ended_before") {
        Some(Value::String(t)) => params::timestamp_ms("ended_before", t)?,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("body field 'ended_before' is no epoch ms"))?,
        _ => {
            return Err(ApiError::bad_request(
                "body field 'ended_before' is required (RFC 3339 or epoch ms)",
            ))
        }
    };
    if before > weft_shared::event::now_ms() {
        return Err(ApiError::bad_request(
            "body field 'ended_before' is in the future: only instances that have ended can be archived",
        ));
    }
    let dry_run = match fields.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "body field 'dry_run' must be a boolean",
            ))
        }
    };
    let a = archiver(a)?;
    if dry_run {
        let ids = a
            .covered(&ty, before, 1000)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(Json(json!({
            "workflow_type": ty, "ended_before_ms": before, "dry_run": true,
            "covered_here": ids.len(), "sample": ids.iter().take(20).collect::<Vec<_>>(),
        })));
    }
    let removed = a
        .request(&ty, before)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::info!(workflow_type = %ty, ended_before_ms = before, removed_here = removed, "archive requested");
    Ok(Json(json!({
        "workflow_type": ty, "ended_before_ms": before, "dry_run": false, "archived_here": removed,
    })))
}

/// `GET /v1/archive/{ty}/{id}`: the instance's history read from its events
/// topic (not the projection), and the state it folds to.
pub async fn history(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let id = params::instance_id(&id)?;
    let catalog = catalog_with(&s, &ty)?;
    let topic = s.topics.events(&ty);
    let partition = match &fw {
        Some(Extension(fw)) => match (fw.partitioner, fw.counts.get(&topic).await) {
            (Some(p), Some(n)) => Some(p.partition(id.to_string().as_bytes(), n)),
            _ => None,
        },
        None => None,
    };
    let records = crate::dlq::read::read_topic_async(s.registry.kafka(), &topic, partition)
        .await
        .map_err(ApiError::from)?;
    // Decide the instance's inputs again in log order, as a rebuild does:
    // the history is what the decider appends (derived records are skipped,
    // they are decided again; an input key seen before is a duplicate).
    let key = id.to_string();
    let (mut state, mut events, mut seen) = (None, Vec::new(), std::collections::HashSet::new());
    for r in records
        .iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
    {
        let Some(e) = r
            .value
            .as_deref()
            .and_then(|v| WorkflowEvent::decode(v).ok())
        else {
            continue;
        };
        if e.instance_id != id || e.is_decision() || !seen.insert(e.idempotency_key.clone()) {
            continue;
        }
        let d = decide(state.as_ref(), &catalog.lookup_for(&e), &e);
        events.extend(d.appended);
        if d.state.is_some() {
            state = d.state;
        }
    }
    if events.is_empty() {
        return Err(ApiError::not_found(format!(
            "{ty}: no history of {id} in {topic}"
        )));
    }
    let state = state.map(|st| views::instance(&st, catalog.get(&ty, st.definition_version)));
    Ok(Json(json!({
        "workflow_type": ty,
        "instance_id": id,
        "source": topic,
        "state": state,
        "events": events.iter().map(views::event).collect::<Vec<_>>(),
    })))
}

//! `GET /v1/definitions`: every registered workflow type with its versions
//! (number, registration time, task count, description), for the web console
//! and anyone who wants to know what this cluster runs. Read from the catalog
//! every replica follows, so any replica answers the same.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use weft_shared::fsm::DefinitionLookup;

use super::params::Params;
use super::{ApiError, AppState};

pub async fn list(State(s): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let catalog = s.registry.catalog();
    let types: Vec<Value> = catalog
        .types()
        .filter_map(|ty| {
            let latest = catalog.latest(ty)?;
            // Versions are numbered 1, 2, … in registration order.
            let versions: Vec<Value> = (1..=latest.version)
                .filter_map(|v| catalog.get(ty, v))
                .map(|d| {
                    json!({
                        "version": d.version,
                        "registered_at_ms": d.registered_at_ms,
                        "tasks": d.tasks.len(),
                        "description": d.description,
                    })
                })
                .collect();
            Some(json!({
                "workflow_type": ty,
                "latest_version": latest.version,
                "description": latest.description,
                "versions": versions,
            }))
        })
        .collect();
    Ok(Json(json!({ "types": types })))
}

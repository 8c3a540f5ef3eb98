//! Workflow definitions: register one (YAML or JSON; the same content twice
//! returns the existing version) and read the latest or a given version.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use weft_shared::definition::{parse_definition, DefinitionFormat};
use weft_shared::fsm::DefinitionLookup;

use super::lifecycle::annotate;
use super::params::{truncate, Params};
use super::{unknown_type, ApiError, AppState};
use crate::definitions;

pub async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("definition body is not UTF-8 text"))?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if ct.contains("json") {
        Some(DefinitionFormat::Json)
    } else if ct.contains("yaml") {
        Some(DefinitionFormat::Yaml)
    } else {
        None
    };
    let def = parse_definition(text, format)
        .map_err(|e| ApiError::bad_request(format!("invalid definition: {e}")))?;
    let (def, created) = s.registry.register(def).await.map_err(|e| match e {
        definitions::Error::Invalid(_) | definitions::Error::ExactlyOnceUnsupported { .. } => {
            ApiError::bad_request(e.to_string())
        }
        other => ApiError::unavailable(other.to_string()),
    })?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({ "workflow_type": def.workflow_type, "version": def.version, "key": def.key(), "created": created });
    Ok((code, Json(body)).into_response())
}

pub async fn latest(
    State(s): State<AppState>,
    Path(ty): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["version"])?;
    if let Some(v) = params.int("version", 1, u64::from(u32::MAX))? {
        return version(State(s), Path((ty, v.to_string()))).await;
    }
    let catalog = s.registry.catalog();
    let def = catalog.latest(&ty).ok_or_else(|| unknown_type(&ty))?;
    let view = serde_json::to_value(def).map_err(ApiError::internal)?;
    Ok(Json(annotate(view, def, &s.registry.lifecycle())))
}

pub async fn version(
    State(s): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let version: u32 = version.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "path parameter 'version': '{}' is not a positive integer",
            truncate(&version)
        ))
    })?;
    let catalog = s.registry.catalog();
    let def = catalog
        .get(&ty, version)
        .ok_or_else(|| ApiError::not_found(format!("no definition {ty}@{version}")))?;
    let view = serde_json::to_value(def).map_err(ApiError::internal)?;
    Ok(Json(annotate(view, def, &s.registry.lifecycle())))
}
